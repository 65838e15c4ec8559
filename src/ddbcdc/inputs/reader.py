"""Detect a file's form from its content and read its records as SourceRecords.

Forms, told apart by the first bytes and the first record:

- **JSON Lines**: one record per line, raw JSON or base64 of it. When the first record is a
  change record (or base64), every line is passed on as it is, unparsed: the fast path of
  ``ddbcdc apply``. Otherwise each line is read for its kind (export lines, Kinesis
  records, Lambda events on one line each). A first line that starts an object but is not
  one (cut short, a control character), and ends where no document's opening line does,
  followed by a line that is one: JSON Lines whose first line is bad (dead-lettered).
- **JSON documents** (anything whose first line is not a whole JSON object): one
  pretty-printed record, a JSON array of records, a Lambda event (``{"Records": [...]}``,
  Kinesis or DynamoDB Streams), the output of ``aws kinesis get-records`` or ``aws
  dynamodbstreams get-records``, or several of these one after the other; read
  incrementally (:mod:`ddbcdc.inputs.documents`).
- gzip-compressed input (as DynamoDB exports are) is decompressed on the fly.

Each record comes with where it is (``line 12``, ``[3] (line 41)``, ``Records[0] (line 3)``)
for error messages, and the form's name is :attr:`InputReader.form`.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from typing import IO, Any, cast

import orjson

from ddbcdc.errors import InputError
from ddbcdc.inputs.documents import CHUNK, JsonText, documents
from ddbcdc.inputs.exports import ExportOptions
from ddbcdc.inputs.kinds import KIND_NAMES, RecordError, container_name, kind_of, to_source
from ddbcdc.pipeline import SourceRecord

__all__ = ["Batch", "InputReader", "Located"]

# A JSON Lines line longer than this is not looked for as one: the input is read as JSON
# documents instead, incrementally (a record is at most 400 KB of item, in base64 533 KB).
MAX_FIRST_LINE = 4 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_DAMAGED = (EOFError, zlib.error, gzip.BadGzipFile)  # what a broken gzip stream raises

#: (where, the record or why there is none for it); where is a line number or a position
Located = tuple[int | str, SourceRecord | InputError]
#: (records, where each is, the errors of those that cannot be read)
Batch = tuple[list[SourceRecord], list[int | str], list[InputError]]


class _Prefixed(io.RawIOBase):
    """``head`` then the rest of ``stream``, as one readable stream."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self._head = head
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            count = min(len(buffer), len(self._head))
            buffer[:count] = self._head[:count]
            self._head = self._head[count:]
            return count
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _object(line: bytes) -> dict[str, Any] | None:
    """``line`` parsed, when it is a JSON object."""
    if line[:1] != b"{":
        return None
    try:
        parsed = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


