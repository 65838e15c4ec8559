"""``DDBCDC_SPEEDUPS`` picks the decode path at import; both paths decode the same way, and
without the C extension (no compiler at install time) ddbcdc decodes the same way too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RECORDS = Path(__file__).resolve().parents[1] / "fixtures" / "records"

# Runs in a fresh interpreter under the given DDBCDC_SPEEDUPS; with "absent", importing
# ddbcdc.decode._speedups fails there, as on an install without a C compiler. Prints which
# path is in use and each fixture's decoded record (or error) as JSON.
_SCRIPT = """
import json, pathlib, sys
if sys.argv[2] == "absent":
    sys.modules["ddbcdc.decode._speedups"] = None  # importing it raises ImportError
from ddbcdc.decode import attributes
from ddbcdc.decode import record as decode
from ddbcdc.errors import DecodeError
from ddbcdc.decode.render import record_to_json
assert attributes.ACCELERATED is (decode._fast_decode is not None)
out = {}
for path in sorted(pathlib.Path(sys.argv[1]).glob("*/*.json")):
    try:
        out[path.name] = record_to_json(decode.decode_record(path.read_bytes())).decode()
    except DecodeError as exc:
        out[path.name] = f"error: {exc}"
print(json.dumps({"accelerated": attributes.ACCELERATED, "decoded": out}))
"""


def _run(speedups: str | None, *, absent: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DDBCDC_SPEEDUPS"}
    if speedups is not None:
        env["DDBCDC_SPEEDUPS"] = speedups
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(RECORDS), "absent" if absent else "built"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def _decode_fixtures(speedups: str | None, *, absent: bool = False) -> tuple[bool, dict[str, str]]:
    result = _run(speedups, absent=absent)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    return out["accelerated"], out["decoded"]


def test_both_paths_decode_every_fixture_the_same() -> None:
    accelerated, c_path = _decode_fixtures("1")
    assert accelerated is True
    assert len(c_path) >= 18
    assert sum(not value.startswith("error:") for value in c_path.values()) >= 8
    assert _decode_fixtures("0") == (False, c_path)
    assert _decode_fixtures(None) == (True, c_path)  # unset: the C path when built


def test_without_the_extension_every_fixture_decodes_as_with_it() -> None:
    assert _decode_fixtures(None, absent=True) == _decode_fixtures("0", absent=True)
    assert _decode_fixtures(None, absent=True) == (False, _decode_fixtures("1")[1])


@pytest.mark.parametrize(
    ("speedups", "absent", "words"),
    [
        ("1", True, "DDBCDC_SPEEDUPS=1 but the C extension ddbcdc.decode._speedups does not"),
        ("yes", False, "DDBCDC_SPEEDUPS='yes': must be 0 (pure Python), 1 (the C speedups)"),
    ],
)
def test_a_path_that_cannot_be_had_is_an_import_error_naming_the_cause(
    speedups: str, absent: bool, words: str
) -> None:
    result = _run(speedups, absent=absent)
    assert result.returncode != 0 and not result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ") and words in last
