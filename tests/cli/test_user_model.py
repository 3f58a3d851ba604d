"""``--model path/file.py:factory``: the user's own network through train, prune, resume, export.

The network is written to a temporary folder, as a user's own file would be; the study made
here (``make_user_study``) is shared with test_dashboard_browser.py.
"""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys
import textwrap
from typing import Any

import optuna
import pytest
import torch

from optuna_bocr.cli import main
from optuna_bocr.keys import BOCR_STRUCTURE_KEY
from optuna_bocr.keys import STAGE_KEY
from optuna_bocr.keys import STUDY_CONFIG_KEY
from tests.cli.test_cli import HAVE_DATA
from tests.cli.test_cli import HAVE_PIPELINE
from tests.cli.test_cli import run_cli

needs_pipeline = pytest.mark.skipif(
    not (HAVE_DATA and HAVE_PIPELINE),
    reason="needs Fashion-MNIST (apt-get install dataset-fashion-mnist) and the pipeline",
)

STUDY = "mine"
KWARGS = '{"width": 8}'
NETS = textwrap.dedent(
    """
    import torch
    from torch import nn


    class SmallNet(nn.Module):
        def __init__(self, width: int = 16, classes: int = 10) -> None:
            super().__init__()
            w = width
            self.features = nn.Sequential(
                nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
                nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
                nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
                nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(),
                nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(),
            )
            self.classifier = nn.Linear(4 * w, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.features(x).mean((2, 3)))


    def make_net(width: int = 16) -> nn.Module:
        return SmallNet(width)


    def make_flat(width: int = 4) -> nn.Module:
        # One convolution only: nothing produces its input, so nothing can be pruned.
        return nn.Sequential(
            nn.Conv2d(1, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(width, 10),
        )


    def make_number() -> int:
        return 7


    NOT_A_FUNCTION = "hello"
    """
)


