"""The documentation stays true to the code: no dead relative links (files and ``#anchors``),
no ``ddbcdc <command>`` or option that does not exist, no ``ddbcdc.<name>`` that does not
import, and every page of ``docs/`` keeps the house style."""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ddbcdc.cli import COMMANDS

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted(
    [REPO / "README.md", REPO / "ARCHITECTURE.md", REPO / "CONTRIBUTING.md"]
    + list((REPO / "docs").glob("*.md"))
    + [p for p in (REPO / "tests" / "README.md", REPO / "benchmarks" / "README.md") if p.exists()]
)
SHELL = {"sh", "shell", "bash", "console"}

_FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|^\[[^\]]+\]:\s*(\S+)", re.M)
_SPAN = re.compile(r"(`+)(.+?)\1")
_COMMAND = re.compile(r"(?<![\w./-])ddbcdc ((?:[a-z][\w-]*)(?: [a-z][\w-]*)?)([^|;&#`]*)")
_OPTION = re.compile(r"(?<![\w-])(--[a-z][\w-]*)")
_DOTTED = re.compile(r"(?<![\w./])(ddbcdc(?:\.[A-Za-z_]\w*)+)")


@dataclass(frozen=True)
class Page:
    path: Path
    prose: str  # the text outside fenced code blocks
    code: list[tuple[str, str]]  # (language, text) of each fenced block

    @property
    def name(self) -> str:
        inside = self.path.is_relative_to(REPO)
        return str(self.path.relative_to(REPO)) if inside else self.path.name

    def spans(self) -> Iterator[str]:
        """The inline code spans of the prose."""
        for match in _SPAN.finditer(self.prose):
            yield match.group(2).strip()


def read_page(path: Path) -> Page:
    prose, code = [], []
    block: list[str] | None = None
    fence, lang = "", ""
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _FENCE.match(line.strip())
        if block is None and match:
            block, fence, lang = [], match.group(1), match.group(2)
        elif block is not None and line.strip().startswith(fence):
            code.append((lang, "\n".join(block)))
            block = None
        elif block is not None:
            block.append(line)
        else:
            prose.append(line)
    return Page(path, "\n".join(prose), code)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Page) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for match in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", page.prose, re.M):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def dead_links(page: Page) -> list[str]:
    dead = []
    for match in _LINK.finditer(page.prose):
        target = match.group(1) or match.group(2)
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        path = (page.path.parent / file_part).resolve() if file_part else page.path
        if not path.exists():
            dead.append(f"{page.name}: {target} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in anchors(read_page(path)):
            dead.append(f"{page.name}: {target} (no such heading)")
    return dead


def shell_lines(page: Page) -> Iterator[str]:
    """Code spans, the lines of shell code blocks (continuations joined), and the lines of
    unmarked blocks that start with a command."""
    yield from page.spans()
    for lang, text in page.code:
        lines = text.replace("\\\n", " ").splitlines()
        if lang in SHELL:
            yield from lines
        elif lang == "":
            yield from (line for line in lines if line.lstrip().startswith("ddbcdc "))


def command_parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddbcdc")
    subparsers = parser.add_subparsers()
    importlib.import_module(f"ddbcdc.commands.{name.replace('-', '_')}").register(subparsers)
    command: argparse.ArgumentParser = subparsers.choices[name]
    return command


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for action in parser._actions for o in action.option_strings}


#: Words that may follow ``ddbcdc <command>`` in prose without being a subcommand.
_PROSE_WORDS = frozenset({"and", "or", "with", "on", "in", "is", "to", "the"})


def unknown_commands(page: Page) -> list[str]:
    """``ddbcdc <command> [<subcommand>] --option`` that the parsers do not know."""
    bad = []
    for line in shell_lines(page):
        for match in _COMMAND.finditer(line):
            bad += _unknown(page.name, match.group(1).split(), match.group(2))
    return bad


def _unknown(where: str, words: list[str], rest: str) -> list[str]:
    name = words[0]
    if name not in COMMANDS:
        return [f"{where}: ddbcdc {name}"]
    parser = command_parser(name)
    subs = _subcommands(parser)
    known = _options(parser)
    if len(words) > 1 and subs:
        sub = subs.get(words[1])
        if sub is None and words[1] not in _PROSE_WORDS:
            return [f"{where}: ddbcdc {name} {words[1]}"]
        known |= _options(sub) if sub is not None else set()
    elif subs:
        # An option beside a command of subcommands (``dlq list|replay --table``) is known
        # when one of them has it.
        known |= {option for sub in subs.values() for option in _options(sub)}
    return [
        f"{where}: ddbcdc {' '.join(words)} {option}"
        for option in _OPTION.findall(rest)
        if option not in known
    ]