class InputReader:
    """The records of a binary stream, in whichever form it holds them.

    Args:
        stream: the input (a file opened in binary mode, stdin's buffer, ...).
        options: what export lines need (export time, key attributes) and the table name
            of records that name none.
        chunk: bytes read at a time from JSON documents.

    Attributes:
        form: the form detected, as error messages name it (known once the first record
            has been read; ``empty input`` when there is none).
        stopped: when the input could not be read to its end (broken JSON, a damaged gzip
            stream), the error saying where; the records before it were read. (A record
            whose bytes are not UTF-8 is passed on as it is, for decode to dead-letter.)
    """

    def __init__(
        self, stream: IO[bytes], *, options: ExportOptions | None = None, chunk: int = CHUNK
    ) -> None:
        self.options = options or ExportOptions()
        self.stopped: InputError | None = None
        self._chunk = chunk
        self.form = "input"
        self._head, self._first_line = b"", 0
        self._stream = self._open(stream)

    def _open(self, stream: IO[bytes]) -> IO[bytes]:
        """Read up to the first non-blank line; undo gzip."""
        line = stream.readline(MAX_FIRST_LINE)
        self._gzip = line[:2] == _GZIP_MAGIC
        head, number = b"", 0
        try:
            if self._gzip:
                raw = io.BufferedReader(_Prefixed(line, stream))
                stream = cast(IO[bytes], gzip.GzipFile(fileobj=raw))
                line = stream.readline(MAX_FIRST_LINE)
            head, number = line, 1
            while line and not line.strip():
                line = stream.readline(MAX_FIRST_LINE)
                head += line
                number += 1
        except _DAMAGED as exc:
            self._named("input")
            self._stop(exc, f"line {number + 1}")
            line = b""
        self._head, self._first, self._first_line = head, line, number
        return stream

    def _named(self, form: str) -> str:
        self.form = f"gzip-compressed {form}" if self._gzip else form
        return self.form

    def located(self) -> Iterator[Located]:
        """Every record with where it is, in order; a record that cannot be read is an
        :class:`~ddbcdc.errors.InputError` in its place (reading goes on). Where the input
        as a whole cannot be read further the records end and :attr:`stopped` says why.
        """
        start = self._start()
        return self._raw_lines(start) if isinstance(start, bytes) else start

    def batches(self, size: int) -> Iterator[Batch]:
        """The records in lists of ``size``, with their positions and the errors of those
        that cannot be read (as :meth:`located`, in fewer, cheaper objects)."""
        start = self._start()
        if isinstance(start, bytes):
            return self._raw_batches(start, size)
        return self._grouped(start, size)

    def __iter__(self) -> Iterator[SourceRecord | InputError]:
        return (record for _, record in self.located())

    def _start(self) -> bytes | Iterator[Located]:
        """The first line when the input is passed on line by line as it is, else the
        records of whichever other form it is."""
        first = self._first.strip().removeprefix(b"\xef\xbb\xbf")
        if not first:
            self._named("empty input")
            return iter(())
        if first[:2] in _UTF16_BOMS:  # as PowerShell's > writes: every line would be garbage
            message = "UTF-16 text (it starts with a byte order mark of UTF-16): ddbcdc reads UTF-8"
            self.stopped = InputError(message, form=self._named("input"), position="line 1")
            return iter(())
        if first[:1] == b"{" and len(self._first) < MAX_FIRST_LINE:
            parsed = _object(first)
            if parsed is None and first[-1:] not in b"[{,:":  # no document's opening line:
                parsed = self._second_line()  # a bad first line of JSON Lines?
            if parsed is not None:
                return self._json_lines(first, parsed)
        elif first[:1] not in b"{[":  # a longer first line than that is read as documents
            self._named("JSON Lines of change records (base64)")
            return first
        return self._documents()

    def _second_line(self) -> dict[str, Any] | None:
        """The next non-blank line as an object when it is one: then the input is JSON Lines
        whose first line is bad (read on from that line), else JSON documents (what was read
        is kept for them)."""
        read = b""
        try:
            line = self._stream.readline(MAX_FIRST_LINE)
            read += line
            while line and not line.strip():
                line = self._stream.readline(MAX_FIRST_LINE)
                read += line
        except _DAMAGED:
            line = b""  # the documents' reading stops there, naming it
        parsed = _object(line.strip()) if len(line) < MAX_FIRST_LINE else None
        if parsed is None:
            self._head += read
        else:
            self._stream = cast(IO[bytes], io.BufferedReader(_Prefixed(read, self._stream)))
        return parsed

    @staticmethod
    def _grouped(located: Iterator[Located], size: int) -> Iterator[Batch]:
        records: list[SourceRecord] = []
        positions: list[int | str] = []
        errors: list[InputError] = []
        for where, record in located:
            if isinstance(record, InputError):
                errors.append(record)
                continue
            records.append(record)
            positions.append(where)
            if len(records) == size:
                yield records, positions, errors
                records, positions, errors = [], [], []
        if records or errors:
            yield records, positions, errors

    # -- JSON Lines -------------------------------------------------------------------------

    def _json_lines(self, first: bytes, parsed: dict[str, Any]) -> bytes | Iterator[Located]:
        kind = kind_of(parsed)
        if kind == "change":
            self._named("JSON Lines of change records")
            return first
        records = parsed.get("Records")
        if type(records) is list:
            sample = records[0] if records else None
            name = container_name(kind_of(sample), sample)
            self._named(f"JSON Lines, each {'an' if name[0] in 'aeiou' else 'a'} {name}")
        else:
            self._named(f"JSON Lines of {KIND_NAMES[kind]}s" if kind else "JSON Lines")
        return self._parsed_lines(first)

    def _raw_lines(self, first: bytes) -> Iterator[Located]:
        """Every non-blank line as it is: the hot path, nothing parsed here."""
        number = self._first_line
        yield number, SourceRecord(data=first)
        try:
            for line in self._stream:
                number += 1
                data = line.strip()
                if data:
                    yield number, SourceRecord(data=data)
        except _DAMAGED as exc:
            self._stop(exc, f"line {number + 1}")

    def _raw_batches(self, first: bytes, size: int) -> Iterator[Batch]:
        """:meth:`_raw_lines` in batches: two flat lists, no tuple a record; a plain stream
        is split a chunk at a time (:meth:`_raw_chunks`)."""
        if self._gzip:
            yield from self._grouped(self._raw_lines(first), size)
            return
        records = [SourceRecord(data=first)]
        lines: list[int | str] = [self._first_line]
        if size == 1:  # before reading on: a pipe's next line may be a while coming
            yield records, lines, []
            records, lines = [], []
        for chunk_records, chunk_lines in self._raw_chunks(self._first_line):
            records += chunk_records
            lines += chunk_lines
            while len(records) >= size:
                yield records[:size], lines[:size], []
                del records[:size], lines[:size]
        if records:
            yield records, lines, []

    def _raw_chunks(self, number: int) -> Iterator[tuple[list[SourceRecord], list[int]]]:
        """The non-blank lines after line ``number`` of a plain stream, as they are, with
        their line numbers: a chunk read and split at a time."""
        read = getattr(self._stream, "read1", self._stream.read)
        new, rest = tuple.__new__, b""
        while chunk := read(self._chunk):
            parts = (rest + chunk if rest else chunk).split(b"\n")
            rest = parts.pop()
            yield self._split(parts, number, new)
            number += len(parts)
        if rest:
            yield self._split([rest], number, new)

    @staticmethod
    def _split(parts: list[bytes], number: int, new: Any) -> tuple[list[SourceRecord], list[int]]:
        data = [part.strip() for part in parts]
        if all(data):  # no blank line: the common case
            lines = list(range(number + 1, number + 1 + len(data)))
        else:
            lines = [number + 1 + i for i, line in enumerate(data) if line]
            data = [line for line in data if line]
        empty = (None, None, None, None)
        return [new(SourceRecord, (line, *empty)) for line in data], lines

    def _parsed_lines(self, first: bytes) -> Iterator[Located]:
        number = self._first_line
        yield from self._line(number, first)
        try:
            for line in self._stream:
                number += 1
                data = line.strip()
                if data:
                    yield from self._line(number, data)
        except _DAMAGED as exc:
            self._stop(exc, f"line {number + 1}")

    def _stop(self, exc: BaseException, position: str) -> None:
        message = f"the gzip stream is damaged ({exc})"
        self.stopped = InputError(message, form=self.form, position=position)

    def _line(self, number: int, data: bytes) -> Iterator[Located]:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            yield (
                number,
                InputError(f"not valid JSON ({exc})", form=self.form, position=f"line {number}"),
            )
            return
        records = parsed.get("Records") if type(parsed) is dict else None
        if type(records) is list:
            for index, record in enumerate(records):
                yield self._convert(record, None, f"line {number}, Records[{index}]")
        else:
            yield self._convert(parsed, None, number)

    def _convert(self, value: Any, raw: str | None, where: int | str) -> Located:
        try:
            return where, to_source(value, raw, self.options)
        except RecordError as exc:
            position = f"line {where}" if isinstance(where, int) else where
            return where, InputError(str(exc), form=self.form, position=position)

    # -- JSON documents ---------------------------------------------------------------------

    def _documents(self) -> Iterator[Located]:
        form = self._named("JSON document")
        text = JsonText(self._stream, self._head, form=form, chunk=self._chunk)
        named = False
        try:
            for value, raw, where in documents(text):
                if not named:
                    text.form = self._named(self._document_form(value, where))
                    named = True
                yield self._convert(value, raw, where)
        except InputError as exc:
            self.stopped = exc
        except _DAMAGED as exc:
            self._stop(exc, f"line {text.here()}")

    def _document_form(self, first: Any, where: str) -> str:
        kind = kind_of(first)
        name = KIND_NAMES.get(kind or "", "record")
        if where.startswith("Records["):
            return container_name(kind, first)
        if where.startswith("["):
            return f"JSON array of {name}s"
        return f"one {name} (JSON document)"
