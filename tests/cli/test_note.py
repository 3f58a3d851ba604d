"""The dashboard note and the plots, from a real SQLite study whose trials carry BOCR's attrs."""

from __future__ import annotations

import inspect
from pathlib import Path

import optuna
from optuna_dashboard._note import get_note_from_system_attrs
import pytest

from optuna_bocr.cli import save_bocr_note
from optuna_bocr.cli._common import DEFAULT_LENGTHSCALES
from optuna_bocr.cli._common import DEFAULT_OUTCOME_TRANSFORM
from optuna_bocr.cli._common import DEFAULT_PATIENCE_GAIN
from optuna_bocr.cli._common import DEFAULT_TRUST_REGION
from optuna_bocr.cli._common import LENGTHSCALES
from optuna_bocr.cli._common import OUTCOME_TRANSFORMS
from optuna_bocr.cli._note import bocr_note
from optuna_bocr.cli._note import stage_openings
from optuna_bocr.cli._plots import have_matplotlib
from optuna_bocr.cli._plots import plot_history
from optuna_bocr.cli._plots import plot_layer_ratios
from optuna_bocr.cli._publish import upload_trial_files
from optuna_bocr.keys import N_CLUSTERS_KEY
from optuna_bocr.keys import STAGE_KEY
from optuna_bocr.keys import STUDY_CONFIG_KEY
from optuna_bocr.keys import SYSTEM_ATTR_PREFIX

NAMES = ["conv_a", "conv_b", "conv_c", "conv_d"]
CLUSTERS = [[["conv_a", "conv_b"], ["conv_c", "conv_d"]], [[n] for n in NAMES]]


def _study(tmp_path: Path) -> optuna.Study:
    """Six trials; trial 3 opens stage 1 with recorded bounds, as BOCRSampler records it."""
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'note.db'}",
        study_name="note",
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    study.set_user_attr(STUDY_CONFIG_KEY, {"flops_target": 0.5, "lbound": 0.1})
    storage = study._storage

    def objective(trial: optuna.Trial) -> float:
        xs = [trial.suggest_float(n, 0.1, 1.0) for n in NAMES]
        stage = 0 if trial.number < 3 else 1
        trial.set_user_attr(STAGE_KEY, stage)
        trial.set_user_attr(N_CLUSTERS_KEY, 2 if stage == 0 else 4)
        if trial.number == 3:
            record = {"stage": 1, "lower": [0.2, 0.3, 0.4, 0.5], "upper": [0.6, 0.7, 0.8, 0.9]}
            storage.set_trial_system_attr(
                trial._trial_id, SYSTEM_ATTR_PREFIX + "stage_open", record
            )
        return 50.0 + 10 * trial.number - sum(xs)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=6)
    return study


def test_note_lists_clusters_stages_bounds_and_budget(tmp_path: Path) -> None:
    study = _study(tmp_path)
    assert stage_openings(study.trials) == {0: 0, 1: 3}
    text = bocr_note(
        study,
        stage_sizes=[2, 4],
        clusters=CLUSTERS,
        structure_pvalue=0.05,
        schedule={"rollback_at": [3], "patience": 2, "patience_from": [2]},
        artifacts=["trial5-model.pt"],
    )
    assert text.startswith("# BOCR: how this study searched\n")
    assert "Best: **trial 5**" in text
    assert "**p = 0.050**: the layer features group the layers into 2 clusters better" in text
    assert "| 0 | 2 | 0 |" in text and "| 1 | 4 | 3 |" in text
    assert "- **Cluster 1** (2 layers): `conv_a`, `conv_b`" in text
    assert "conv_a 0.20-0.60" in text and "conv_d 0.50-0.90" in text
    assert "stage 1 opens at trial 3 at the latest (from trial 2 on, after 2 trials" in text
    assert "keeps at most **0.5** of the original FLOPs" in text and "lbound = 0.1" in text
    assert "decided in network order" in text  # no budget_rule stored: the wall rule
    assert "`trial5-model.pt`" in text
    study.set_user_attr(
        STUDY_CONFIG_KEY, {"flops_target": 0.5, "lbound": 0.1, "budget_rule": "scale"}
    )
    scaled = bocr_note(study, stage_sizes=[2, 4], clusters=CLUSTERS, structure_pvalue=0.05)
    assert "multiplied by one factor" in scaled and "network order" not in scaled
    assert "Each new stage searches the full range" in text
    assert "at the ratios the sampler proposed" in text
    auto = bocr_note(
        study,
        stage_sizes=[2, 4],
        clusters=CLUSTERS,
        structure_pvalue=0.05,
        schedule={
            "rollback_at": [3],
            "patience": "auto",
            "narrow_on_rollback": True,
            "observe_actual": True,
            "trust_region": True,
            "lengthscales": "shared",
            "outcome_transform": "yeo-johnson",
            "patience_gain": 0.05,
        },
    )
    assert "one GP lengthscale for all of them after the first stage" in auto
    assert "lengthscale" not in text
    assert "warped by a fitted Yeo-Johnson transform" in auto and "warped" not in text
    assert "or earlier, once max(6, 2 x the stage's variables) trials" in auto
    assert "beats the last one by more than 0.05 x that best's lead over the median" in auto
    assert "lead over the median" not in text
    assert "at its ratios after the FLOPs budget rule" in auto
    assert "inside the range of the 10 best trials" in auto
    assert "a box around the best trial" in auto and "a box around" not in text
    late = bocr_note(
        study,
        stage_sizes=[2, 4],
        clusters=CLUSTERS,
        structure_pvalue=0.05,
        schedule={"rollback_at": [3], "outcome_transform": "yeo-johnson-after-first"},
    )
    assert "its GP fitted after the first stage on the values warped" in late
    high = bocr_note(study, stage_sizes=[2, 4], clusters=CLUSTERS, structure_pvalue=0.6)
    assert "do not group the layers better than chance" in high
    assert "Not tested" in bocr_note(study, stage_sizes=[4], clusters=CLUSTERS[1:])


