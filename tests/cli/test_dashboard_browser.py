"""What a person sees: a real optuna-dashboard server, the study pages in headless chromium."""

from __future__ import annotations

from collections.abc import Iterator
import html
import json
import os
from pathlib import Path
import re
import shutil
import socket
import subprocess
import sys
import time
from typing import Any
import urllib.error
import urllib.request

import optuna
import pytest

from tests.cli.test_cli import HAVE_DATA
from tests.cli.test_cli import HAVE_PIPELINE
from tests.cli.test_user_model import make_user_study

BROWSER = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)

pytestmark = [
    pytest.mark.skipif(
        BROWSER is None,
        reason="no headless browser to load the dashboard with: apt-get install chromium",
    ),
    pytest.mark.skipif(
        not (HAVE_DATA and HAVE_PIPELINE),
        reason="needs Fashion-MNIST (apt-get install dataset-fashion-mnist) and the pipeline",
    ),
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    shared = make_user_study(tmp_path_factory)
    exe = shutil.which("optuna-dashboard", path=os.path.dirname(sys.executable))
    assert exe is not None, "optuna-dashboard is not installed next to this Python"
    port = _free_port()
    cmd = [exe, shared["storage"], "--host", "127.0.0.1", "--port", str(port), "--quiet"]
    cmd += ["--artifact-dir", str(shared["artifacts"])]
    log_path = shared["root"] / f"dashboard-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"optuna-dashboard exited: {log_path.read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(f"{base}/api/studies", timeout=10) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    pytest.fail("optuna-dashboard did not answer within 180 s")
                time.sleep(0.5)
            yield base, shared
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _browser(url: str, profile: Path, *extra: str) -> str:
    """Load ``url`` in headless chromium (fresh profile) and return the rendered DOM."""
    assert BROWSER is not None
    cmd = [
        BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=20000",
        *extra,
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def _study_id(base: str, name: str) -> int:
    with urllib.request.urlopen(f"{base}/api/studies", timeout=30) as r:
        studies = json.loads(r.read().decode())["study_summaries"]
    return next(int(s["study_id"]) for s in studies if s["study_name"] == name)


def test_study_note_is_on_the_page(dashboard: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    base, shared = dashboard
    url = f"{base}/dashboard/studies/{_study_id(base, shared['study_name'])}/note"
    text = _visible_text(_browser(url, tmp_path / "profile", "--dump-dom"))
    assert "BOCR: how this study searched" in text, text[:2000]
    for heading in ("Structure test", "Stages", "FLOPs budget rule"):
        assert heading in text
    study = optuna.load_study(study_name=shared["study_name"], storage=shared["storage"])
    assert f"Best: trial {study.best_trial.number}" in text
    assert "Cluster 1" in text and "features.3" in text
    assert "p = " in text and "keeps at most 0.5 of the original FLOPs" in text


def test_best_trial_files_are_listed_and_screenshot(
    dashboard: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    base, shared = dashboard
    study = optuna.load_study(study_name=shared["study_name"], storage=shared["storage"])
    best = study.best_trial.number
    url = f"{base}/dashboard/studies/{_study_id(base, shared['study_name'])}"
    text = _visible_text(_browser(url, tmp_path / "profile", "--dump-dom"))
    assert f"trial{best}-ratios.png" in text, text[:3000]
    assert f"trial{best}-model.pt" in text
    shot = tmp_path / "note.png"
    _browser(
        f"{url}/note",
        tmp_path / "profile2",
        f"--screenshot={shot}",
        "--window-size=1280,1000",
        "--hide-scrollbars",
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