def unresolved_names(page: Page) -> list[str]:
    """``ddbcdc.x.y`` in code that does not import (the longest module prefix, then
    attributes)."""
    texts = [*page.spans(), *(text for lang, text in page.code)]
    bad = []
    for text in texts:
        for dotted in _DOTTED.findall(text):
            if not _resolves(dotted):
                bad.append(f"{page.name}: {dotted}")
    return bad


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(value, name):
                return False
            value = getattr(value, name)
        return True
    return False


def style_problems(page: Page) -> list[str]:
    """House style of a docs/ page: one ``#`` title first, then a paragraph saying what the
    page covers, ``##`` and ``###`` sections below it, prose wrapped at 100 characters
    (tables aside), shell blocks marked ``sh``."""
    problems = []
    lines = page.prose.strip().splitlines()
    if not lines or not re.match(r"^# \S", lines[0]):
        problems.append(f"{page.name}: does not start with a '# ' title")
    if len(lines) < 3 or lines[1] != "" or not re.match(r"^[A-Z`*\[\w]", lines[2]):
        problems.append(f"{page.name}: no opening paragraph under the title")
    titles = re.findall(r"^# .+", page.prose, re.M)
    if len(titles) != 1:
        problems.append(f"{page.name}: {len(titles)} '# ' titles")
    if re.search(r"^#{4,} ", page.prose, re.M):
        problems.append(f"{page.name}: headings deeper than ###")
    long = [n for n, line in enumerate(lines, 1) if len(line) > 100 and not line.startswith("|")]
    if long:
        problems.append(f"{page.name}: prose lines longer than 100 characters: {long}")
    for lang, text in page.code:
        if lang == "" and re.search(r"^\s*ddbcdc ", text, re.M):
            problems.append(f"{page.name}: a code block of commands not marked sh")
    return problems


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_dead_relative_links(path: Path) -> None:
    assert dead_links(read_page(path)) == []


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_and_option_shown_exists(path: Path) -> None:
    assert unknown_commands(read_page(path)) == []


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_ddbcdc_name_shown_imports(path: Path) -> None:
    assert unresolved_names(read_page(path)) == []


@pytest.mark.parametrize(
    "path", sorted((REPO / "docs").glob("*.md")), ids=lambda p: str(p.relative_to(REPO))
)
def test_docs_pages_keep_the_house_style(path: Path) -> None:
    assert style_problems(read_page(path)) == []


def test_the_readme_links_every_docs_page() -> None:
    readme = read_page(REPO / "README.md").prose
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in readme, page.name


# The checks can fail: each sees what it is for.


def _page(tmp_path: Path, text: str) -> Page:
    path = tmp_path / "page.md"
    path.write_text(text, encoding="utf-8")
    return read_page(path)


def test_a_dead_link_and_a_dead_anchor_are_seen(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## Failover and supervision\n")
    page = _page(
        tmp_path,
        "# Page\n\n[ok](other.md#failover-and-supervision) [gone](nowhere.md) "
        "[bad](other.md#no-such) [self](#page) [web](https://example.com/x)\n"
        "```sh\n# not a heading\n```\n",
    )
    assert dead_links(page) == [
        f"{page.name}: nowhere.md (no such file)",
        f"{page.name}: other.md#no-such (no such heading)",
    ]


def test_a_command_or_option_that_does_not_exist_is_seen(tmp_path: Path) -> None:
    page = _page(
        tmp_path,
        "# Page\n\nRun `ddbcdc verify --repair` or `ddbcdc frobnicate`.\n\n"
        "```sh\nddbcdc snapshot --segments 8 \\\n  --max-rcu 10 --no-such-flag\n"
        "ddbcdc dlq replay --table t\nddbcdc dlq resurrect\n```\n",
    )
    assert unknown_commands(page) == [
        f"{page.name}: ddbcdc frobnicate",
        f"{page.name}: ddbcdc snapshot --no-such-flag",
        f"{page.name}: ddbcdc dlq resurrect",
    ]


def test_a_name_that_does_not_import_is_seen(tmp_path: Path) -> None:
    page = _page(
        tmp_path,
        "# Page\n\n`ddbcdc.attributes.ACCELERATED`, `ddbcdc.itemjson.nothing_here`, "
        "`ddbcdc.no_such_module`\n",
    )
    assert unresolved_names(page) == [
        f"{page.name}: ddbcdc.itemjson.nothing_here",
        f"{page.name}: ddbcdc.no_such_module",
    ]
