"""The documentation's links: every relative file link and every in-page anchor resolves."""

from __future__ import annotations

import os
from pathlib import Path
import re

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted(
    [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *(ROOT / "docs").glob("*.md")]
)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown page's headings (duplicates numbered ``-1``, ``-2``)."""
    seen: dict[str, int] = {}
    anchors = set()
    for match in re.finditer(r"^#{1,6} (.+)$", _FENCE.sub("", text), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
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
