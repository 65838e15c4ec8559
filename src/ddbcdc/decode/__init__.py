"""Decode: raw change records -> :class:`ChangeRecord`, every value exact. Pure: no I/O.

The first stage of the pipeline. Nothing here touches a database or logs a payload, and
nothing reads the environment but :mod:`ddbcdc.decode.accelerator` (``DDBCDC_SPEEDUPS``, once
at import: which decode path runs).

- :mod:`ddbcdc.decode.record`: the :class:`ChangeRecord` model, :func:`decode_record` (one
  Kinesis or DynamoDB Streams record) and :func:`decode_lambda_event`;
- :mod:`ddbcdc.decode.envelope`: the checks of a record's envelope (event name, keys,
  images, user identity, the TTL-delete flag);
- :mod:`ddbcdc.decode.attributes`: AttributeValues <-> Python values (``marshal``,
  ``unmarshal``: N exact, B bytes, sets as sets);
- :mod:`ddbcdc.decode.numbers`: DynamoDB numbers, exactly, within DynamoDB's limits;
- :mod:`ddbcdc.decode.timestamps`: ApproximateCreationDateTime in s, ms or us -> epoch
  microseconds;
- :mod:`ddbcdc.decode.itemjson`: the lossless JSON encoding of kept attributes (``jsonb``);
- :mod:`ddbcdc.decode.render`: decoded values as lossless JSON, for ``ddbcdc decode``;
- ``ddbcdc.decode._speedups``: the hot path in C, optional; the Python code above is the
  reference for every rule and message;
- :mod:`ddbcdc.decode.accelerator`: whether the C path is in use (``DDBCDC_SPEEDUPS``).
"""

from ddbcdc.decode.record import (
    ChangeRecord,
    EventName,
    TimestampUnit,
    decode_lambda_event,
    decode_record,
)

__all__ = ["ChangeRecord", "EventName", "TimestampUnit", "decode_lambda_event", "decode_record"]
