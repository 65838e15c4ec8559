"""Shard processor entry point: the KCL MultiLangDaemon runs this once per shard it holds.

Nothing here but the hand-off: stdout carries the multilang protocol, so this file must not
print or import anything that does.
"""

import sys

from ddbcdc.worker.entry import main

if __name__ == "__main__":
    sys.exit(main())
