"""ddbcdc: DynamoDB change data capture into a live PostgreSQL copy."""

from ddbcdc.decode.attributes import marshal, unmarshal
from ddbcdc.decode.itemjson import decode_attributes, encode_attributes
from ddbcdc.decode.record import ChangeRecord, decode_lambda_event, decode_record
from ddbcdc.errors import (
    CleanseError,
    ConfigurationError,
    DatabaseTimeoutError,
    DatabaseUnavailableError,
    DdbcdcError,
    DecodeError,
    InputError,
    MappingChangedError,
    PoisonRecordError,
    RetryableError,
)

__version__ = "0.1.0"

__all__ = [
    "ChangeRecord",
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
    "__version__",
    "decode_attributes",
    "decode_lambda_event",
    "decode_record",
    "encode_attributes",
    "marshal",
    "unmarshal",
]
