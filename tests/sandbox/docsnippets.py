"""The fenced code blocks of README.md and docs/*.md, and what a doc test does with each.

A block's language says how it is checked: ``python`` and ``sh`` blocks are run, ``json`` and
``toml`` blocks are parsed (and a ringfence config or an MCP client config in them is read the
way ringfence or the client would), ``text`` and unlabelled blocks are output samples and
pictures, never run. An HTML comment right before a block changes that, and is invisible
where the Markdown is rendered:

    <!-- doc-test: skip REASON -->   not run; the reason is required and printed
    <!-- doc-test: exit N -->        the block must exit with status N (default 0)
    <!-- doc-test: synopsis -->      each line names a command form: the command's --help
                                     must succeed and mention every flag the line uses
    <!-- doc-test: installed -->     ``pip install`` steps are checked against the test's own
                                     installation instead of being run (no network)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN_LANGS = ("python", "sh")
PARSE_LANGS = ("json", "toml")
TEXT_LANGS = ("", "text")
_MARK = re.compile(r"^<!--\s*doc-test:\s*(\w+)\s*(.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marks: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, with the doc-test marks written right before it."""
    out: list[Block] = []
    lines = path.read_text().splitlines()
    marks: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _MARK.match(line.strip())
        if m:
            marks[m.group(1)] = m.group(2)
            i += 1
            continue
        if line.startswith("```"):
            lang = line[3:].strip().split(" ")[0]
            start = i
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            out.append(Block(path, start + 1, lang, "\n".join(body) + "\n", dict(marks)))
            marks = {}
        elif line.strip():
            marks = {}  # a mark belongs to the block right after it
        i += 1
    return out


def all_blocks() -> list[Block]:
    return [b for p in doc_files() for b in blocks(p)]
