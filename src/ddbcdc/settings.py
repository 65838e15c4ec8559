"""One typed settings object, built once at the edge (CLI, worker) and passed down.

Values come from the environment or a ``.env`` file. Every setting has a ``DDBCDC_`` name;
the names of the original example (``AWS_REGION``, ``AWS_ARN``, ``AWS_KINESIS_STREAM``) and
``DATABASE_URL`` are accepted too.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from ddbcdc.decode.timestamps import parse_timestamp

__all__ = ["DEFAULT_TOMBSTONE_HORIZON", "Settings", "read_version_us"]

#: How far behind the stream's position (in stream time) a change may still arrive: tombstones
#: older than that are pruned (``DDBCDC_TOMBSTONE_HORIZON``).
DEFAULT_TOMBSTONE_HORIZON = timedelta(days=8)


def read_version_us(read_us: int, margin_us: int) -> int:
    """The version of a row read from DynamoDB as of ``read_us`` (a snapshot page's request
    time, a full export's exportTime, a repair's re-read): that time minus the clock-skew
    margin (``DDBCDC_CLOCK_SKEW_MARGIN``, in microseconds). The clock the read is timed by
    and the one that stamps the stream's changes are different clocks: a change stamped up
    to the margin before ``read_us`` may have been made after the read, and must win over
    its row (docs/backfill-and-verify.md). Every such row gets its version here."""
    return read_us - margin_us


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


_EXAMPLE_URL = "postgresql+psycopg://user@127.0.0.1:5432/db"
#: The schemes of a PostgreSQL URL, all read with psycopg (3).
_POSTGRES_SCHEMES = frozenset({"postgresql+psycopg", "postgresql", "postgres"})
_REGION = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")


def _readable(url: str) -> str:
    """``url``, once SQLAlchemy reads it; else an error that never shows it (the password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from ddbcdc.errors import ConfigurationError

    try:
        make_url(url)
    except ArgumentError:
        problem = "not a URL"
    except ValueError:  # SQLAlchemy's int() of the port
        problem = "its port is not a number"
    else:
        return url
    raise ConfigurationError(f"DATABASE_URL: {problem} (e.g. {_EXAMPLE_URL})")


class Settings(BaseSettings):
    """Everything ddbcdc can be told from outside."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    database_url: SecretStr | None = Field(
        default=None, validation_alias=_env("DDBCDC_DATABASE_URL", "DATABASE_URL")
    )
    aws_region: str = Field(
        default="us-east-1",
        validation_alias=_env("DDBCDC_AWS_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    )
    stream_name: str | None = Field(
        default=None, validation_alias=_env("DDBCDC_STREAM_NAME", "AWS_KINESIS_STREAM")
    )
    stream_arn: str | None = Field(
        default=None, validation_alias=_env("DDBCDC_STREAM_ARN", "AWS_ARN")
    )
    source_table: str = Field(default="customers", validation_alias=_env("DDBCDC_SOURCE_TABLE"))
    #: What the worker reads: the table's Kinesis data stream (``kinesis``) or the table's
    #: DynamoDB stream (``dynamodb-streams``, found from the table unless DDBCDC_STREAM_ARN).
    source: Literal["kinesis", "dynamodb-streams"] = Field(
        default="kinesis", validation_alias=_env("DDBCDC_SOURCE")
    )
    application_name: str = Field(
        default="ddbcdc", validation_alias=_env("DDBCDC_APPLICATION_NAME")
    )
    initial_position: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] = Field(
        default="TRIM_HORIZON", validation_alias=_env("DDBCDC_INITIAL_POSITION")
    )
    initial_position_timestamp: datetime | None = Field(
        default=None, validation_alias=_env("DDBCDC_INITIAL_POSITION_TIMESTAMP")
    )
    retrieval_mode: Literal["FANOUT", "POLLING"] | None = Field(
        default=None, validation_alias=_env("DDBCDC_RETRIEVAL_MODE")
    )
    consumer_name: str | None = Field(default=None, validation_alias=_env("DDBCDC_CONSUMER_NAME"))
    consumer_arn: str | None = Field(default=None, validation_alias=_env("DDBCDC_CONSUMER_ARN"))
    account_id: str | None = Field(
        default=None,
        pattern=r"^\d{12}$",
        validation_alias=_env("DDBCDC_AWS_ACCOUNT_ID", "AWS_ACCOUNT_ID"),
    )
    kinesis_endpoint: str | None = Field(
        default=None, validation_alias=_env("DDBCDC_KINESIS_ENDPOINT")
    )
    dynamodb_endpoint: str | None = Field(
        default=None, validation_alias=_env("DDBCDC_DYNAMODB_ENDPOINT")
    )
    dynamodbstreams_endpoint: str | None = Field(
        default=None, validation_alias=_env("DDBCDC_DYNAMODBSTREAMS_ENDPOINT")
    )
    cloudwatch_endpoint: str | None = Field(
        default=None, validation_alias=_env("DDBCDC_CLOUDWATCH_ENDPOINT")
    )
    s3_endpoint: str | None = Field(default=None, validation_alias=_env("DDBCDC_S3_ENDPOINT"))
    max_records: int = Field(
        default=1000, ge=1, le=10000, validation_alias=_env("DDBCDC_MAX_RECORDS")
    )
    idle_time_between_reads_ms: int = Field(
        default=250, ge=0, validation_alias=_env("DDBCDC_IDLE_TIME_BETWEEN_READS_MS")
    )
    mappings_dir: Path = Field(
        default=Path("schemas/tables"), validation_alias=_env("DDBCDC_MAPPINGS_DIR")
    )
    tombstone_horizon: timedelta = Field(
        default=DEFAULT_TOMBSTONE_HORIZON, validation_alias=_env("DDBCDC_TOMBSTONE_HORIZON")
    )
    timestamp_unit: Literal["auto", "s", "ms", "us"] = Field(
        default="auto", validation_alias=_env("DDBCDC_TIMESTAMP_UNIT")
    )
    kcl_metrics_level: Literal["NONE", "SUMMARY", "DETAILED"] = Field(
        default="NONE", validation_alias=_env("DDBCDC_KCL_METRICS_LEVEL")
    )
    #: How far this machine's clock may be from AWS's: snapshot, export and repair rows get
    #: versions this much older than the time they were read at (see docs/backfill-and-verify.md).
    clock_skew_margin: timedelta = Field(
        default=timedelta(seconds=5),
        ge=timedelta(0),
        validation_alias=_env("DDBCDC_CLOCK_SKEW_MARGIN"),
    )
    #: Where downloaded jars and the compiled DynamoDB Streams launcher are kept (default:
    #: $XDG_CACHE_HOME/ddbcdc, else ~/.cache/ddbcdc).
    cache_dir: Path | None = Field(default=None, validation_alias=_env("DDBCDC_CACHE_DIR"))
    #: A copy of the DynamoDB Streams Kinesis Adapter jar to use instead of downloading it
    #: (checked against the same SHA-256).
    adapter_jar: Path | None = Field(default=None, validation_alias=_env("DDBCDC_ADAPTER_JAR"))
    metrics_host: str = Field(default="127.0.0.1", validation_alias=_env("DDBCDC_METRICS_HOST"))
    metrics_port: int = Field(default=9108, ge=0, validation_alias=_env("DDBCDC_METRICS_PORT"))
    log_level: str = Field(default="INFO", validation_alias=_env("DDBCDC_LOG_LEVEL"))
    failover_time_ms: int = Field(
        default=10_000, ge=1000, validation_alias=_env("DDBCDC_FAILOVER_TIME_MS")
    )
    shutdown_grace_ms: int = Field(
        default=20_000, ge=0, validation_alias=_env("DDBCDC_SHUTDOWN_GRACE_MS")
    )
    stall_after_s: float = Field(default=60.0, gt=0, validation_alias=_env("DDBCDC_STALL_AFTER_S"))

    def __init__(self, **values: Any) -> None:
        """Read the environment and ``.env``; a ``.env`` that is not UTF-8 text is a
        :class:`~ddbcdc.errors.ConfigurationError` naming where, never its bytes (a setting
        may hold a secret)."""
        try:
            super().__init__(**values)
        except UnicodeDecodeError as exc:
            from ddbcdc.errors import ConfigurationError

            env_file = values.get("_env_file", self.model_config.get("env_file"))
            raise ConfigurationError(
                f"settings: {env_file}: not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from exc

    @field_validator("aws_region")
    @classmethod
    def _region(cls, value: str) -> str:
        # What botocore takes for a region (a host name label): it goes into ARNs and URLs.
        if not _REGION.fullmatch(value):
            raise ValueError("not an AWS region name (letters, digits and '-': us-east-1)")
        return value

    @field_validator("initial_position", "retrieval_mode", "kcl_metrics_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, value: Any) -> Any:
        return value.strip().lower().replace("_", "-") if isinstance(value, str) else value

    @field_validator("initial_position_timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return parse_timestamp(value) if isinstance(value, str | int | datetime) else value

    @model_validator(mode="wrap")
    @classmethod
    def _named(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        """A setting that does not parse ends the command in one line naming each setting
        and what it must be, never its value (a setting may hold a secret)."""
        from ddbcdc.errors import ConfigurationError

        try:
            return handler(data)
        except ValidationError as exc:
            wrong = [
                f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
                for error in exc.errors(include_input=False, include_url=False)
            ]
            raise ConfigurationError("settings: " + "; ".join(wrong)) from exc

    def require_database_url(self) -> str:
        """The database URL, or a clear error when it is not set or names another database.

        ``postgresql://`` and ``postgres://`` (libpq's spellings) are read as
        ``postgresql+psycopg://``, the driver ddbcdc installs. A URL SQLAlchemy cannot read
        (a port that is no number) is refused here, without its text (it holds the password).
        """
        from ddbcdc.errors import ConfigurationError

        if self.database_url is None:
            raise ConfigurationError(f"DATABASE_URL is not set (e.g. {_EXAMPLE_URL})")
        url = self.database_url.get_secret_value()
        scheme, found, rest = url.partition("://")
        if not found or scheme.lower() not in _POSTGRES_SCHEMES:
            named = f"scheme {scheme.lower()!r}" if found else "no scheme"
            raise ConfigurationError(
                f"DATABASE_URL is not a PostgreSQL URL ({named}; e.g. {_EXAMPLE_URL})"
            )
        return _readable(f"postgresql+psycopg://{rest}")
