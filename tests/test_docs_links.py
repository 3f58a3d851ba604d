"""The documentation's links: every relative file link and every in-page anchor resolves."""

from __future__ import annotations

import os
from pathlib import Path
import re

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted(
    [ROOT / "README.md", *(ROOT / "benchmarks").glob("*.md"), *(ROOT / "docs").glob("*.md")]
)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def headings(text: str) -> list[str]:
    """The titles of a Markdown page's headings (lines in code fences are not headings)."""
    return [m.strip() for m in re.findall(r"^#{1,6} (.+)$", _FENCE.sub("", text), re.MULTILINE)]


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown page's headings (duplicates numbered ``-1``, ``-2``)."""
    seen: dict[str, int] = {}
    anchors = set()
    for title in headings(text):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        anchors.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return anchors


def test_heading_anchors_follow_github() -> None:
    text = "# Top\n## Sampler speed (`sampler_speed.py`)\n```\n# not a heading\n```\n## Top\n"
    assert heading_anchors(text) == {"top", "sampler-speed-sampler_speedpy", "top-1"}


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page: Path) -> None:
    text = page.read_text()
    broken = []
    for target in _LINK.findall(_FENCE.sub("", text)):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {os.path.relpath(linked, ROOT)}")
        elif anchor and linked.suffix == ".md":
            if anchor not in heading_anchors(linked.read_text()):
                where = os.path.relpath(linked, ROOT)
                broken.append(f"{target}: no heading with anchor #{anchor} in {where}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


_SOURCES = sorted(
    [
        *DOCS,
        *(ROOT / "optuna_bocr").rglob("*.py"),
        *(ROOT / "benchmarks").glob("*.py"),
    ]
)
_BENCHMARK_HEADINGS = {
    name: [" ".join(h.split()) for h in headings((ROOT / "benchmarks" / name).read_text())]
    for name in ("README.md", "RECORD.md")
}
_REFERENCE = re.compile(r"benchmarks/(README|RECORD)\.md[`),\s]*\(?\s*\[?\"([^\"]+)\"")


def section_references(text: str) -> list[tuple[str, str]]:
    """(file, title) of each ``benchmarks/<file>.md, "Title"`` in a text, lines joined.

    Comment markers and indentation at line starts are dropped, so a title broken over
    lines of a comment or docstring reads as one.
    """
    flat = re.sub(r"\n[ \t]*(#+[ \t]*)?", " ", text)
    return [(f"{m[1]}.md", " ".join(m[2].split())) for m in _REFERENCE.finditer(flat)]


def test_section_references_read_across_lines() -> None:
    text = 'x (benchmarks/RECORD.md, "A shorter\n    #   start") and benchmarks/README.md ("Proxy'
    assert section_references(text + ' quality")') == [
        ("RECORD.md", "A shorter start"),
        ("README.md", "Proxy quality"),
    ]


@pytest.mark.parametrize("source", _SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_section_references_name_a_heading(source: Path) -> None:
    """Each section a text cites by title, with its file, is a heading of that file."""
    missing = [
        f'benchmarks/{name}, "{title}"'
        for name, title in section_references(source.read_text())
        if not any(h.startswith(title) for h in _BENCHMARK_HEADINGS[name])
    ]
    assert not missing, f"{source.relative_to(ROOT)} cites no such section: " + "; ".join(missing)
