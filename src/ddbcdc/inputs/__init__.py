"""Files of change records in every form a user has them, read as SourceRecords.

``ddbcdc decode`` and ``ddbcdc apply`` read through :class:`InputReader`, which detects the
form from the content (:mod:`ddbcdc.inputs.reader`), reads documents incrementally
(:mod:`ddbcdc.inputs.documents`), tells each record's kind
(:mod:`ddbcdc.inputs.kinds`) and turns DynamoDB export lines into change records
(:mod:`ddbcdc.inputs.exports`).
"""

from ddbcdc.inputs.exports import ExportOptions
from ddbcdc.inputs.reader import Batch, InputReader, Located

__all__ = ["Batch", "ExportOptions", "InputReader", "Located"]
