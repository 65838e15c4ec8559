"""JSON documents read incrementally: the records of arrays and ``Records`` containers, one at
a time, with flat memory however large the file.

A document is a top-level JSON value: an array of records, an object holding a ``Records``
array (a Lambda event, ``aws kinesis get-records`` or ``aws dynamodbstreams get-records``
output, whatever other members it has and in any order), or an object that is one record.
A file may hold several documents one after the other (``jq .`` output).

The text is read in chunks and decoded as UTF-8 incrementally (bytes that are not UTF-8 kept
as lone surrogates: a record holding them is passed on as it is, :func:`raw_bytes`); each
record is parsed with the standard library's C scanner (``json.JSONDecoder.raw_decode``)
straight from the buffer, which also gives its exact source text. Text before the current
record is dropped as the reading goes, so only one chunk and one record are held at a time.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from typing import IO, Any

from ddbcdc.errors import InputError

__all__ = ["Element", "JsonText", "documents", "raw_bytes"]

CHUNK = 1 << 20

#: (parsed value, its exact source text, where it is)
Element = tuple[Any, str, str]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_WHITESPACE = " \t\n\r\ufeff"


class JsonText:
    """A UTF-8 byte stream as text: read in chunks, consumed from the front.

    Args:
        stream: the bytes.
        head: bytes already read from ``stream`` that come first.
        form: named in errors until the reader knows better.
        chunk: bytes read at a time, and how much consumed text is kept before dropping it.
    """

    def __init__(
        self, stream: IO[bytes], head: bytes = b"", *, form: str = "JSON", chunk: int = CHUNK
    ) -> None:
        self._stream = stream
        self._chunk = chunk
        # Bytes that are not UTF-8 become lone surrogates: in a string, the record still
        # parses and its text encodes back to its exact bytes (see raw_bytes), which decode
        # rejects, so it is dead-lettered in its place; elsewhere they are not JSON.
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.form = form
        self.text = ""
        self.pos = 0
        self.eof = False
        self._line = 1  # the line number at text[_counted]
        self._counted = 0
        if head:
            self._append(head, final=False)

    def _append(self, data: bytes, *, final: bool) -> None:
        self.text += self._decoder.decode(data, final)

    def more(self) -> bool:
        """Read the next chunk; False at the end of the stream."""
        if self.eof:
            return False
        data = self._stream.read(self._chunk)
        if not data:
            self.eof = True
            self._append(b"", final=True)
            return False
        self._append(data, final=False)
        return True

    def compact(self) -> None:
        """Drop the text before ``pos`` once enough has been consumed."""
        if self.pos < self._chunk:
            return
        self.line_at(self.pos)
        self.text = self.text[self.pos :]
        self._counted -= self.pos
        self.pos = 0

    def line_at(self, index: int) -> int:
        """The 1-based line number of ``text[index]`` (indexes never go backwards)."""
        if index > self._counted:
            self._line += self.text.count("\n", self._counted, index)
            self._counted = index
        return self._line

    def error(self, message: str, line: int) -> InputError:
        """An error at ``line`` of this text's form."""
        return InputError(message, form=self.form, position=f"line {line}")

    def peek(self) -> str:
        """The next character after whitespace ("" at the end); ``pos`` moves to it."""
        while True:
            text, pos = self.text, self.pos
            while pos < len(text) and text[pos] in _WHITESPACE:
                pos += 1
            self.pos = pos
            if pos < len(text) or not self.more():
                return text[pos] if pos < len(text) else ""

    def take(self, expected: str, after: str) -> None:
        """Consume ``expected`` (after whitespace) or fail naming what it follows."""
        found = self.peek()
        if found != expected:
            shown = repr(found) if found else "the end of the input"
            raise self.error(f"expected {expected!r} after {after}, found {shown}", self.here())
        self.pos += 1

    def here(self) -> int:
        """The line number at ``pos``."""
        return self.line_at(self.pos)

    def value(self) -> tuple[Any, int, int]:
        """Parse the JSON value at ``pos``: (value, start, end); ``pos`` moves past it.

        A value the text read so far cuts short is parsed again with the next chunk: one that
        fails at the end of the text, or ends there (a number may go on in the next chunk).
        """
        start = self.pos
        while True:
            try:
                parsed, end = _DECODER.raw_decode(self.text, start)
                if end == len(self.text) and self.more():
                    continue
            except json.JSONDecodeError as exc:
                # near the end of the text (a \uXXXX escape cut in two fails a few characters
                # before it), or in a string that runs to the end
                cut = exc.msg.startswith("Unterminated string") or exc.pos >= len(self.text) - 16
                if cut and self.more():
                    continue  # the value runs past the text read so far
                line = self.line_at(exc.pos)
                detail = f"not valid JSON at line {line}, column {exc.colno} ({exc.msg})"
                raise self.error(detail, line) from None
            except (ValueError, RecursionError) as exc:
                line = self.line_at(start)
                raise self.error(f"not valid JSON at line {line} ({exc})", line) from None
            self.pos = end
            return parsed, start, end


def raw_bytes(raw: str) -> bytes:
    """The exact bytes of an element's source text, those that are not UTF-8 included."""
    return raw.encode("utf-8", "surrogateescape")


def _array(text: JsonText, name: str, prefix: str) -> Iterator[Element]:
    """The elements of the array at ``pos``."""
    text.pos += 1
    if text.peek() == "]":
        text.pos += 1
        return
    index = 0
    while True:
        where = f"{prefix}{name}[{index}] (line {text.here()})"
        try:
            parsed, start, end = text.value()
        except InputError as exc:
            exc.position = where
            raise
        yield parsed, text.text[start:end], where
        index += 1
        text.compact()
        found = text.peek()
        if found == "]":
            text.pos += 1
            return
        if found != ",":
            shown = repr(found) if found else "the end of the input"
            raise text.error(f"expected ',' or ']' after {where}, found {shown}", text.here())
        text.pos += 1
        text.peek()


def _object(text: JsonText, prefix: str) -> Iterator[Element]:
    """The records of the object at ``pos``: its ``Records`` array's, or itself."""
    start, line = text.pos, text.here()
    text.pos += 1
    container = False
    if text.peek() != "}":
        while True:
            if text.peek() != '"':
                raise text.error("expected a member name", text.here())
            key, _, _ = text.value()
            text.take(":", f"member {key!r}")
            if key == "Records" and text.peek() == "[" and not container:
                container = True
                yield from _array(text, "Records", prefix)
            else:
                text.peek()
                text.value()
            found = text.peek()
            if found == "}":
                break
            text.take(",", f"member {key!r}")
    text.pos += 1
    if not container:
        raw = text.text[start : text.pos]
        yield _DECODER.decode(raw), raw, f"{prefix}the record at line {line}"


def documents(text: JsonText) -> Iterator[Element]:
    """Every record of every document in ``text``, in order.

    Raises:
        InputError: the text is not JSON, or a document is neither an array nor an object;
            naming the line.
    """
    count = 0
    while found := text.peek():
        count += 1
        prefix = f"document {count}, " if count > 1 else ""
        if found == "[":
            text.form = "JSON array" if count == 1 else text.form
            yield from _array(text, "", prefix)
        elif found == "{":
            text.form = "JSON object" if count == 1 else text.form
            yield from _object(text, prefix)
        else:
            raise text.error(f"expected a JSON object or array, found {found!r}", text.here())
        text.compact()
