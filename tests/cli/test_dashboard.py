"""optuna-dashboard, started for real on 127.0.0.1, shows what the CLI recorded."""

from __future__ import annotations

import json
import os
from pathlib import Path
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

from optuna_bocr.keys import ACTUAL_PARAMS_KEY
from optuna_bocr.keys import CLUSTER_VALUES_KEY
from optuna_bocr.keys import FLOPS_RATIO_KEY
from optuna_bocr.keys import N_CLUSTERS_KEY
from optuna_bocr.keys import PARAMS_RATIO_KEY
from optuna_bocr.keys import STAGE_KEY
from optuna_bocr.keys import TOP1_KEY
from tests.cli.test_cli import HAVE_DATA
from tests.cli.test_cli import HAVE_PIPELINE
from tests.cli.test_cli import make_cli_study
from tests.cli.test_cli import STUDY

pytestmark = pytest.mark.skipif(
    not (HAVE_DATA and HAVE_PIPELINE),
    reason="needs Fashion-MNIST and the BOCR sampler + pruning objective modules",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read().decode())


def _attrs(serialized: list[dict[str, str]]) -> dict[str, Any]:
    out = {}
    for item in serialized:
        try:
            out[item["key"]] = json.loads(item["value"])
        except json.JSONDecodeError:
            out[item["key"]] = item["value"]
    return out


@pytest.fixture()
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Any:
    shared = make_cli_study(tmp_path_factory)
    exe = shutil.which("optuna-dashboard", path=os.path.dirname(sys.executable))
    assert exe is not None, "optuna-dashboard is not installed next to this Python"
    port = _free_port()
    artifact_dir = shared["root"] / "artifacts"
    artifact_dir.mkdir(exist_ok=True)
    cmd = [exe, shared["storage"], "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--artifact-dir", str(artifact_dir), "--quiet"]
    log = open(shared["root"] / f"dashboard-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                log.flush()
                pytest.fail(f"optuna-dashboard exited early: {Path(log.name).read_text()[-2000:]}")
            try:
                _get(f"{base}/api/studies")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
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
        log.close()


def test_dashboard_shows_bocr_attrs(dashboard: Any) -> None:
    base, shared = dashboard
    studies = _get(f"{base}/api/studies")["study_summaries"]
    ids = {s["study_name"]: s["study_id"] for s in studies}
    assert STUDY in ids
    detail = _get(f"{base}/api/studies/{ids[STUDY]}")
    assert detail["directions"] == ["maximize"]
    assert detail.get("objective_names") == ["top1"]
    study_attrs = _attrs(detail["user_attrs"])
    assert study_attrs["model"] == "resnet20"
    assert study_attrs["dataset"] == "fashion-mnist"
    assert study_attrs["flops_target"] == 0.5

    study = optuna.load_study(study_name=STUDY, storage=shared["storage"])
    by_number = {t.number: t for t in study.trials}
    complete = [t for t in detail["trials"] if t["state"].lower() == "complete"]
    assert len(complete) >= 5
    stages = set()
    for t in complete:
        attrs = _attrs(t["user_attrs"])
        stored = by_number[t["number"]]
        # Per-layer actual ratios, as the objective recorded them (one per prunable layer).
        actual = attrs[ACTUAL_PARAMS_KEY]
        assert isinstance(actual, dict) and len(actual) == 9
        assert actual == pytest.approx(stored.user_attrs[ACTUAL_PARAMS_KEY])
        assert 0.0 < attrs[FLOPS_RATIO_KEY] <= 0.5 + 1e-6
        assert 0.0 < attrs[PARAMS_RATIO_KEY] <= 1.0
        assert attrs[TOP1_KEY] == pytest.approx(t["values"][0])
        assert 0.0 <= attrs[TOP1_KEY] <= 100.0
        # The BOCR stage and its cluster values.
        assert attrs[STAGE_KEY] >= 0
        assert len(attrs[CLUSTER_VALUES_KEY]) == attrs[N_CLUSTERS_KEY]
        assert all(0.1 - 1e-9 <= v <= 1.0 + 1e-9 for v in attrs[CLUSTER_VALUES_KEY])
        stages.add(attrs[STAGE_KEY])
        # The searched parameters are the layer names.
        assert {p["name"] for p in t["params"]} == set(actual)
    assert 0 in stages
    union = {a["key"] for a in detail["union_user_attrs"]}
    assert {ACTUAL_PARAMS_KEY, FLOPS_RATIO_KEY, TOP1_KEY, STAGE_KEY} <= union

    # Artifacts attached by `optuna-bocr export --artifact-store` (test_cli) are listed.
    uploaded = optuna.artifacts.get_all_artifact_meta(study)
    listed = {a["filename"] for a in detail.get("artifacts", [])}
    assert {m.filename for m in uploaded} <= listed
