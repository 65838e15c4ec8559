"""DynamoDB export folders laid out as AWS documents them, for the import tests.

``write_export(folder, files, ...)`` writes ``manifest-summary.json``, ``manifest-files.json``
(one JSON line per data file: itemCount, md5Checksum = base64 MD5 of the gzipped file, etag,
dataFileS3Key), ``_started`` and ``data/<name>.json.gz`` (one JSON object per line), for a
full export (lines ``{"Item": ...}``) or an incremental one (``{"Metadata":
{"WriteTimestampMicros": {"N": ...}}, "Keys": ..., "NewImage": ..., "OldImage": ...}``).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ACCOUNT = "123456789012"


def iso(micros: int) -> str:
    """Epoch microseconds as the manifests write times (milliseconds, Z)."""
    moment = datetime.fromtimestamp(micros / 1_000_000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def customer(userid: int, first: str = "Ada", phone: int = 5551234567) -> dict[str, Any]:
    """A customers item in DynamoDB JSON."""
    return {
        "userid": {"N": str(userid)},
        "first_name": {"S": first},
        "last_name": {"S": "Lovelace"},
        "phone": {"N": str(phone)},
    }


def _b64(value: Any) -> str:
    """B values (bytes in boto3's form) as an export writes them: base64 text."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(type(value).__name__)


def full_lines(items: Sequence[Mapping[str, Any]]) -> list[bytes]:
    """Lines of a full export."""
    return [orjson.dumps({"Item": item}, default=_b64) for item in items]


def incremental_line(
    written_us: int,
    keys: Mapping[str, Any],
    new: Mapping[str, Any] | None = None,
    old: Mapping[str, Any] | None = None,
) -> bytes:
    """One line of an incremental export (no ``new``: the item was deleted; ``old``: the
    item before, as NEW_AND_OLD_IMAGES exports have it)."""
    line: dict[str, Any] = {
        "Metadata": {"WriteTimestampMicros": {"N": str(written_us)}},
        "Keys": dict(keys),
    }
    if new is not None:
        line["NewImage"] = dict(new)
    if old is not None:
        line["OldImage"] = dict(old)
    return orjson.dumps(line, default=_b64)


def write_export(
    folder: Path,
    files: Mapping[str, Sequence[bytes]],
    *,
    export_id: str,
    table: str = "customers",
    export_time_us: int | None = None,
    incremental: tuple[int, int] | None = None,
    output_format: str = "DYNAMODB_JSON",
    prefix: str = "exports",
) -> Path:
    """Write an export folder; ``files`` maps data file names to their lines."""
    root = f"{prefix}/AWSDynamoDB/{export_id}"
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "_started").write_text("")
    manifest = []
    total = 0
    for name, lines in files.items():
        path = folder / "data" / name
        path.write_bytes(gzip.compress(b"".join(line + b"\n" for line in lines)))
        digest = hashlib.md5(path.read_bytes()).digest()
        manifest.append(
            {
                "itemCount": len(lines),
                "md5Checksum": base64.b64encode(digest).decode(),
                "etag": digest.hex() + "-1",
                "dataFileS3Key": f"{root}/data/{name}",
            }
        )
        total += len(lines)
    (folder / "manifest-files.json").write_bytes(
        b"".join(orjson.dumps(m) + b"\n" for m in manifest)
    )
    table_arn = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{table}"
    summary: dict[str, Any] = {
        "version": "2023-08-01" if incremental else "2020-06-30",
        "exportArn": f"{table_arn}/export/{export_id}",
        "startTime": iso(export_time_us or 0),
        "endTime": iso(export_time_us or 0),
        "tableArn": table_arn,
        "tableId": "12345a12-abcd-123a-ab12-1234abc12345",
        "s3Bucket": "bucket",
        "s3Prefix": prefix,
        "s3SseAlgorithm": "AES256",
        "s3SseKmsKeyId": None,
        "manifestFilesS3Key": f"{root}/manifest-files.json",
        "billedSizeBytes": 0,
        "itemCount": total,
        "outputFormat": output_format,
        "exportType": "INCREMENTAL_EXPORT" if incremental else "FULL_EXPORT",
    }
    if incremental:
        summary["exportFromTime"], summary["exportToTime"] = (iso(t) for t in incremental)
    else:
        assert export_time_us is not None
        summary["exportTime"] = iso(export_time_us)
    (folder / "manifest-summary.json").write_bytes(
        orjson.dumps(summary, option=orjson.OPT_INDENT_2)
    )
    return folder
