"""CI: ddbcdc works as an installed package, outside the checkout (``make package-check``).

1. ``python -m build``: the sdist, and the wheel built from it.
2. Every dependency as a wheel in one folder (``pip wheel``; amazon-kclpy, built once with its
   KCL jars, comes from pip's cache when it has it), then, in fresh virtualenvs outside the
   repository and without the network (``--no-index``):
   - ``wheel``: ``pip install ddbcdc`` from that folder, as the Dockerfile installs it;
   - ``sdist``: ``python setup.py build_ext`` with the setuptools a fresh virtualenv has, then
     the sdist installed with its build requirements present (the C speedups compiled), and
     at the end once more without a C compiler (pure Python, with a warning).
3. From an empty temporary folder, with each install: ``ddbcdc --version``, ``ddbcdc migrate``
   (a mapping of the folder's own) against a throwaway PostgreSQL, ``ddbcdc apply`` (a
   poison record in it), ``dlq list`` and ``status``, ``ddbcdc worker
   --print-properties`` and the shard processor it names, run as the daemon runs it, ``ddbcdc
   worker --prepare`` (the DynamoDB Streams launcher compiled from the package); with the
   wheel install: ``ddbcdc demo`` (kinesis-local installed by npm into an empty user cache).

Run it with the checkout's virtualenv: it starts PostgreSQL with :mod:`ddbcdc.local.postgres`
and reads the head revision and the version from the checkout. Prints what each step took;
exits 1 at the first failure, keeping its folder for a look.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic.script import ScriptDirectory

import ddbcdc
from ddbcdc.local.postgres import TemporaryPostgres
from ddbcdc.resources import migrations_dir
from ddbcdc.settings import Settings
from ddbcdc.worker.streams import adapter_jar

ROOT = Path(__file__).resolve().parents[1]
VERSION = ddbcdc.__version__
ORDERS = {
    "source_table": "orders",
    "target_table": "orders",
    "key": ["order_id"],
    "columns": [
        {"name": "order_id", "source": "order_id", "type": "text", "required": True},
        {"name": "total", "source": "total", "type": "numeric"},
    ],
}
#: What each built distribution must hold (installed commands read them).
SDIST_FILES = (
    "LICENSE",
    "CHANGELOG.md",
    "migrations/env.py",
    "workers/logback.xml",
    "workers/StreamsDaemon.java",
    "schemas/tables/customers.json",
    "schemas/single_table/shop.json",
    "src/ddbcdc/decode/_speedups.h",
)
WHEEL_FILES = (
    "ddbcdc/_migrations/env.py",
    "ddbcdc/_migrations/versions/0001_bookkeeping.py",
    "ddbcdc/_workers/logback.xml",
    "ddbcdc/_workers/kcl.properties.template",
    "ddbcdc/_workers/StreamsDaemon.java",
    "ddbcdc/_schemas/tables/customers.json",
    "ddbcdc/_schemas/single_table/shop.json",
    "ddbcdc/_schemas/change-record.schema.json",
    "ddbcdc/materialize/isolate.sql",
    "ddbcdc/materialize/screen.sql",
    "ddbcdc/materialize/spans.sql",
)
#: What the daemon sends a shard processor that starts and is asked to shut down.
PROTOCOL = [
    {
        "action": "initialize",
        "shardId": "shardId-0",
        "sequenceNumber": "LATEST",
        "subSequenceNumber": 0,
    },
    {"action": "shutdownRequested"},
]
TIMES: list[tuple[str, float]] = []


class CheckError(Exception):
    """A step did not do what it must."""


@contextmanager
def step(name: str) -> Iterator[None]:
    print(f"package-check: {name}", file=sys.stderr, flush=True)
    started = time.monotonic()
    yield
    TIMES.append((name, time.monotonic() - started))
    print(f"package-check: {TIMES[-1][1]:.1f} s", file=sys.stderr, flush=True)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that points at the checkout or a database."""
    drop = ("DDBCDC_", "PROMETHEUS_", "DATABASE_URL", "PYTHONPATH", "VIRTUAL_ENV", "AWS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, **extra}


def run(
    command: Sequence[str | Path],
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    ok: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``command``; unless ``ok`` is False, a non-zero exit fails the check."""
    argv = [str(c) for c in command]
    result = subprocess.run(
        argv,
        cwd=cwd,
        env=env if env is not None else clean_env(),
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if ok and result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise CheckError(f"{' '.join(argv)} exited {result.returncode}:\n{tail}")
    return result


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise CheckError(what)


def build(tmp: Path) -> tuple[Path, Path]:
    dist = tmp / "dist"
    run([sys.executable, "-m", "build", "--outdir", dist, ROOT], cwd=tmp)
    sdist = dist / f"ddbcdc-{VERSION}.tar.gz"
    (wheel,) = dist.glob(f"ddbcdc-{VERSION}-*.whl")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in SDIST_FILES:
        expect(needed in names, f"the sdist lacks {needed}")
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        metadata = whl.read(f"ddbcdc-{VERSION}.dist-info/METADATA").decode()
    for needed in WHEEL_FILES:
        expect(needed in names, f"the wheel lacks {needed}")
    compiled = [n for n in names if n.startswith("ddbcdc/decode/_speedups.") and n.endswith(".so")]
    expect(bool(compiled), "the wheel has no compiled speedups")
    expect(not any(n.endswith(".c") for n in names), "the wheel carries C sources")
    expect("License-Expression: Apache-2.0" in metadata, "no License-Expression in METADATA")
    return sdist, wheel


def venv(path: Path) -> Path:
    run([sys.executable, "-m", "venv", path], cwd=path.parent)
    return path / "bin" / "python"


def pip_install(python: Path, *args: str | Path) -> None:
    # --no-compile: CI imports a few modules of each dependency, byte-compiled as they load.
    command = [python, "-m", "pip", "install", "--quiet", "--no-index", "--no-compile", *args]
    run(command, cwd=python.parent)


def check_install(name: str, python: Path, tmp: Path, pg: TemporaryPostgres) -> None:
    """--version, migrate, --print-properties and the shard processor, from an empty folder."""
    work = tmp / f"work-{name}"
    (work / "schemas" / "tables").mkdir(parents=True)
    ddbcdc_cli = python.parent / "ddbcdc"
    where = run([python, "-c", "import ddbcdc; print(ddbcdc.__file__)"], cwd=work).stdout
    expect(Path(where.strip()).is_relative_to(python.parent.parent), f"{name}: ddbcdc from {where}")
    shown = run([ddbcdc_cli, "--version"], cwd=work).stdout.strip()
    expect(shown == f"ddbcdc {VERSION}", f"{name}: ddbcdc --version printed {shown!r}")
    (work / "schemas" / "tables" / "orders.json").write_text(json.dumps(ORDERS))
    url = new_database(pg, f"package_{name}")
    env = clean_env(DATABASE_URL=url, DDBCDC_STREAM_NAME="orders-cdc", AWS_REGION="us-east-1")
    run([ddbcdc_cli, "migrate"], cwd=work, env=env)
    check_migrated(url)
    check_apply(name, ddbcdc_cli, work, env)
    properties = run([ddbcdc_cli, "worker", "--print-properties"], cwd=work, env=env).stdout
    executable = next(
        line.split("=", 1)[1].strip()
        for line in properties.splitlines()
        if line.startswith("executableName")
    )
    expect(executable == f"{python} -P -m ddbcdc.worker.entry", f"{name}: {executable!r}")
    shard = run(
        executable.split(" "),
        cwd=work,
        env=env,
        stdin="".join(json.dumps(m) + "\n" for m in PROTOCOL),
    )
    replies = [json.loads(line).get("responseFor") for line in shard.stdout.splitlines() if line]
    expect(replies == ["initialize", "shutdownRequested"], f"{name}: processor said {shard.stdout}")
    check_streams_launcher(name, ddbcdc_cli, work)


def order(event_id: str, total: dict[str, str]) -> dict[str, object]:
    image = {"order_id": {"S": event_id}, "total": total}
    return {
        "eventID": event_id,
        "eventName": "INSERT",
        "tableName": "orders",
        "dynamodb": {
            "ApproximateCreationDateTime": 1_700_000_000_000,
            "Keys": {"order_id": {"S": event_id}},
            "NewImage": image,
        },
    }


def check_apply(name: str, ddbcdc_cli: Path, work: Path, env: dict[str, str]) -> None:
    """``ddbcdc apply`` of a gzip-compressed JSON array with a poison record, then ``dlq list``
    and ``status``: their exit codes and lines, as the docs give them."""
    records = [order("o1", {"N": "1.50"}), order("o2", {"S": "two"}), order("o3", {"N": "3"})]
    (work / "orders.json.gz").write_bytes(gzip.compress(json.dumps(records, indent=2).encode()))
    applied = run([ddbcdc_cli, "apply", "orders.json.gz"], cwd=work, env=env, ok=False)
    summary = "gzip-compressed JSON array of change records: received 3, upserted 2"
    expect(applied.returncode == 1 and summary in applied.stdout, f"{name}: apply: {applied}")
    expect("[1] (line " in applied.stderr, f"{name}: apply named no position: {applied.stderr}")
    letters = run([ddbcdc_cli, "dlq", "list", "--json"], cwd=work, env=env).stdout.splitlines()
    expect([json.loads(line)["source_table"] for line in letters] == ["orders"], f"{letters}")
    status = run([ddbcdc_cli, "status"], cwd=work, env=env, ok=False)
    expect(status.returncode == 1 and "no shard progress yet" in status.stdout, f"{status}")


def check_streams_launcher(name: str, ddbcdc_cli: Path, work: Path) -> None:
    """The DynamoDB Streams launcher compiles from the installed package (the adapter jar is
    the checkout's copy: no network here)."""
    env = clean_env(
        DDBCDC_ADAPTER_JAR=str(adapter_jar(Settings())), DDBCDC_CACHE_DIR=str(work / "cache")
    )
    shown = run([ddbcdc_cli, "worker", "--prepare"], cwd=work, env=env).stdout
    launcher = Path(dict(line.split("=", 1) for line in shown.split())["launcher"])
    expect((launcher / "StreamsDaemon.class").is_file(), f"{name}: no launcher in {launcher}")


def new_database(pg: TemporaryPostgres, name: str) -> str:
    admin = sa.create_engine(pg.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return sa.make_url(pg.url).set(database=name).render_as_string(hide_password=False)


def check_migrated(url: str) -> None:
    head = ScriptDirectory(str(migrations_dir())).get_current_head()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()
    expect(revision == head, f"migrated to {revision}, the head is {head}")
    expect({"orders", "customers", "ddbcdc_dead_letters"} <= tables, f"tables: {sorted(tables)}")


def check_sdist_build_ext(python: Path, sdist: Path, tmp: Path) -> None:
    """``python setup.py build_ext`` from the unpacked sdist, with a fresh venv's setuptools."""
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp / "unpacked", filter="data")
    source = tmp / "unpacked" / f"ddbcdc-{VERSION}"
    out = tmp / "build_ext"
    build_ext = ["setup.py", "--quiet", "build_ext", "--build-temp", out / "tmp"]
    run([python, *build_ext, "--build-lib", out / "lib"], cwd=source)
    built = list((out / "lib" / "ddbcdc" / "decode").glob("_speedups*.so"))
    expect(bool(built), "python setup.py build_ext built no speedups")


def check_pure(python: Path, sdist: Path, tmp: Path, reference: str) -> None:
    """Without a C compiler: a warning, then the pure-Python path decodes the same."""
    offline = ["--no-deps", "--no-index", "--no-build-isolation", "--wheel-dir", tmp / "pure"]
    built = run(
        [python, "-m", "pip", "wheel", "--verbose", *offline, sdist],
        cwd=tmp,
        env=clean_env(CC="false"),  # a compiler that always fails
    )
    expect("WARNING: ddbcdc's C speedups" in built.stdout + built.stderr, "no warning without cc")
    (wheel,) = (tmp / "pure").glob("*.whl")
    expect(not any(".so" in n for n in zipfile.ZipFile(wheel).namelist()), "compiled without cc")
    pip_install(python, "--no-deps", "--force-reinstall", wheel)
    gone = run([python, "-c", "import ddbcdc.decode._speedups"], cwd=tmp, ok=False)
    expect(gone.returncode != 0, "the speedups are still importable")
    expect(decode_sample(python, tmp) == reference, "the pure-Python path decodes differently")


def decode_sample(python: Path, cwd: Path) -> str:
    sample = ROOT / "tests" / "fixtures" / "sample-records.jsonl"
    return run([python.parent / "ddbcdc", "decode", sample], cwd=cwd).stdout


def check_demo(python: Path, tmp: Path) -> None:
    work = tmp / "work-demo"
    work.mkdir()
    env = clean_env(XDG_CACHE_HOME=str(tmp / "cache"))
    demo = run(
        [python.parent / "ddbcdc", "demo", "--changes", "1000", "--keys", "200"], cwd=work, env=env
    )
    expect("PostgreSQL matches DynamoDB" in demo.stdout, f"demo:\n{demo.stdout[-2000:]}")
    installed = list((tmp / "cache" / "ddbcdc").glob("kinesis-local-*/node_modules/kinesis-local"))
    expect(bool(installed), "the demo did not install kinesis-local into the user cache")


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="ddbcdc-package-check-"))
    started = time.monotonic()
    try:
        with step("python -m build (sdist, then the wheel from it)"):
            sdist, wheel = build(tmp)
        with step("pip wheel: every dependency as a wheel, in one folder"):
            wheels = tmp / "wheels"
            wanted = [f"ddbcdc[local] @ {wheel.as_uri()}", "setuptools>=77"]
            run(
                [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", wheels, *wanted],
                cwd=tmp,
            )
        with step("wheel: fresh virtualenv, pip install --no-index ddbcdc"):
            from_wheel = venv(tmp / "venv-wheel")
            pip_install(from_wheel, "--find-links", wheels, "ddbcdc")
        with step("sdist: build_ext with a fresh virtualenv's setuptools, then install offline"):
            from_sdist = venv(tmp / "venv-sdist")
            check_sdist_build_ext(from_sdist, sdist, tmp)
            pip_install(from_sdist, "--find-links", wheels, "setuptools>=77")
            pip_install(from_sdist, "--find-links", wheels, "--no-build-isolation", sdist)
            run([from_sdist, "-c", "import ddbcdc.decode._speedups"], cwd=tmp)
        with step("a throwaway PostgreSQL"):
            pg = TemporaryPostgres().start()
        try:
            for name, python in (("wheel", from_wheel), ("sdist", from_sdist)):
                with step(f"{name}: --version, migrate, --print-properties, shard processor"):
                    check_install(name, python, tmp, pg)
        finally:
            pg.stop()
        with step("sdist without a C compiler: warning, pure Python decodes the same"):
            check_pure(from_sdist, sdist, tmp, reference=decode_sample(from_wheel, tmp))
        with step("wheel: pip install --no-index 'ddbcdc[local]' (moto, for the demo)"):
            pip_install(from_wheel, "--find-links", wheels, "ddbcdc[local]")
        with step("wheel: ddbcdc demo from an empty folder (kinesis-local from npm)"):
            check_demo(from_wheel, tmp)
    except CheckError as exc:
        print(f"package-check FAILED: {exc}\n(files kept in {tmp})", file=sys.stderr)
        return 1
    for name, seconds in TIMES:
        print(f"  {seconds:6.1f} s  {name}", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"package-check passed in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