def test_note_of_another_sampler_is_saved_for_the_dashboard(tmp_path: Path) -> None:
    study = _study(tmp_path)
    text = save_bocr_note(study, optuna.samplers.RandomSampler())
    assert "used the `RandomSampler` sampler: one variable per layer" in text
    system_attrs = study._storage.get_study_system_attrs(study._study_id)
    assert get_note_from_system_attrs(system_attrs, None)["body"] == text


@pytest.mark.skipif(not have_matplotlib(), reason="matplotlib not installed")
def test_plots_are_png(tmp_path: Path) -> None:
    study = _study(tmp_path)
    history = plot_history(study, tmp_path / "h.png", baseline=60.0)
    ratios = plot_layer_ratios(
        NAMES, [16, 16, 32, 32], [8, 4, 30, 10], tmp_path / "r.png", clusters=CLUSTERS[0]
    )
    for path in (history, ratios):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_files_are_uploaded_once_per_name(tmp_path: Path) -> None:
    study = _study(tmp_path)
    model = tmp_path / "best.pt"
    model.write_bytes(b"weights")
    for _ in range(2):  # a resumed study whose best trial did not change
        names = upload_trial_files(study, tmp_path / "store", 5, {"model.pt": model})
        assert names == ["trial5-model.pt"]
    metas = optuna.artifacts.get_all_artifact_meta(study)
    assert [m.filename for m in metas] == ["trial5-model.pt"]
    assert (tmp_path / "store" / metas[0].artifact_id).read_bytes() == b"weights"


def test_prune_schedule_options_reach_the_sampler_settings() -> None:
    from optuna_bocr.cli import build_parser
    from optuna_bocr.cli._prune import PruneSettings
    from optuna_bocr.cli._search import rollback_settings

    def settings(*extra: str) -> dict:
        args = build_parser().parse_args(["prune", "--n-trials", "200", *extra])
        return rollback_settings(PruneSettings.from_args(args), 27)

    default = settings()
    assert default["patience"] == "auto" and default["patience_from"] is None
    assert default["narrow_on_rollback"] is False and default["rollback_at"] == [100, 150]
    assert default["observe_actual"] is False
    assert default["trust_region"] is DEFAULT_TRUST_REGION
    assert default["lengthscales"] == DEFAULT_LENGTHSCALES
    assert settings("--lengthscales", "shared")["lengthscales"] == "shared"
    assert default["outcome_transform"] == DEFAULT_OUTCOME_TRANSFORM
    assert settings("--outcome-transform", "rank")["outcome_transform"] == "rank"
    assert default["patience_gain"] == DEFAULT_PATIENCE_GAIN
    assert settings("--patience-gain", "0")["patience_gain"] == 0.0
    assert settings("--patience", "20", "--patience-gain", "0.1")["patience_gain"] == 0.1
    late = settings("--outcome-transform", "yeo-johnson-after-first")
    assert late["outcome_transform"] == "yeo-johnson-after-first"
    paper = settings(
        "--patience", "20", "--narrow-on-rollback", "--observe-actual", "--no-trust-region"
    )
    assert paper["patience"] == 20 and paper["patience_from"] == [80, 120]
    assert paper["narrow_on_rollback"] is True and paper["observe_actual"] is True
    assert paper["trust_region"] is False
    # The command line's default is the sampler's (kept apart so that --help needs no torch).
    from optuna_bocr import BOCRSampler

    sampler_default = inspect.signature(BOCRSampler).parameters["trust_region"].default
    assert DEFAULT_TRUST_REGION is sampler_default
    lengthscales = inspect.signature(BOCRSampler).parameters["lengthscales"]
    assert DEFAULT_LENGTHSCALES == lengthscales.default
    from optuna_bocr.sampler._plan import LENGTHSCALE_MODES

    assert LENGTHSCALES == LENGTHSCALE_MODES
    gain = inspect.signature(BOCRSampler).parameters["patience_gain"]
    assert DEFAULT_PATIENCE_GAIN == gain.default
    outcome = inspect.signature(BOCRSampler).parameters["outcome_transform"]
    assert DEFAULT_OUTCOME_TRANSFORM == outcome.default
    from optuna_bocr.sampler._outcome import OUTCOME_CHOICES as SAMPLER_TRANSFORMS

    assert OUTCOME_TRANSFORMS == SAMPLER_TRANSFORMS


def test_a_half_written_trial_does_not_look_like_another_model(tmp_path: Path) -> None:
    from optuna.distributions import FloatDistribution

    from optuna_bocr.cli._common import CLIError
    from optuna_bocr.cli._search import check_param_names

    url = f"sqlite:///{tmp_path / 'p.db'}"
    study = optuna.create_study(storage=url, study_name="p")
    names = ["a", "b", "c"]
    killed = study.ask()  # a worker killed after writing one of its parameters
    killed.suggest_float("a", 0.1, 1.0)
    check_param_names(study, names, url)  # left RUNNING with part of them: not refused
    study.add_trial(
        optuna.trial.create_trial(
            params={"a": 0.5, "b": 0.5},
            distributions={n: FloatDistribution(0.1, 1.0) for n in ("a", "b")},
            value=1.0,
        )
    )
    with pytest.raises(CLIError, match="missing \\['c'\\]"):
        check_param_names(study, names, url)  # a finished trial without "c": refused
    # A name the model does not have proves another model, finished or not.
    with pytest.raises(CLIError, match="trial 0: unexpected \\['a'\\]"):
        check_param_names(study, ["b", "c"], url)
