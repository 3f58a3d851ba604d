"""The ``optuna-bocr`` command, run for real on Fashion-MNIST with a SQLite storage.

The tiny study made here (``make_cli_study``) is shared with test_dashboard.py.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

import optuna
import pytest
import torch

from optuna_bocr.cli import main
from optuna_bocr.cli._common import DEFAULT_BUDGET_RULE
from optuna_bocr.data._datasets import DEBIAN_FASHION_MNIST
from optuna_bocr.keys import ACTUAL_PARAMS_KEY
from optuna_bocr.keys import FLOPS_RATIO_KEY
from optuna_bocr.keys import N_CLUSTERS_KEY
from optuna_bocr.keys import PARAMS_RATIO_KEY
from optuna_bocr.keys import STAGE_KEY
from optuna_bocr.keys import STUDY_CONFIG_KEY
from optuna_bocr.keys import TOP1_KEY

HAVE_DATA = (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file()
HAVE_PIPELINE = all(
    importlib.util.find_spec(m) is not None
    for m in ("optuna_bocr.sampler._sampler", "optuna_bocr.pruning._objective")
)
needs_data = pytest.mark.skipif(
    not HAVE_DATA, reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist"
)
needs_pipeline = pytest.mark.skipif(
    not (HAVE_DATA and HAVE_PIPELINE),
    reason="needs Fashion-MNIST and the BOCR sampler + pruning objective modules",
)

STUDY = "tiny"
N_TRIALS = 5


def _cli_env(cwd: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(cwd / "xdg-cache"))
    env.pop("OPTUNA_BOCR_DATA", None)
    return env


def run_cli(args: list[str], *, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m optuna_bocr ARGS`` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "optuna_bocr", *args],
        cwd=cwd,
        env=_cli_env(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(args: list[str], *, cwd: Path) -> subprocess.Popen[str]:
    """Start ``python -m optuna_bocr ARGS``; return the running process."""
    return subprocess.Popen(
        [sys.executable, "-m", "optuna_bocr", *args],
        cwd=cwd,
        env=_cli_env(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def prune_args(root: Path, **overrides: Any) -> list[str]:
    """Arguments of the tiny but real ``prune`` run that the tests share."""
    opts: dict[str, Any] = {
        "--storage": f"sqlite:///{root / 'study.db'}",
        "--study-name": STUDY,
        "--n-trials": N_TRIALS,
        "--n-startup-trials": 3,
        "--val-size": 300,
        "--calibration-images": 100,
        "--points-per-layer": 5,
        "--train-epochs": 2,
        "--train-images": 1500,
        "--train-lr": 0.05,
        "--cache-dir": root / "cache",
        "--export": root / "best.pt",
    }
    opts.update(overrides)
    out = ["prune", "--quiet"]
    for k, v in opts.items():
        out += [k, str(v)]
    return out


_SHARED: dict[str, Any] = {}


def make_cli_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the tiny ``prune`` once per session; return its root, storage URL and output."""
    if not _SHARED:
        root = tmp_path_factory.mktemp("cli")
        proc = run_cli(prune_args(root), cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]
        _SHARED.update(
            root=root,
            storage=f"sqlite:///{root / 'study.db'}",
            db=root / "study.db",
            study_name=STUDY,
            stdout=proc.stdout,
            stderr=proc.stderr,
        )
    return _SHARED


@pytest.fixture(scope="module")
def cli_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not (HAVE_DATA and HAVE_PIPELINE):
        pytest.skip("needs Fashion-MNIST and the BOCR sampler + pruning objective modules")
    return make_cli_study(tmp_path_factory)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], *, match: str, prefix: str
) -> str:
    with pytest.raises(SystemExit) as exc:
        code = main(argv)
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), lines[0]
    assert match in lines[0], lines[0]
    return lines[0]


# -- help and argument errors ------------------------------------------------------------


