"""Run ``ddbcdc`` commands one after the other in one process, each as its console script would.

    python tests/fault_driver.py < cases.json

Reads a JSON list of cases, ``{"argv": [...], "env": {...}, "stdout": PATH or null}``, and
runs each through :func:`ddbcdc.cli.main` with exactly that environment, standard input
from /dev/null and standard output and error redirected at the file-descriptor level (to
``stdout`` when given, /dev/full for instance), so that whatever writes to them, Python,
logging or a child process, is seen. An exception that escapes ``main`` is printed as the
interpreter prints it, with its traceback, and counts as exit status 1. Prints one JSON
line per case: ``{"status": ..., "stderr": ..., "seconds": ...}``.

One process for many cases keeps the import cost (boto3, SQLAlchemy, pydantic) to once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from typing import Any

from ddbcdc.cli import main


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Run one case; its exit status, what it wrote to stderr, how long it took."""
    os.environ.clear()
    os.environ.update(case["env"])
    for handler in logging.root.handlers[:]:  # main() configures logging afresh
        logging.root.removeHandler(handler)
    saved = {fd: os.dup(fd) for fd in (0, 1, 2)}
    with tempfile.TemporaryFile() as err, open(case.get("stdout") or os.devnull, "wb") as out:
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.close(stdin)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        started = time.monotonic()
        try:
            status = _run(case["argv"])
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError):  # a case's broken standard output
                    stream.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
        seconds = time.monotonic() - started
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    return {"status": status, "stderr": text, "seconds": round(seconds, 2)}


if __name__ == "__main__":
    for case in json.load(sys.stdin):
        print(json.dumps(run_case(case)), flush=True)