def write_nets(folder: Path) -> Path:
    """The user's file of networks."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "my_nets.py"
    path.write_text(NETS)
    return path


def user_prune_args(root: Path, *, n_trials: int, **extra: Any) -> list[str]:
    opts: dict[str, Any] = {
        "--model": "nets/my_nets.py:make_net",
        "--model-kwargs": KWARGS,
        "--checkpoint": "my.pt",
        "--storage": f"sqlite:///{root / 'study.db'}",
        "--study-name": STUDY,
        "--n-trials": n_trials,
        "--n-startup-trials": 2,
        "--n-clusters": 2,
        "--val-size": 200,
        "--calibration-images": 64,
        "--points-per-layer": 4,
        "--export": root / "best.pt",
    }
    opts.update(extra)
    out = ["prune", "--quiet"]
    for k, v in opts.items():
        out += [k, str(v)]
    return out


_SHARED: dict[str, Any] = {}


def make_user_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Train the user's network, prune it (with an artifact store) once per session."""
    if not _SHARED:
        root = tmp_path_factory.mktemp("user-model")
        write_nets(root / "nets")
        train = run_cli(
            [
                "train", "--quiet", "--model", "nets/my_nets.py:make_net",
                "--model-kwargs", KWARGS, "--output", "my.pt", "--epochs", "1",
                "--images", "1200", "--lr", "0.05", "--val-size", "200", "--test-size", "200",
            ],
            cwd=root,
        )  # fmt: skip
        assert train.returncode == 0, train.stderr[-3000:]
        proc = run_cli(
            user_prune_args(root, n_trials=4, **{"--artifact-store": root / "artifacts"}),
            cwd=root,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        _SHARED.update(
            root=root,
            storage=f"sqlite:///{root / 'study.db'}",
            study_name=STUDY,
            artifacts=root / "artifacts",
            stdout=proc.stdout,
            train_stdout=train.stdout,
        )
    return _SHARED


@pytest.fixture(scope="module")
def user_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not (HAVE_DATA and HAVE_PIPELINE):
        pytest.skip("needs Fashion-MNIST and the pipeline")
    return make_user_study(tmp_path_factory)


@needs_pipeline
def test_prune_resume_export_own_network(user_study: dict[str, Any]) -> None:
    root = user_study["root"]
    study = optuna.load_study(study_name=STUDY, storage=user_study["storage"])
    config = study.user_attrs[STUDY_CONFIG_KEY]
    # The spec is recorded with an absolute path, and the factory's arguments with it.
    assert config["model"] == f"{(root / 'nets' / 'my_nets.py').resolve()}:make_net"
    assert config["model_kwargs"] == json.loads(KWARGS)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4
    # width 8: the four convolutions after the first are the prunable layers.
    assert set(done[0].params) == {f"features.{i}" for i in (3, 6, 9, 12)}
    assert (root / "best.pt").is_file()
    # The dashboard note and the layout, written at the end of prune.
    from optuna_dashboard._note import get_note_from_system_attrs

    system_attrs = study._storage.get_study_system_attrs(study._study_id)
    note = get_note_from_system_attrs(system_attrs, None)["body"]
    assert "BOCR: how this study searched" in note
    assert "Structure test" in note and "FLOPs budget rule" in note
    layout = study.user_attrs[BOCR_STRUCTURE_KEY]
    assert layout["stage_sizes"][0] == 2 and layout["stage_sizes"][-1] == 4
    for names in layout["clusters"][0]:
        assert all(f"`{n}`" in note for n in names)
    # Artifacts: the ratio plot and the exported model, named after the best trial.
    names = {m.filename for m in optuna.artifacts.get_all_artifact_meta(study)}
    best = study.best_trial.number
    assert f"trial{best}-ratios.png" in names and f"trial{best}-model.pt" in names
    assert (root / "best-history.png").is_file() and (root / "best-ratios.png").is_file()

    # Resume from another folder, naming the same file by its absolute path.
    other = root / "elsewhere"
    other.mkdir(exist_ok=True)
    spec = f"{root / 'nets' / 'my_nets.py'}:make_net"
    again = {
        "--checkpoint": root / "my.pt",
        "--model": spec,
        "--artifact-store": root / "artifacts",
    }
    args = user_prune_args(root, n_trials=6, **again)
    proc = run_cli(args, cwd=other)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name=STUDY, storage=user_study["storage"])
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 6
    assert max(t.user_attrs[STAGE_KEY] for t in done) >= 1
    names = [m.filename for m in optuna.artifacts.get_all_artifact_meta(study)]
    assert len(names) == len(set(names)) and f"trial{study.best_trial.number}-model.pt" in names

    # Export rebuilds the network from the study alone (spec + kwargs + checkpoint).
    proc = run_cli(
        [
            "export", "--quiet", "--storage", user_study["storage"], "--study-name", STUDY,
            "--output", str(root / "exported.pt"), "--test-size", "100",
            "--latency-batch", "4", "--plot", str(root / "export.png"),
        ],
        cwd=other,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (root / "exported.pt").is_file() and (root / "export.png").is_file()
    assert (root / "export-history.png").is_file()

    # The exported network loads in a fresh process wherever the user's module is importable.
    code = "from optuna_bocr.pruning import load_pruned; m, _ = load_pruned('../best.pt'); "
    code += "print(type(m).__module__, type(m).__name__)"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root / "nets", capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["my_nets", "SmallNet"]


@needs_pipeline
def test_study_refuses_when_the_code_is_gone(
    user_study: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    root = user_study["root"]
    copy = tmp_path / "copy.db"
    shutil.copy(root / "study.db", copy)
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{copy}")
    config = dict(study.user_attrs[STUDY_CONFIG_KEY])
    config["model"] = f"{tmp_path / 'gone' / 'my_nets.py'}:make_net"
    study.set_user_attr(STUDY_CONFIG_KEY, config)
    before = copy.read_bytes()
    line = _one_line_error(
        capsys,
        ["export", "--storage", f"sqlite:///{copy}", "--study-name", STUDY,
         "--output", str(tmp_path / "x.pt")],
    )  # fmt: skip
    assert "cannot be imported any more" in line and "model file not found" in line
    assert not (tmp_path / "x.pt").exists()
    assert copy.read_bytes() == before


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    assert code == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"optuna-bocr {argv[0]}: error:"), lines[0]
    return lines[0]


@needs_pipeline
@pytest.mark.parametrize(
    ("model", "kwargs", "match"),
    [
        ("no_such_pkg_xyz.nets:make_net", None, "cannot import module 'no_such_pkg_xyz"),
        ("nets/missing.py:make_net", None, "model file not found"),
        ("nets/my_nets.py:NOT_A_FUNCTION", None, "not a callable returning an nn.Module"),
        ("nets/my_nets.py:make_number", None, "returned a int, not a torch.nn.Module"),
        ("nets/my_nets.py:make_net", '{"depth": 2}', "unexpected keyword argument 'depth'"),
        ("resnet20", '{"width": 2}', "--model-kwargs applies only to"),
    ],
)
@pytest.mark.parametrize("command", ["prune", "train"])
def test_bad_model_is_refused_before_any_write(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    model: str,
    kwargs: str | None,
    match: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    write_nets(tmp_path / "nets")
    argv = [command, "--model", model, "--cache-dir", str(tmp_path / "cache")]
    if kwargs is not None:
        argv += ["--model-kwargs", kwargs]
    if command == "prune":
        argv += ["--storage", f"sqlite:///{tmp_path / 'x.db'}", "--export", "out.pt"]
    else:
        argv += ["--output", "out.pt"]
    line = _one_line_error(capsys, argv)
    assert match in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nets"]


@needs_pipeline
def test_network_without_prunable_layer_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_nets(tmp_path / "nets")
    from optuna_bocr.models import build_user_model

    torch.save(build_user_model("nets/my_nets.py:make_flat").state_dict(), tmp_path / "flat.pt")
    line = _one_line_error(
        capsys,
        ["prune", "--model", "nets/my_nets.py:make_flat", "--checkpoint", "flat.pt",
         "--storage", f"sqlite:///{tmp_path / 'x.db'}", "--val-size", "50",
         "--calibration-images", "16", "--no-export"],
    )  # fmt: skip
    assert "no prunable layer" in line
    assert "0: no Conv2d produces its input" in line
    assert "4: Linear layers keep their inputs" in line
    assert not (tmp_path / "x.db").exists()


def test_bad_model_kwargs_json_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--model", "x.py:f", "--model-kwargs", "{width: 8}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not valid JSON" in err


def test_artifact_store_needs_the_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["prune", "--no-export", "--artifact-store", str(tmp_path / "store")]
    line = _one_line_error(capsys, [*argv, "--storage", f"sqlite:///{tmp_path / 'x.db'}"])
    assert "--artifact-store uploads the exported model; drop --no-export" in line
    assert list(tmp_path.iterdir()) == []