def test_help_of_console_script(tmp_path: Path) -> None:
    exe = shutil.which("optuna-bocr", path=os.path.dirname(sys.executable))
    assert exe is not None, "console script not installed: pip install -e . --no-deps"
    proc = subprocess.run([exe, "prune", "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for option in ("--flops-ratio", "--n-trials", "--sampler", "--storage", "--workers"):
        assert option in proc.stdout
    assert "sqlite:///optuna-bocr.db" in proc.stdout
    assert "dataset-fashion-mnist" in proc.stdout


@pytest.mark.parametrize("command", [[], ["train"], ["export"]])
def test_help_in_process(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: optuna-bocr" in out
    expected = {"": "prune", "train": "--epochs", "export": "--finetune-epochs"}
    assert expected[" ".join(command)] in out


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["prune", "--flops-ratio", "2"], "--flops-ratio"),
        (["prune", "--n-trials", "0"], "positive integer"),
        (["prune", "--sampler", "bayes"], "invalid choice"),
        (["prune", "--dataset", "mnist"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_argument_errors_are_one_line(
    argv: list[str], match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _one_line_error(capsys, argv, match=match, prefix="optuna-bocr")


def test_bad_input_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    common = ["--storage", db, "--cache-dir", str(tmp_path / "cache")]
    _one_line_error(
        capsys,
        ["prune", "--model", "resnet21", *common],
        match="unknown model 'resnet21'",
        prefix="optuna-bocr prune: error:",
    )
    _one_line_error(
        capsys,
        ["prune", "--sampler", "gp", "--distance", "js", "--observe-actual", "--no-trust-region"]
        + ["--lengthscales", "shared", "--outcome-transform", "rank"]
        + common,
        match="--distance, --observe-actual, --trust-region/--no-trust-region, --lengthscales, "
        "--outcome-transform only apply to --sampler bocr, not gp",
        prefix="optuna-bocr prune: error:",
    )
    assert not (tmp_path / "x.db").exists()  # refused before the storage is touched
    _one_line_error(
        capsys,
        ["prune", "--storage", "sqlite:////nonexistent-dir/x/y.db"],
        match="cannot open storage",
        prefix="optuna-bocr prune: error:",
    )
    _one_line_error(
        capsys,
        ["prune", "--storage", "nosuchdb://user@host/db"],
        match="cannot open storage",
        prefix="optuna-bocr prune: error:",
    )
    if not torch.cuda.is_available():
        _one_line_error(
            capsys,
            ["prune", "--device", "cuda", *common],
            match="CUDA is not available",
            prefix="optuna-bocr prune: error:",
        )
    if HAVE_PIPELINE:
        _one_line_error(
            capsys,
            ["prune", "--data-dir", str(tmp_path / "nowhere"), *common],
            match="does not exist",
            prefix="optuna-bocr prune: error:",
        )
        _one_line_error(
            capsys,
            ["prune", "--checkpoint", str(tmp_path / "missing.pt"), *common],
            match="checkpoint not found",
            prefix="optuna-bocr prune: error:",
        )
    _one_line_error(
        capsys,
        ["export", "--storage", db],
        match="holds 0 studies",
        prefix="optuna-bocr export: error:",
    )
    _one_line_error(
        capsys,
        ["train", "--dataset", "cifar10", "--data-dir", str(tmp_path)],
        match="CIFAR-10 not found",
        prefix="optuna-bocr train: error:",
    )
    # Nothing was created by any of these: not even the SQLite file.
    assert not (tmp_path / "x.db").exists()


@needs_data
def test_train_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from optuna_bocr.models import load_checkpoint
    from optuna_bocr.models import resnet20

    out = tmp_path / "ckpt" / "r20.pt"
    code = main(
        ["train", "--quiet", "--epochs", "1", "--images", "600", "--val-size", "300"]
        + ["--test-size", "300", "--output", str(out)]
    )
    assert code == 0
    stdout = capsys.readouterr().out
    assert "Baseline:" in stdout and "Test accuracy: top-1" in stdout
    obj = torch.load(out, weights_only=True)
    assert obj["optuna_bocr"]["model"] == "resnet20"
    assert obj["optuna_bocr"]["val_size"] == 300
    assert "(300 images)" in stdout
    load_checkpoint(resnet20(in_channels=1), out)

    # The same --seed trains the same baseline (seeded weights, data order, augmentation).
    again = tmp_path / "ckpt" / "again.pt"
    argv = ["train", "--quiet", "--epochs", "1", "--images", "600", "--val-size", "300"]
    assert main(argv + ["--test-size", "300", "--output", str(again)]) == 0
    state, state_again = obj["state_dict"], torch.load(again, weights_only=True)["state_dict"]
    assert all(torch.equal(state[k], state_again[k]) for k in state)
    assert obj["optuna_bocr"]["autocast"] is False

    # --autocast trains in mixed precision: another network, recorded in the checkpoint.
    mixed = tmp_path / "ckpt" / "mixed.pt"
    assert main(argv + ["--autocast", "--test-size", "300", "--output", str(mixed)]) == 0
    obj_mixed = torch.load(mixed, weights_only=True)
    assert obj_mixed["optuna_bocr"]["autocast"] is True
    assert not all(torch.equal(state[k], obj_mixed["state_dict"][k]) for k in state)
    load_checkpoint(resnet20(in_channels=1), mixed)


# -- the real pipeline -------------------------------------------------------------------


@needs_pipeline
def test_prune_run_records_everything(cli_study: dict[str, Any]) -> None:
    from optuna_bocr.pruning import count_flops
    from optuna_bocr.pruning import load_pruned
    from optuna_bocr.pruning._flops import keep_count

    out = cli_study["stdout"]
    for row in ("Baseline top-1", "Best top-1", "FLOPs", "Params", "Storage", "Exported"):
        assert row in out, out
    assert f"optuna-dashboard {cli_study['storage']}" in out

    study = optuna.load_study(study_name=STUDY, storage=cli_study["storage"])
    assert study.metric_names == ["top1"]
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.user_attrs["model"] == "resnet20"
    assert study.user_attrs["dataset"] == "fashion-mnist"
    assert study.user_attrs["flops_target"] == 0.5
    baseline = study.user_attrs["baseline_top1"]
    assert 30.0 < baseline <= 100.0, baseline  # a briefly trained but real baseline
    # No pruner by default: every trial is scored on the whole validation split.
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) >= N_TRIALS
    for t in trials:
        actual = t.user_attrs[ACTUAL_PARAMS_KEY]
        assert set(actual) == set(t.params) and len(actual) == 9  # ResNet-20: 9 blocks
        assert all(0.1 - 1e-9 <= r <= 1.0 + 1e-9 for r in actual.values())
        assert t.user_attrs[FLOPS_RATIO_KEY] <= 0.5 + 1e-6
        assert 0.0 < t.user_attrs[PARAMS_RATIO_KEY] <= 1.0
        assert t.user_attrs[TOP1_KEY] == t.value
        assert t.user_attrs[STAGE_KEY] >= 0
    # The sampler is given the objective's network key: no trial repeats a network.
    networks = {
        tuple(
            keep_count(16 * 2 ** (int(name[len("layer")]) - 1), r)
            for name, r in sorted(t.user_attrs[ACTUAL_PARAMS_KEY].items())
        )
        for t in trials
    }
    assert len(networks) == len(trials)

    model, meta = load_pruned(cli_study["root"] / "best.pt")
    assert meta["trial_number"] == study.best_trial.number
    flops = count_flops(model, (1, 1, 32, 32))
    assert flops == meta["flops"] <= 0.5 * meta["original_flops"] + 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


@needs_pipeline
def test_bad_study_is_refused_and_left_intact(
    cli_study: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    root: Path = cli_study["root"]
    db: Path = cli_study["db"]
    # A study of another tool, with other parameter names, in the same storage.
    foreign = optuna.create_study(study_name="foreign", storage=cli_study["storage"])
    foreign.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    before = _digest(db)
    n_before = len(optuna.load_study(study_name=STUDY, storage=cli_study["storage"]).trials)

    # Same study name, another model: refused from the stored settings.
    _one_line_error(
        capsys,
        prune_args(root, **{"--model": "resnet32"}),
        match="was made with model='resnet20'",
        prefix="optuna-bocr prune: error:",
    )
    # Same study name, another FLOPs target.
    _one_line_error(
        capsys,
        prune_args(root, **{"--flops-ratio": "0.3"}),
        match="flops_target=0.5",
        prefix="optuna-bocr prune: error:",
    )
    # Same study name, the other budget rule.
    other = "wall" if DEFAULT_BUDGET_RULE == "scale" else "scale"
    _one_line_error(
        capsys,
        prune_args(root, **{"--budget-rule": other}),
        match=f"budget_rule={DEFAULT_BUDGET_RULE!r} (now {other!r})",
        prefix="optuna-bocr prune: error:",
    )
    # A study whose parameters are not this model's layers.
    _one_line_error(
        capsys,
        prune_args(root, **{"--study-name": "foreign"}),
        match="not a single-objective maximisation study",
        prefix="optuna-bocr prune: error:",
    )
    maxi = optuna.create_study(
        study_name="foreign-max", storage=cli_study["storage"], direction="maximize"
    )
    maxi.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    before = _digest(db)
    _one_line_error(
        capsys,
        prune_args(root, **{"--study-name": "foreign-max"}),
        match="searches other parameters",
        prefix="optuna-bocr prune: error:",
    )
    # Another cluster schedule on the same study: the sampler refuses to mix two searches.
    from optuna_bocr import BOCRSampler

    if hasattr(BOCRSampler, "check_study"):
        _one_line_error(
            capsys,
            prune_args(root, **{"--n-clusters": "2"}),
            match=f"study {STUDY!r}",
            prefix="optuna-bocr prune: error:",
        )
    # An infeasible budget (cached baseline, new study name): no study is created.
    _one_line_error(
        capsys,
        prune_args(root, **{"--study-name": "infeasible", "--flops-ratio": "0.02"}),
        match="0.02",
        prefix="optuna-bocr prune: error:",
    )
    assert "infeasible" not in optuna.get_all_study_names(cli_study["storage"])
    assert _digest(db) == before
    assert len(optuna.load_study(study_name=STUDY, storage=cli_study["storage"]).trials) == (
        n_before
    )


@needs_pipeline
def test_a_study_that_stored_no_budget_rule_was_searched_with_the_wall_rule(
    cli_study: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "old.db"
    shutil.copy(cli_study["db"], copy)
    storage = f"sqlite:///{copy}"
    study = optuna.load_study(study_name=STUDY, storage=storage)
    config = dict(study.user_attrs[STUDY_CONFIG_KEY])
    assert config.pop("budget_rule") == DEFAULT_BUDGET_RULE
    study.set_user_attr(STUDY_CONFIG_KEY, config)  # as earlier versions stored it
    before = copy.read_bytes()
    _one_line_error(
        capsys,
        prune_args(cli_study["root"], **{"--storage": storage, "--budget-rule": "scale"}),
        match="budget_rule='wall' (now 'scale')",
        prefix="optuna-bocr prune: error:",
    )
    assert copy.read_bytes() == before


@needs_pipeline
def test_rerun_resumes_up_to_n_trials(cli_study: dict[str, Any]) -> None:
    root: Path = cli_study["root"]
    proc = run_cli(prune_args(root, **{"--n-trials": N_TRIALS + 1}), cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{N_TRIALS} finished trial(s), running 1 more" in proc.stdout
    assert "Using cached baseline" in proc.stdout
    study = optuna.load_study(study_name=STUDY, storage=cli_study["storage"])
    assert len(study.trials) == N_TRIALS + 1


@needs_pipeline
def test_ctrl_c_prints_one_line_and_leaves_no_running_trial(cli_study: dict[str, Any]) -> None:
    root: Path = cli_study["root"]
    name = "interrupted"
    overrides = {"--study-name": name, "--n-trials": 50, "--export": root / f"{name}.pt"}
    proc = start_cli(prune_args(root, **overrides), cwd=root)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(f"Study {name!r}"):
            break
    storage = cli_study["storage"]
    deadline = time.monotonic() + 300
    while not optuna.load_study(study_name=name, storage=storage).get_trials(
        states=(optuna.trial.TrialState.RUNNING,)
    ):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # Ctrl-C in the middle of a trial.
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    message = f"Interrupted: re-run the same command to resume study {name!r}."
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert err.rstrip().endswith(message), err[-3000:]
    assert err.count(message) == 1
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)


@needs_pipeline
def test_killed_prune_worker_is_failed_and_retried(cli_study: dict[str, Any]) -> None:
    """The heartbeat of `prune`: a SIGKILLed worker's trial is failed and re-run by the next."""
    root: Path = cli_study["root"]
    name, n_trials = "killed", 3
    overrides = {
        "--study-name": name, "--n-trials": n_trials, "--heartbeat": 1,
        "--export": root / f"{name}.pt",
    }  # fmt: skip
    args = prune_args(root, **overrides)
    proc = start_cli(args, cwd=root)
    storage = cli_study["storage"]
    deadline = time.monotonic() + 300
    running: list[optuna.trial.FrozenTrial] = []
    while not running:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
        if name in optuna.get_all_study_names(storage):
            study = optuna.load_study(study_name=name, storage=storage)
            running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    dead = running[0].number

    again = run_cli(args, cwd=root)  # The same command, restarted.
    assert again.returncode == 0, again.stderr[-3000:]
    trials = optuna.load_study(study_name=name, storage=storage).trials
    states = {t.number: t.state for t in trials}
    assert states[dead] == optuna.trial.TrialState.FAIL  # Its heartbeat stopped.
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == dead]
    assert [t.state for t in retries] == [optuna.trial.TrialState.COMPLETE]
    finished = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == n_trials


def test_unstructured_fallback_flag(cli_study: dict[str, Any]) -> None:
    # The L1-importance densities of a briefly trained ResNet-20 do not separate its layers
    # with either distance (permutation test p ~ 0.7-0.95 on such models): the sampler says
    # so, naming the distance asked for. Without the flag (the shared run) it warns and its
    # first stage clusters as asked; with it, one ratio per layer (ResNet-20: 9) throughout.
    stderr = cli_study["stderr"]
    assert "The features (distance 'eu')" in stderr and "better than chance" in stderr, stderr
    shared = optuna.load_study(study_name=STUDY, storage=cli_study["storage"])
    assert shared.trials[0].user_attrs[N_CLUSTERS_KEY] == 3  # warned, clustered all the same

    root: Path = cli_study["root"]
    args = prune_args(root, **{"--n-trials": 2, "--study-name": "fallback"})
    at = args.index("--export")  # the stage sizes are all this asks: nothing to export
    args = args[:at] + args[at + 2 :] + ["--no-export", "--unstructured-fallback"]
    proc = run_cli([*args, "--distance", "js"], cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "The features (distance 'js')" in proc.stderr, proc.stderr[-3000:]
    assert "better than chance" in proc.stderr, proc.stderr[-3000:]
    study = optuna.load_study(study_name="fallback", storage=cli_study["storage"])
    assert {t.user_attrs[N_CLUSTERS_KEY] for t in study.trials} == {9}


@needs_pipeline
def test_export_finetune_plot_artifact(
    cli_study: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from optuna_bocr.pruning import load_pruned

    root: Path = cli_study["root"]
    out, png, art = root / "exp" / "m.pt", root / "exp" / "ratios.png", root / "artifacts"
    study = optuna.load_study(study_name=STUDY, storage=cli_study["storage"])
    code = main(
        [
            "export",
            "--quiet",
            "--storage",
            cli_study["storage"],
            "--study-name",
            STUDY,
            "--output",
            str(out),
            "--finetune-epochs",
            "1",
            "--finetune-images",
            "600",
            "--latency-batch",
            "8",
            "--test-size",
            "1000",
            "--plot",
            str(png),
            "--artifact-store",
            str(art),
        ]
    )
    assert code == 0
    stdout = capsys.readouterr().out
    for row in ("Original", "Pruned", "Fine-tuned", "Latency", "Saved", "Artifacts"):
        assert row in stdout, stdout
    assert "Test images  1000" in stdout
    model, meta = load_pruned(out)
    assert meta["trial_number"] == study.best_trial.number
    assert 0.0 <= meta["test_top1"] <= 100.0 and meta["finetune_epochs"] == 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metas = optuna.artifacts.get_all_artifact_meta(study)
    assert {m.filename for m in metas} >= {"m.pt", "ratios.png"}
    stored = {m.filename: m.artifact_id for m in metas}
    assert (art / stored["m.pt"]).read_bytes() == out.read_bytes()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 10)
    # An output path that cannot be written: refused before the work.
    _one_line_error(
        capsys,
        [
            "export",
            "--storage",
            cli_study["storage"],
            "--study-name",
            STUDY,
            "--output",
            str(root),
        ],
        match="is a directory",
        prefix="optuna-bocr export: error:",
    )
    assert "Rebuilding" not in capsys.readouterr().out
    # A trial that does not exist.
    _one_line_error(
        capsys,
        ["export", "--storage", cli_study["storage"], "--study-name", STUDY, "--trial", "999"],
        match="has no trial 999",
        prefix="optuna-bocr export: error:",
    )


def test_export_top_k_ships_the_best_fine_tuned(
    cli_study: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from optuna_bocr.keys import FINETUNED_KEY
    from optuna_bocr.pruning import load_pruned

    root: Path = cli_study["root"]
    out = root / "topk" / "m.pt"
    base = ["export", "--quiet", "--storage", cli_study["storage"], "--study-name", STUDY]
    # Without fine-tuning the candidates are re-scored on images the search did not score;
    # this baseline held out no more than the search's: refused before any write.
    _one_line_error(
        capsys,
        [*base, "--output", str(out), "--top-k", "2"],
        match="records no held-out images beyond the search's",
        prefix="optuna-bocr export: error:",
    )
    assert not out.exists()
    study = optuna.load_study(study_name=STUDY, storage=cli_study["storage"])
    before = dict(study.user_attrs.get(FINETUNED_KEY, {}))
    code = main(
        [
            *base,
            "--output",
            str(out),
            "--top-k",
            "2",
            "--finetune-epochs",
            "1",
            "--finetune-images",
            "300",
            "--latency-batch",
            "4",
            "--test-size",
            "300",
        ]
    )
    assert code == 0
    stdout = capsys.readouterr().out
    assert "shipped" in stdout, stdout
    after = optuna.load_study(study_name=STUDY, storage=cli_study["storage"]).user_attrs[
        FINETUNED_KEY
    ]
    table = {n: v for n, v in after.items() if before.get(n) != v}
    assert len(table) == 2  # the two candidates of this export
    best = max(table, key=lambda n: table[n]["val_top1"])
    _, meta = load_pruned(out)
    assert meta["trial_number"] == int(best)


def test_export_top_k_without_fine_tuning_ships_the_best_on_fresh_images(
    cli_study: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from optuna_bocr.keys import RESCORED_KEY
    from optuna_bocr.pruning import load_pruned

    root: Path = cli_study["root"]
    out = root / "rescore" / "m.pt"
    base = ["export", "--quiet", "--storage", cli_study["storage"], "--study-name", STUDY]
    # --rescore-images belongs to --top-k without fine-tuning: refused before any work.
    for extra in (["--rescore-images", "200"], ["--top-k", "2", "--finetune-epochs", "1",
                                                 "--rescore-images", "200"]):  # fmt: skip
        _one_line_error(
            capsys,
            [*base, "--output", str(out), *extra],
            match="--rescore-images is for --top-k",
            prefix="optuna-bocr export: error:",
        )
    assert not out.exists()
    code = main(
        [*base, "--output", str(out), "--top-k", "3", "--rescore-images", "200",
         "--latency-batch", "4", "--test-size", "200"]
    )  # fmt: skip
    assert code == 0
    stdout = capsys.readouterr().out
    assert "200 validation images the search did not score" in stdout, stdout
    assert "shipped (best on the fresh images)" in stdout, stdout
    study = optuna.load_study(study_name=STUDY, storage=cli_study["storage"])
    table = study.user_attrs[RESCORED_KEY]
    assert len(table) == 3 and {e["n_images"] for e in table.values()} == {200}
    for number, entry in table.items():
        assert entry["search_top1"] == study.trials[int(number)].value
    best = max(table, key=lambda n: (table[n]["rescore_top1"], table[n]["search_top1"]))
    _, meta = load_pruned(out)
    assert meta["trial_number"] == int(best)
