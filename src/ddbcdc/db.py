"""What a PostgreSQL error means for a batch, by SQLSTATE, how to name it without values,
running a transaction by it (:func:`run_transaction`), and the one way an engine is made
(:func:`create_engine`).

Four verdicts (:func:`classify`):

- ``conflict``: two transactions collided (serialization failure, deadlock). Nothing is wrong
  with the data or the server: run the same batch again at once.
- ``timeout``: one of PostgreSQL's timeouts ended a statement, named (:data:`TIMEOUTS`):
  ``lock_timeout`` (55P03, a lock not granted in time: another transaction holds it) or
  ``statement_timeout`` (57014, a statement ran longer than allowed, or was canceled). A
  lock timeout runs the batch again at once, like a conflict, and is then raised named; a
  statement timeout is raised at once (the same statement would take as long again). Both
  raise :class:`~ddbcdc.errors.DatabaseTimeoutError`: retry with backoff, never checkpoint
  past the batch, and say which timeout it is.
- ``poison``: PostgreSQL refused a value (SQLSTATE classes 21 cardinality, 22 data, 23
  constraint, 54 program limit, P0 raised by a trigger) or the driver could not encode one.
  Some record of the batch is the cause: find it, dead-letter it, apply the rest.
- ``unavailable``: everything else (connection, server resources or shutdown, I/O, a missing
  table or privilege, an internal error). Not a record's fault: retry the batch with backoff,
  never checkpoint past it.

:func:`describe` names an error by its SQLSTATE, condition and the schema objects PostgreSQL
reports (table, column, constraint), never by its message: messages and details quote
values ("invalid input syntax for type bigint: ...", "Key (id)=(...)") and so item contents.
Only the classes that speak of the server, never of a statement's values (connection,
authorization, a missing database or relation, resources, shutdown), add their message.
:func:`fault` is the one line a command ends with when PostgreSQL fails it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import psycopg
import sqlalchemy as sa

from ddbcdc.backoff import Backoff
from ddbcdc.errors import DatabaseTimeoutError, DatabaseUnavailableError, DdbcdcError

__all__ = [
    "POISON_CLASSES",
    "TIMEOUTS",
    "RefusedError",
    "Verdict",
    "check_reachable",
    "classify",
    "create_engine",
    "describe",
    "describe_state",
    "driver_error",
    "fault",
    "is_database_error",
    "name_sessions",
    "run_transaction",
    "sqlstate",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Attempts at a transaction that keeps colliding with others before it counts as
#: "unavailable" (the worker then backs off and tries again).
CONFLICT_ATTEMPTS = 8
#: The waits between them: short, a collision is nobody's fault.
CONFLICT_BACKOFF = Backoff(initial=0.05, maximum=6.4)

Verdict = Literal["conflict", "timeout", "poison", "unavailable"]

_CONFLICT_STATES = frozenset({"40001", "40P01"})
#: PostgreSQL's timeouts by SQLSTATE, by the name of the setting that ends the statement.
TIMEOUTS = {"55P03": "lock_timeout", "57014": "statement_timeout"}
#: SQLSTATE classes whose messages name the server, roles, databases and objects, never the
#: values of a statement: connection, authorization, catalog, syntax or access rule,
#: resources, operator intervention, system.
_PLAIN_CLASSES = frozenset({"08", "28", "3D", "42", "53", "57", "58"})
#: SQLSTATE classes of "PostgreSQL refused a value": cardinality, data, constraint, program
#: limit, raised by a trigger.
POISON_CLASSES = frozenset({"21", "22", "23", "54", "P0"})
#: Raised while the driver encodes a parameter or COPY value (a lone surrogate, an int too
#: big for the wire format): the value's fault.
_ENCODE_ERRORS = (UnicodeEncodeError, OverflowError)

_REASONS = {
    "21000": "one statement would change a row twice (key values equal in PostgreSQL)",
    "22001": "a value is too long for its column",
    "22003": "a number is out of range for its column",
    "22021": "a character PostgreSQL cannot store (U+0000 or invalid UTF-8)",
    "22P05": "a character PostgreSQL cannot store in jsonb (U+0000)",
    "23502": "a required column is null",
    "23505": "a unique constraint is violated",
    "23514": "a check constraint is violated",
    "25006": "the database is read-only (a standby, or default_transaction_read_only on)",
    "42P01": "a table ddbcdc needs is missing (has ddbcdc migrate run on this database?)",
    "54000": "a value exceeds a PostgreSQL limit (an indexed key over ~2,700 bytes?)",
    "55P03": "a lock was not granted within lock_timeout",
    "57014": "a statement ran longer than statement_timeout, or was canceled",
}


def create_engine(
    url: str | sa.URL,
    *,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    pre_ping: bool = False,
    pooled: bool = True,
) -> sa.Engine:
    """An engine on ``url`` that never renders statement parameters into its errors.

    Every engine ddbcdc creates comes from here (a test holds the source to it): parameters
    are item values, and an error's text ends up in logs, dead letters and tracebacks.

    Args:
        url: a ``postgresql+psycopg://`` URL.
        pool_size: connections kept open (SQLAlchemy's default when None).
        max_overflow: connections opened beyond ``pool_size`` at peaks.
        pre_ping: test a pooled connection before handing it out (long-lived processes).
        pooled: False for a command that connects once or twice (no pool at all).
    """
    options: dict[str, Any] = {"hide_parameters": True}
    if not pooled:
        options["poolclass"] = sa.pool.NullPool
    if pool_size is not None:
        options["pool_size"] = pool_size
    if max_overflow is not None:
        options["max_overflow"] = max_overflow
    if pre_ping:
        options["pool_pre_ping"] = True
    return sa.create_engine(url, **options)


def name_sessions(engine: sa.Engine, name: str) -> None:
    """Give every connection ``engine`` opens from now on the ``application_name`` ``name``
    (what ``pg_stat_activity`` shows); connections already open are closed first."""

    def named(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
        params["application_name"] = name

    sa.event.listen(engine, "do_connect", named)
    engine.dispose()


def driver_error(exc: BaseException) -> BaseException:
    """The psycopg error inside a SQLAlchemy wrapper (or ``exc`` itself)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        return exc.orig
    return exc


def is_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` came from talking to PostgreSQL (not from a bug of the caller)."""
    return isinstance(
        driver_error(exc), (sa.exc.SQLAlchemyError, psycopg.Error, *_ENCODE_ERRORS)
    ) or isinstance(exc, sa.exc.SQLAlchemyError)


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, if it has one."""
    inner = driver_error(exc)
    state = getattr(inner, "sqlstate", None)
    return state if isinstance(state, str) else None


def classify(exc: BaseException) -> Verdict:
    """What ``exc``, raised while applying a batch, means for it (see the module doc)."""
    inner = driver_error(exc)
    state = sqlstate(inner)
    if state is None:
        if isinstance(inner, (*_ENCODE_ERRORS, psycopg.DataError)):
            return "poison"
        return "unavailable"
    if state in _CONFLICT_STATES:
        return "conflict"
    if state in TIMEOUTS:
        return "timeout"
    if state[:2] in POISON_CLASSES:
        return "poison"
    return "unavailable"


def _diag_fields(inner: BaseException) -> list[str]:
    diag: Any = getattr(inner, "diag", None)
    if diag is None:
        return []
    fields = []
    for label, attr in (
        ("table", "table_name"),
        ("column", "column_name"),
        ("constraint", "constraint_name"),
        ("type", "datatype_name"),
    ):
        value = getattr(diag, attr, None)
        if value:
            fields.append(f"{label} {value}")
    return fields


def describe(exc: BaseException) -> str:
    """A one-line description naming the error, never the values involved."""
    inner = driver_error(exc)
    state = sqlstate(inner)
    if state is None:
        plain = isinstance(inner, sa.exc.SQLAlchemyError) and not isinstance(
            inner, sa.exc.StatementError
        )
        if isinstance(inner, psycopg.OperationalError) or plain:
            # Connection failures say where and why (host, refused, timeout), and SQLAlchemy's
            # own errors (a bad URL, a pool timeout) carry no statement: no item data.
            lines = str(inner).strip().splitlines()
            return f"{type(inner).__name__}: {lines[0] if lines else 'connection failed'}"
        return f"{type(inner).__name__} while sending values to PostgreSQL"
    primary = getattr(getattr(inner, "diag", None), "message_primary", None)
    fields = _diag_fields(inner)
    return _described(state, type(inner).__name__, fields, str(primary) if primary else None)


def describe_state(
    state: str,
    table: str | None = None,
    column: str | None = None,
    constraint: str | None = None,
    datatype: str | None = None,
) -> str:
    """:func:`describe` of an error known by its SQLSTATE and the schema objects it names
    (as PostgreSQL reports them inside a function)."""
    try:
        name = psycopg.errors.lookup(state).__name__
    except KeyError:
        name = "DatabaseError"
    labels = ("table", "column", "constraint", "type")
    found = zip(labels, (table, column, constraint, datatype), strict=True)
    return _described(state, name, [f"{label} {value}" for label, value in found if value])


def _described(state: str, name: str, fields: list[str], primary: str | None = None) -> str:
    parts = [f"SQLSTATE {state} {name}"]
    reason = _REASONS.get(state)
    if reason:
        parts.append(reason)
    if primary and state[:2] in _PLAIN_CLASSES:
        parts.append(primary)
    return "; ".join(parts + fields)


def fault(exc: BaseException) -> str | None:
    """The one line naming ``exc`` when it came from PostgreSQL or SQLAlchemy (``PostgreSQL:
    ...``, see :func:`describe`), else None."""
    if not isinstance(driver_error(exc), (sa.exc.SQLAlchemyError, psycopg.Error)):
        return None
    return f"PostgreSQL: {describe(exc)}"


def check_reachable(url: str) -> None:
    """Connect to the PostgreSQL at ``url`` once: a command that would first spend time or
    money elsewhere (an export, the demo's stack) refuses at once when it cannot.

    Raises:
        DatabaseUnavailableError: it cannot be connected to (named by :func:`describe`).
    """
    engine = create_engine(url, pooled=False)
    try:
        with engine.connect():
            pass
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseUnavailableError(f"PostgreSQL: {describe(exc)}") from exc
    finally:
        engine.dispose()


class RefusedError(DdbcdcError):
    """PostgreSQL refused a value the transaction sent (the ``poison`` verdict): some record
    of the batch is the cause (the pipeline finds it and dead-letters it)."""


class _ConflictError(Exception):
    """The transaction collided with another one (or waited too long for its lock)."""

    def __init__(self, message: str, *, timeout: str | None = None) -> None:
        super().__init__(message)
        self.timeout = timeout


def _once(engine: sa.Engine, work: Callable[[sa.Connection], T]) -> T:
    try:
        with engine.begin() as conn:
            return work(conn)
    except Exception as exc:
        if not is_database_error(exc):
            raise  # a bug, not the database: unchanged
        verdict = classify(exc)
        if verdict == "conflict":
            raise _ConflictError(describe(exc)) from exc
        if verdict == "timeout":
            timeout = TIMEOUTS[sqlstate(exc) or ""]
            if timeout == "lock_timeout":
                raise _ConflictError(describe(exc), timeout=timeout) from exc
            raise DatabaseTimeoutError(
                f"PostgreSQL {timeout}: {describe(exc)}", timeout=timeout
            ) from exc
        if verdict == "poison":
            raise RefusedError(describe(exc)) from exc
        raise DatabaseUnavailableError(f"PostgreSQL: {describe(exc)}") from exc


def run_transaction(engine: sa.Engine, work: Callable[[sa.Connection], T]) -> T:
    """Run ``work`` in one transaction, again at once while it conflicts with others.

    Raises:
        RefusedError: PostgreSQL refused a value (nothing committed).
        DatabaseTimeoutError: a statement timeout, or lock timeouts that persist.
        DatabaseUnavailableError: any other database error, or conflicts that persist.
    """
    last = _ConflictError("no attempt ran")
    for attempt in range(CONFLICT_ATTEMPTS):
        try:
            return _once(engine, work)
        except _ConflictError as exc:
            last = exc
            if exc.timeout is not None:  # named by the caller when it persists
                log.info("%s, attempt %d: %s", exc.timeout, attempt, exc)
            else:
                log.info("transaction collided with another one (%s); attempt %d", exc, attempt)
            time.sleep(CONFLICT_BACKOFF.delay(attempt))
    if last.timeout is not None:
        raise DatabaseTimeoutError(
            f"PostgreSQL {last.timeout} in each of {CONFLICT_ATTEMPTS} attempts: {last}",
            timeout=last.timeout,
        )
    raise DatabaseUnavailableError(
        f"transaction still collides with others after {CONFLICT_ATTEMPTS} attempts ({last})"
    )
