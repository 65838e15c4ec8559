"""DynamoDB exports as AWS lays them out, on S3 or in a local folder, read a file at a time.

An export folder (``s3://bucket/prefix/AWSDynamoDB/<export id>/`` or a local copy) holds
``manifest-summary.json`` (exportArn, exportTime, itemCount, outputFormat, exportType and,
for an incremental export, exportFromTime/exportToTime), ``manifest-files.json`` (one JSON
line per data file: dataFileS3Key, itemCount, md5Checksum: the base64 MD5 of the gzipped
file) and ``data/*.json.gz``: one item per line, ``{"Item": {...}}`` for a full export,
``{"Metadata": {"WriteTimestampMicros": ...}, "Keys": ..., "NewImage": ..., "OldImage":
...}`` for an incremental one (no NewImage: the item was deleted).

A data file is checked before any of it is used (:meth:`ExportLocation.checked`): its MD5
and its line count against the manifest, in one streaming pass; from S3 it is spooled to a
temporary file meanwhile, so memory stays bounded by one chunk whatever the file's size.
An export without manifests (moto writes only the data files) can be read when its export
time is given, with nothing to check the files against.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from ddbcdc.aws.errors import AwsNotFoundError
from ddbcdc.backfill.records import parse_time_us
from ddbcdc.errors import ConfigurationError

__all__ = [
    "DataFile",
    "ExportError",
    "ExportLocation",
    "LocalExport",
    "Manifest",
    "S3Export",
    "gzip_lines",
    "open_location",
    "parse_manifest",
    "read_manifest",
]

_CHUNK = 1 << 20
#: Compressed bytes inflated at a time: their text (~10x as much) and its lines are what a
#: data file holds in memory at once.
_GZIP_CHUNK = 1 << 16


class ExportError(ConfigurationError):
    """An export that cannot be imported as it is: format, manifest, checksum or count."""


@dataclass(frozen=True, slots=True)
class DataFile:
    """One data file: its path inside the export folder and what the manifest says of it."""

    key: str
    item_count: int | None = None
    md5: str | None = None


@dataclass(frozen=True)
class Manifest:
    """What an export is (``manifest-summary.json`` and ``manifest-files.json``)."""

    export_id: str
    export_type: str  # FULL_EXPORT | INCREMENTAL_EXPORT
    output_format: str
    export_time_us: int | None
    from_us: int | None
    to_us: int | None
    item_count: int | None
    files: tuple[DataFile, ...]
    table_name: str | None = None
    has_manifests: bool = True

    @property
    def incremental(self) -> bool:
        """An incremental export (lines carry their own write time)."""
        return self.export_type == "INCREMENTAL_EXPORT"


def _relative(key: str, root: str) -> str:
    """A manifest's dataFileS3Key -> its path inside the export folder."""
    root = root.strip("/")
    if root and key.startswith(root + "/"):
        return key[len(root) + 1 :]
    marker = key.rfind("/data/")
    return key[marker + 1 :] if marker >= 0 else key


def _time(summary: dict[str, Any], name: str) -> int | None:
    value = summary.get(name)
    if value is None:
        return None
    try:
        return parse_time_us(str(value))
    except ValueError as exc:
        raise ExportError(f"manifest-summary.json: {name} {value!r} is not a time") from exc


