"""The shard processor as a script of a checkout (benchmarks run a checkout's own this way).

The daemon runs the installed entry point, ``python -P -m ddbcdc.worker.entry``; this file is
the same hand-off. stdout carries the multilang protocol, so it must not print or import
anything that does.
"""

import sys

from ddbcdc.worker.entry import main

if __name__ == "__main__":
    sys.exit(main())
