"""Without the C extension (no compiler at install time) ddbcdc decodes the same way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RECORDS = Path(__file__).resolve().parents[1] / "fixtures" / "records"

# Runs in a fresh interpreter; with "pure", importing ddbcdc.decode._speedups fails there, as on an
# install without a C compiler. Prints each fixture's decoded record (or error) as JSON.
_SCRIPT = """
import json, pathlib, sys
if sys.argv[2] == "pure":
    sys.modules["ddbcdc.decode._speedups"] = None  # importing it raises ImportError
from ddbcdc.decode import attributes
from ddbcdc.decode import record as decode
from ddbcdc.errors import DecodeError
from ddbcdc.decode.render import record_to_json
assert attributes.ACCELERATED is (sys.argv[2] == "fast")
assert (decode._fast_decode is None) is (sys.argv[2] == "pure")
out = {}
for path in sorted(pathlib.Path(sys.argv[1]).glob("*/*.json")):
    try:
        out[path.name] = record_to_json(decode.decode_record(path.read_bytes())).decode()
    except DecodeError as exc:
        out[path.name] = f"error: {exc}"
print(json.dumps(out))
"""


def _decode_fixtures(path: str) -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(RECORDS), path],
        capture_output=True,
        text=True,
        check=True,
    )
    decoded: dict[str, str] = json.loads(result.stdout)
    return decoded


def test_without_the_extension_every_fixture_decodes_as_with_it() -> None:
    pure = _decode_fixtures("pure")
    assert len(pure) >= 18
    assert sum(not value.startswith("error:") for value in pure.values()) >= 8
    assert pure == _decode_fixtures("fast")
