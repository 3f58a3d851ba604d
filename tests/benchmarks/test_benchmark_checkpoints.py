"""Every committed benchmark checkpoint is listed in its README with the right fingerprints."""

from __future__ import annotations

import hashlib
import re

import pytest

from benchmarks import pruning

README = pruning.COMMITTED_CHECKPOINTS / "README.md"
ROW = re.compile(
    r"^\| `(?P<file>[^`]+\.pt)` \|.*\| `(?P<fp>[0-9a-f]{16})` \| `(?P<sha>[0-9a-f]{64})` \|$"
)


def _listed() -> dict[str, tuple[str, str]]:
    rows = (ROW.match(line) for line in README.read_text().splitlines())
    return {m["file"]: (m["fp"], m["sha"]) for m in rows if m}


def test_the_readme_lists_exactly_the_committed_files() -> None:
    files = sorted(p.name for p in pruning.COMMITTED_CHECKPOINTS.glob("*.pt"))
    if not files:
        pytest.skip("no committed checkpoints in this tree")
    assert sorted(_listed()) == files


@pytest.mark.parametrize("name", sorted(_listed()))
def test_a_committed_checkpoint_matches_its_listed_fingerprints(name: str) -> None:
    path = pruning.COMMITTED_CHECKPOINTS / name
    if not path.exists():
        pytest.skip(f"{name} is not in this tree")
    fingerprint, sha256 = _listed()[name]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    assert pruning.checkpoint_fingerprint(path) == fingerprint
