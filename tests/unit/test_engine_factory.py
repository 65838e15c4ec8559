"""Every engine the code creates comes from ``ddbcdc.db.create_engine``, which hides statement
parameters (item values) from errors: a scan of the source finds any other way."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FACTORY = ROOT / "src" / "ddbcdc" / "db.py"
MAKERS = {"create_engine", "create_async_engine", "engine_from_config", "create_mock_engine"}


def _sources() -> list[Path]:
    files = sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "migrations").rglob("*.py"))
    files += sorted((ROOT / "workers").rglob("*.py"))
    return [f for f in files if f != FACTORY]


def engines_made_elsewhere(path: Path) -> list[str]:
    """``file:line`` of each engine ``path`` makes other than through the factory."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            names = {alias.name for alias in node.names}
            if names & MAKERS:
                found.append(f"{path}:{node.lineno} imports {sorted(names & MAKERS)}")
        elif isinstance(node, ast.Attribute) and node.attr in MAKERS:
            found.append(f"{path}:{node.lineno} calls .{node.attr}")
    return found


def test_every_engine_comes_from_the_factory() -> None:
    sources = _sources()
    assert len(sources) > 100  # the scan sees the package
    offenders = [hit for path in sources for hit in engines_made_elsewhere(path)]
    assert offenders == []


def test_the_scan_finds_an_engine_made_directly(tmp_path: Path) -> None:
    for text in (
        "import sqlalchemy as sa\nengine = sa.create_engine('postgresql://x')\n",
        "from sqlalchemy import create_engine\nengine = create_engine('postgresql://x')\n",
        "import sqlalchemy\nengine = sqlalchemy.engine_from_config({})\n",
    ):
        module = tmp_path / "probe.py"
        module.write_text(text, encoding="utf-8")
        assert len(engines_made_elsewhere(module)) == 1, text
