"""The exception tree of ddbcdc.

Every error ddbcdc raises on purpose derives from :class:`DdbcdcError`::

    DdbcdcError
    ├── PoisonRecordError        this record can never be applied: dead-letter it, go on
    │   ├── DecodeError          malformed change record (JSON, envelope, attribute value)
    │   └── CleanseError         decoded, but does not fit the table mapping
    ├── RefusedError             PostgreSQL refused a value of a transaction: find the
    │                            record and dead-letter it (db)
    ├── RetryableError           transient: back off, retry, never checkpoint past it
    │   └── DatabaseUnavailableError
    │       └── DatabaseTimeoutError  a statement or lock timeout of PostgreSQL ended it
    ├── ConfigurationError       bad settings or table mapping: refuse to start
    │   ├── MappingChangedError  a table was migrated to another mapping: stop writing
    │   ├── ExportError          an export that cannot be imported as it is (backfill.export)
    │   └── BelowFloorError      a backfill at or below the prune floor (backfill.state)
    ├── InputError               a file of change records is not what its form says
    ├── AwsApiError              an AWS JSON API answered an error, or nothing: the local
    │                            stack's own client (local.awsjson)
    └── AwsError                 a request of a ddbcdc AWS client failed, named by service,
        │                        operation, resource and endpoint (aws.errors)
        ├── AwsUnreachableError  no connection to the endpoint
        ├── AwsAccessDeniedError no usable credentials, or the policy does not allow it
        └── AwsNotFoundError     the table, stream, bucket or object does not exist

The classes defined outside this module are named with their module. Errors carry the
context needed to find the offending input (shard id, sequence number, table, attribute
path) and are raised ``from`` their cause; a command ends any of them in one line on stderr
(exit status 2). A test holds this drawing equal to the classes.
"""

from __future__ import annotations

__all__ = [
    "CleanseError",
    "ConfigurationError",
    "DatabaseTimeoutError",
    "DatabaseUnavailableError",
    "DdbcdcError",
    "DecodeError",
    "InputError",
    "MappingChangedError",
    "PoisonRecordError",
    "RetryableError",
]


class DdbcdcError(Exception):
    """Root of every error ddbcdc raises on purpose."""


class PoisonRecordError(DdbcdcError):
    """A record that can never be applied as it is.

    Attributes:
        path: where in the record the problem is (``dynamodb.NewImage.phone.N``), if known.
        shard_id: the Kinesis shard the record came from, if known.
        sequence_number: the record's sequence number in that shard, if known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        shard_id: str | None = None,
        sequence_number: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.shard_id = shard_id
        self.sequence_number = sequence_number

    def __str__(self) -> str:
        parts = [self.message]
        if self.path:
            parts.append(f"at {self.path}")
        if self.shard_id:
            parts.append(f"shard {self.shard_id}")
        if self.sequence_number:
            parts.append(f"sequence {self.sequence_number}")
        return ", ".join(parts)

    def with_position(
        self, *, shard_id: str | None, sequence_number: str | None
    ) -> PoisonRecordError:
        """Fill in the source position, keeping whatever is already known."""
        self.shard_id = self.shard_id or shard_id
        self.sequence_number = self.sequence_number or sequence_number
        return self


class DecodeError(PoisonRecordError):
    """The change record is malformed: bad JSON, envelope or attribute value."""


class CleanseError(PoisonRecordError):
    """The change record decoded but does not fit its table mapping.

    Attributes:
        column: the target column that refused the value, if one did.
        reason: what went wrong, naming types but never values (``S where numeric
            expected``): the same text for every record with the same problem.
        table: the PostgreSQL table the record was cleansed for, when it is not the
            mapping's own (a route's).
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        shard_id: str | None = None,
        sequence_number: str | None = None,
        column: str | None = None,
        reason: str | None = None,
        table: str | None = None,
    ) -> None:
        super().__init__(message, path=path, shard_id=shard_id, sequence_number=sequence_number)
        self.column = column
        self.reason = reason
        self.table = table


class RetryableError(DdbcdcError):
    """A transient failure: back off and try the same work again."""


class DatabaseUnavailableError(RetryableError):
    """PostgreSQL could not be reached or the transaction could not commit."""


class DatabaseTimeoutError(DatabaseUnavailableError):
    """PostgreSQL ended the transaction on one of its timeouts.

    Attributes:
        timeout: ``statement_timeout`` (SQLSTATE 57014: a statement ran longer than the
            role's or session's ``statement_timeout``, or was canceled) or ``lock_timeout``
            (55P03: a lock was not granted within ``lock_timeout``).
    """

    def __init__(self, message: str, *, timeout: str) -> None:
        super().__init__(message)
        self.timeout = timeout


class ConfigurationError(DdbcdcError):
    """Settings or a table mapping are invalid; raised at start-up."""


class MappingChangedError(ConfigurationError):
    """A table was migrated to another mapping than the writer's: nothing of the batch was
    written, and the writer must stop (restarted, it starts with the mapping file of the
    table's new version, or refuses to start)."""


class InputError(DdbcdcError):
    """A file given to ``ddbcdc apply`` or ``decode`` cannot be read as the form detected.

    Attributes:
        form: the input form detected (``JSON array of change records``, ...).
        position: where: ``line 12``, ``[3] (line 41)``, ``Records[0] (line 2)``.
    """

    def __init__(self, message: str, *, form: str, position: str) -> None:
        super().__init__(message)
        self.message = message
        self.form = form
        self.position = position

    def __str__(self) -> str:
        return f"{self.form}, {self.position}: {self.message}"
