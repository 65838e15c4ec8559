"""The shard processor's process: what the KCL MultiLangDaemon starts once per shard it holds
(``python -P -m ddbcdc.worker.entry``, see :func:`ddbcdc.worker.daemon.processor_command`).

:func:`main` sets the process up for the multilang protocol (stdout is the protocol's alone:
``sys.stdout`` is pointed at stderr once the protocol has the real one; logs go to stderr),
builds the pipeline from the settings, waits out a database outage for the mapping check,
and runs a :class:`~ddbcdc.worker.processor.ShardProcessor` under kclpy's ``KCLProcess`` with
ddbcdc's faster line reader (:mod:`ddbcdc.worker.protocol`).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

from amazon_kclpy import kcl

from ddbcdc.backoff import Backoff
from ddbcdc.db import name_sessions
from ddbcdc.errors import DatabaseUnavailableError, DdbcdcError
from ddbcdc.logs import LineFormatter
from ddbcdc.materialize.shard_states import session_name
from ddbcdc.pipeline import Pipeline
from ddbcdc.runtime import tune_gc
from ddbcdc.worker import protocol
from ddbcdc.worker.failures import FailureNote
from ddbcdc.worker.liveness import ProgressTouch
from ddbcdc.worker.metrics import mark_process_dead
from ddbcdc.worker.processor import ShardProcessor

__all__ = ["configure_logging", "main"]

log = logging.getLogger(__name__)


def configure_logging(level: str = "INFO") -> None:
    """logfmt-style lines on stderr; never stdout, which carries the KCL protocol."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        LineFormatter(
            "ts=%(asctime)s.%(msecs)03d level=%(levelname)s pid=%(process)d logger=%(name)s "
            "%(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Alembic's INFO lines (its plugins set up, a migration context made when the schema's
    # revision is read at start) say nothing about a shard.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))


class _StopFlag:
    """Set by SIGTERM, or when the daemon that launched us has gone."""

    def __init__(self) -> None:
        self.parent = os.getppid()
        self.signalled = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = True

    def __call__(self) -> bool:
        return self.signalled or os.getppid() != self.parent


def _check_mappings(pipeline: Pipeline, stop: Callable[[], bool]) -> None:
    """The pipeline's mapping check, waited for while PostgreSQL is unavailable (a processor
    may start during an outage); a mapping that differs raises."""
    backoff = Backoff()
    attempt = 0
    while True:
        try:
            pipeline.check_mappings()
            return
        except DatabaseUnavailableError as exc:
            if stop():
                raise
            delay = backoff.delay(attempt)
            attempt += 1
            log.warning("mapping check failed, will retry delay_s=%.2f error=%s", delay, exc)
            time.sleep(delay)


def main() -> int:
    """Run one shard processor on stdin/stdout until the daemon closes stdin."""
    protocol_out = sys.stdout
    sys.stdout = sys.stderr  # a stray print() must not corrupt the protocol
    from ddbcdc.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level)
    stop = _StopFlag()
    # The daemon drives shutdown: a terminal's Ctrl-C reaches the whole process group and
    # must not interrupt a batch; SIGTERM only makes retry loops give up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop.on_signal)

    try:
        pipeline = Pipeline.from_settings(settings, check_mappings=False)
        _check_mappings(pipeline, stop)
    except DdbcdcError as exc:
        # The daemon stops when a processor fails to initialise: say why, once, clearly.
        log.error("shard processor cannot start: %s", exc)
        return 2
    tune_gc()
    processor = ShardProcessor(
        pipeline,
        application=settings.application_name,
        should_stop=stop,
        touch=ProgressTouch(pipeline.engine, settings.application_name),
        failures=FailureNote(pipeline.engine),
        started=lambda shard: name_sessions(
            pipeline.engine, session_name(settings.application_name, shard)
        ),
    )
    try:
        process = kcl.KCLProcess(
            processor, input_file=sys.stdin, output_file=protocol_out, error_file=sys.stderr
        )
        protocol.install(process).run()
    finally:
        pipeline.close()
        mark_process_dead(os.getpid())
    log.info("shard processor exiting shard=%s", processor.shard_id)
    return 0


if __name__ == "__main__":  # how the daemon runs it: python -P -m ddbcdc.worker.entry
    # Run this module under its own name, so its logger is ddbcdc.worker.entry, not __main__.
    from ddbcdc.worker import entry

    sys.exit(entry.main())