def parse_manifest(summary_text: str, files_text: str, *, root: str, folder: str) -> Manifest:
    """Parse the two manifests of the export in ``root`` (``folder``: its last path part).

    Raises:
        ExportError: malformed manifests, naming the file and field.
    """
    try:
        summary = orjson.loads(summary_text)
    except orjson.JSONDecodeError as exc:
        raise ExportError(f"{root}/manifest-summary.json is not JSON: {exc}") from exc
    if not isinstance(summary, dict):
        raise ExportError(f"{root}/manifest-summary.json is not a JSON object")
    try:
        item_count = None if summary.get("itemCount") is None else int(summary["itemCount"])
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{root}/manifest-summary.json: itemCount is not a count") from exc
    files = []
    for number, line in enumerate(files_text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
            files.append(
                DataFile(
                    _relative(str(entry["dataFileS3Key"]), root),
                    int(entry["itemCount"]) if "itemCount" in entry else None,
                    entry.get("md5Checksum"),
                )
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ExportError(f"{root}/manifest-files.json line {number}: {exc!r}") from exc
    arn = str(summary.get("exportArn") or "")
    table_arn = str(summary.get("tableArn") or "")
    return Manifest(
        export_id=arn.rsplit("/", 1)[-1] if "/export/" in arn else folder,
        export_type=str(summary.get("exportType") or "FULL_EXPORT"),
        output_format=str(summary.get("outputFormat") or "DYNAMODB_JSON"),
        export_time_us=_time(summary, "exportTime"),
        from_us=_time(summary, "exportFromTime"),
        to_us=_time(summary, "exportToTime"),
        item_count=item_count,
        files=tuple(files),
        table_name=table_arn.split("table/", 1)[1].split("/")[0] if "table/" in table_arn else None,
    )


def _text(raw: bytes, where: str) -> str:
    """A manifest's bytes as text, or an :class:`ExportError` naming the file and offset."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExportError(f"{where} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


class ExportLocation:
    """An export folder; subclasses say where its files are."""

    root: str
    folder: str

    def describe(self) -> str:
        """The folder as a user names it."""
        return self.root

    def read_text(self, name: str) -> str | None:
        """A small file of the folder (a manifest), None when absent."""
        raise NotImplementedError

    def data_files(self) -> list[str]:
        """Every file under ``data/`` (for exports without manifests)."""
        raise NotImplementedError

    def _open(self, key: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        raise NotImplementedError

    @contextlib.contextmanager
    def checked(self, file: DataFile) -> Iterator[IO[bytes]]:
        """The data file, gzipped, once its MD5 and line count match the manifest.

        Raises:
            ExportError: a mismatch, naming the file and both values.
        """
        with self._open(file.key) as raw:
            digest, lines, broken = _inspect(raw)
            where = f"{self.describe()}/{file.key}"
            if file.md5 is not None and digest != file.md5:
                raise ExportError(
                    f"{where}: MD5 checksum {digest} does not match the manifest's {file.md5}; "
                    "nothing of the file was applied"
                )
            if broken is not None:
                raise ExportError(
                    f"{where}: not a complete gzip file ({broken}); nothing of the file was applied"
                )
            if file.item_count is not None and lines != file.item_count:
                raise ExportError(
                    f"{where}: {lines} lines, the manifest says {file.item_count} items; "
                    "nothing of the file was applied"
                )
            raw.seek(0)
            yield raw


def _inspect(raw: IO[bytes]) -> tuple[str, int, str | None]:
    """One pass over a gzipped file: (base64 MD5 of its bytes, lines, what broke the gzip)."""
    md5 = hashlib.md5()  # noqa: S324 - the checksum AWS writes, not security
    lines, last = 0, b"\n"
    inflate = zlib.decompressobj(zlib.MAX_WBITS | 32)
    broken = None
    for chunk in iter(lambda: raw.read(_CHUNK), b""):
        md5.update(chunk)
        while chunk and broken is None:
            try:
                text = inflate.decompress(chunk)
            except zlib.error as exc:
                broken = str(exc)
                break
            if text:
                lines, last = lines + text.count(b"\n"), text[-1:]
            chunk = inflate.unused_data
            if chunk and inflate.eof:  # a file of several gzip members
                inflate = zlib.decompressobj(zlib.MAX_WBITS | 32)
    if broken is None and not inflate.eof:
        broken = "truncated"
    lines += last != b"\n"  # a last line without its newline
    return base64.b64encode(md5.digest()).decode(), lines, broken


class LocalExport(ExportLocation):
    """An export folder on this machine."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.root = str(path).rstrip("/")
        self.folder = path.resolve().name

    def read_text(self, name: str) -> str | None:
        try:
            return _text((self.path / name).read_bytes(), f"{self.root}/{name}")
        except FileNotFoundError:
            return None

    def data_files(self) -> list[str]:
        folder = self.path / "data"
        if not folder.is_dir():
            return []
        return sorted(f"data/{p.name}" for p in folder.iterdir() if p.is_file())

    def _open(self, key: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        return (self.path / key).open("rb")


class S3Export(ExportLocation):
    """An export folder in S3: ``s3://bucket/prefix/AWSDynamoDB/<id>/``."""

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.root = self.prefix
        self.folder = self.prefix.rsplit("/", 1)[-1]

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def read_text(self, name: str) -> str | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}")["Body"]
        except AwsNotFoundError as exc:
            if exc.code == "NoSuchKey":
                return None
            raise
        return _text(body.read(), f"{self.describe()}/{name}")

    def data_files(self) -> list[str]:
        keys = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/data/"):
            keys += [_relative(o["Key"], self.prefix) for o in page.get("Contents", [])]
        return sorted(keys)

    @contextlib.contextmanager
    def _open(self, key: str) -> Iterator[IO[bytes]]:
        body = self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")["Body"]
        with tempfile.TemporaryFile(prefix="ddbcdc-export-") as spool:
            for chunk in body.iter_chunks(_CHUNK):
                spool.write(chunk)
            spool.seek(0)
            yield spool


def open_location(uri: str, *, s3: Any | None = None) -> ExportLocation:
    """``s3://bucket/prefix/AWSDynamoDB/<id>/`` (``s3``: a boto3 S3 client) or a folder."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket or not prefix.strip("/"):
            raise ExportError(f"{uri}: expected s3://bucket/prefix/AWSDynamoDB/<export id>/")
        if s3 is None:
            raise ExportError(f"{uri}: no S3 client")
        return S3Export(s3, bucket, prefix)
    path = Path(uri)
    if not path.is_dir():
        raise ExportError(f"{uri}: no such export folder")
    return LocalExport(path)


def read_manifest(location: ExportLocation, *, export_time_us: int | None = None) -> Manifest:
    """The export's manifest; without manifests, its data files with ``export_time_us``
    (used only then: a manifest's exportTime is the export's own).

    Raises:
        ExportError: no manifest and no export time, an unknown format, or no manifest and
            no data files (nothing to import: a folder above the export's, or an empty one).
    """
    summary = location.read_text("manifest-summary.json")
    if summary is None:
        if export_time_us is None:
            raise ExportError(
                f"{location.describe()}: no manifest-summary.json, so no export time to give "
                "its rows (an export still running, or one written by an emulator); give the "
                "time it was taken at with --export-time to import its data files unchecked"
            )
        files = tuple(DataFile(key) for key in location.data_files())
        if not files:
            raise ExportError(
                f"{location.describe()}: no manifest-summary.json and no data files under "
                "data/: nothing to import (give the export's own folder, "
                ".../AWSDynamoDB/<export id>/)"
            )
        return Manifest(
            location.folder, "FULL_EXPORT", "DYNAMODB_JSON", export_time_us, None, None, None,
            files, None, has_manifests=False,
        )  # fmt: skip
    manifest = parse_manifest(
        summary,
        location.read_text("manifest-files.json") or "",
        root=location.root,
        folder=location.folder,
    )
    if manifest.output_format != "DYNAMODB_JSON":
        raise ExportError(
            f"{location.describe()} is in {manifest.output_format} format: ddbcdc imports "
            "DYNAMODB_JSON exports (request the export with ExportFormat=DYNAMODB_JSON)"
        )
    counted = [f.item_count for f in manifest.files]
    total = sum(c or 0 for c in counted)
    if manifest.item_count is not None and None not in counted and total != manifest.item_count:
        raise ExportError(
            f"{location.describe()}: manifest-files.json counts {total} items, "
            f"manifest-summary.json {manifest.item_count}"
        )
    return manifest


def _inflated(raw: IO[bytes]) -> Iterator[bytes]:
    """The decompressed bytes of a gzipped file (of one member or several), chunk by chunk.

    Raises:
        ExportError: not a complete gzip file (checked files are: see :meth:`checked`).
    """
    inflate = zlib.decompressobj(zlib.MAX_WBITS | 32)
    for chunk in iter(lambda: raw.read(_GZIP_CHUNK), b""):
        while chunk:
            try:
                text = inflate.decompress(chunk)
            except zlib.error as exc:
                raise ExportError(f"not a complete gzip file ({exc})") from exc
            if text:
                yield text
            chunk = inflate.unused_data
            if chunk and inflate.eof:  # the next gzip member
                inflate = zlib.decompressobj(zlib.MAX_WBITS | 32)
    if not inflate.eof:
        raise ExportError("not a complete gzip file (truncated)")


def gzip_lines(raw: IO[bytes]) -> Iterator[bytes]:
    """The non-empty lines of a gzipped file, stripped, streamed a chunk at a time."""
    rest = b""
    for text in _inflated(raw):
        lines = (rest + text).split(b"\n") if rest else text.split(b"\n")
        rest = lines.pop()
        for line in lines:
            line = line.strip()
            if line:
                yield line
    rest = rest.strip()
    if rest:
        yield rest
