"""The benchmarks' BOCR variants build the samplers their names promise."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
import pytest

from benchmarks import _methods
from optuna_bocr import BOCRSampler

NAMES = [f"layer{i}" for i in range(9)]
SPACE = {n: FloatDistribution(0.1, 1.0) for n in NAMES}
# Three tight, well separated groups of three: the features' clusters are {0,1,2}, {3,4,5}, ...
FEATURES = {n: np.array([float(i // 3), 0.01 * i]) for i, n in enumerate(NAMES)}


def _make(method: str, seed: int = 0) -> BOCRSampler:
    sampler, settings = _methods.make_sampler(
        method, seed=seed, search_space=SPACE, features=FEATURES, n_trials=60, distance="st"
    )
    assert isinstance(sampler, BOCRSampler)
    assert settings["class"] == "BOCRSampler"
    return sampler


def test_defaults_cluster_on_the_features() -> None:
    sampler = _make("bocr")
    assert sampler.clusters(0) == [NAMES[0:3], NAMES[3:6], NAMES[6:9]]
    assert sampler.stage_sizes == [3, 9]


def test_flat_has_one_variable_per_parameter_from_the_start() -> None:
    assert _make("bocr-flat").stage_sizes == [9]


def test_random_clusters_ignore_the_features_and_follow_the_seed() -> None:
    groupings = [_make("bocr-random", seed=s).clusters(0) for s in range(4)]
    assert all(len(g) == 3 and sorted(sum(g, [])) == sorted(NAMES) for g in groupings)
    assert any(g != [NAMES[0:3], NAMES[3:6], NAMES[6:9]] for g in groupings)
    assert _make("bocr-random", seed=2).clusters(0) == groupings[2]
    assert _make("bocr-random").structure_pvalue is None  # not tested: no verdict to report


@pytest.mark.parametrize(("method", "observe"), [("bocr", False), ("bocr-actual", True)])
def test_what_the_gp_observes(method: str, observe: bool) -> None:
    _, settings = _methods.make_sampler(
        method, seed=0, search_space=SPACE, features=FEATURES, n_trials=60, distance="st"
    )
    assert settings.get("observe_actual", False) == observe


@pytest.mark.parametrize(
    ("method", "trust"),
    [
        ("bocr", True),
        ("bocr-trust", True),
        ("bocr-probe", True),
        ("bocr-kl", True),
        ("bocr-width", True),
    ],
)
def test_trust_region_is_the_default(method: str, trust: bool) -> None:
    sampler, _ = _methods.make_sampler(
        method, seed=0, search_space=SPACE, features=FEATURES, n_trials=60, distance="st"
    )
    assert sampler._plan.trust_region is trust  # type: ignore[attr-defined]
    paper, _ = _methods.make_sampler(
        "bocr-direct", seed=0, search_space=SPACE, features=FEATURES, n_trials=60, distance="st"
    )
    assert paper._plan.trust_region is False  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("method", "improvement"),
    [
        ("bocr", 0.0),
        ("bocr-any", 0.0),
        ("bocr-quick", 1e-3),
        ("bocr-ts", 1e-3),
        ("bocr-trust", 1e-3),
    ],
)
def test_only_the_any_gain_rows_count_any_gain(method: str, improvement: float) -> None:
    # Rows committed before the default changed keep their 0.1%, so they reproduce.
    sampler, _ = _methods.make_sampler(
        method, seed=0, search_space=SPACE, features=FEATURES, n_trials=60, distance="st"
    )
    assert sampler._plan.trust_region_improvement == improvement  # type: ignore[attr-defined]


def test_gp_priors_is_gpsampler_fitted_under_bocrs_priors() -> None:
    import torch

    from benchmarks._gp_priors import bocr_log_prior
    from optuna_bocr.sampler._gp import lengthscale_prior_loc

    sampler, settings = _methods.make_sampler("gp-priors", seed=3, search_space=SPACE, n_trials=60)
    assert isinstance(sampler, optuna.samplers.GPSampler) and settings["log_prior"] == "bocr"
    default, _ = _methods.make_sampler("gp", seed=3, search_space=SPACE, n_trials=60)
    assert sampler._log_prior is bocr_log_prior
    assert default._log_prior is not bocr_log_prior

    # Log density of BOCR's lengthscale prior peaks at exp(loc - scale^2) in 9 dimensions.
    def log_prior(lengthscale: float) -> float:
        gpr = SimpleNamespace(
            inverse_squared_lengthscales=torch.full((9,), lengthscale**-2, dtype=torch.float64),
            noise_var=torch.tensor(0.01, dtype=torch.float64),
        )
        return float(bocr_log_prior(gpr))

    mode = math.exp(lengthscale_prior_loc(9) - 3.0)
    assert log_prior(mode) > max(log_prior(0.5 * mode), log_prior(2.0 * mode))
    # A study runs with it (startup design, then GP proposals fitted under the prior).
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: sum((t.suggest_float(n, 0.1, 1.0) - 0.5) ** 2 for n in NAMES), 14)
    assert len(study.trials) == 14 and study.best_value < 0.5


def test_gp_priors_sobol_starts_with_bocrs_design_then_its_own_gp() -> None:
    from benchmarks._gp_priors import SobolStart

    def params(method: str, n_trials: int) -> np.ndarray:
        sampler, _ = _methods.make_sampler(
            method, seed=3, search_space=SPACE, features=FEATURES, n_trials=60, distance="st"
        )
        study = optuna.create_study(sampler=sampler)
        study.optimize(
            lambda t: sum((t.suggest_float(n, 0.1, 1.0) - 0.5) ** 2 for n in NAMES), n_trials
        )
        return np.array([[t.params[n] for n in NAMES] for t in study.trials])

    sampler, settings = _methods.make_sampler(
        "gp-priors-sobol", seed=3, search_space=SPACE, n_trials=60
    )
    assert isinstance(sampler, SobolStart) and settings["startup"] == "sobol"
    sobol, flat, random_start = (
        params("gp-priors-sobol", 12),
        params("bocr-flat", 12),
        params("gp-priors", 12),
    )
    # The same 10 start-up points as BOCR with one variable per parameter (same seed) ...
    np.testing.assert_allclose(sobol[:10], flat[:10])
    assert np.abs(sobol[:10] - random_start[:10]).max() > 0.1
    # ... then GPSampler's own proposals, inside the space.
    assert np.abs(sobol[10:] - flat[10:]).max() > 1e-6
    assert ((sobol >= 0.1) & (sobol <= 1.0)).all()


def test_bocr_acquisition_optimizer_finds_the_maximum_and_runs_in_gpsampler() -> None:
    import torch

    from benchmarks._gp_priors import use_bocr_acquisition_optimizer

    centre = np.array([0.2, 0.9, 0.55])

    class Quadratic:  # an acquisition function with its maximum at ``centre``
        search_space = SimpleNamespace(dim=3)

        def eval_acqf(self, x: torch.Tensor) -> torch.Tensor:
            return -((x - torch.from_numpy(centre)) ** 2).sum(-1)

        def eval_acqf_no_grad(self, x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return self.eval_acqf(torch.from_numpy(x)).numpy()

    gp = optuna.samplers.GPSampler(seed=0)
    use_bocr_acquisition_optimizer(gp, seed=0)
    found = gp._optimize_acqf(Quadratic(), np.array([[0.5, 0.5, 0.5]]))
    np.testing.assert_allclose(found, centre, atol=1e-4)

    sampler, settings = _methods.make_sampler(
        "gp-bocr-acqf", seed=3, search_space=SPACE, n_trials=60
    )
    assert settings["acquisition_optimizer"] == "bocr" and settings["startup"] == "sobol"
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: sum((t.suggest_float(n, 0.1, 1.0) - 0.5) ** 2 for n in NAMES), 14)
    assert len(study.trials) == 14 and study.best_value < 0.5


def test_a_method_whose_package_is_missing_is_refused_before_any_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from benchmarks import synthetic

    _methods.check_packages(["cmaes", "bocr", "gp"])  # installed with the dev extra
    monkeypatch.setitem(_methods.METHOD_PACKAGES, "cmaes", "no_such_package_here")
    with pytest.raises(SystemExit, match=r"no_such_package_here package is missing .*'cmaes'"):
        synthetic.main(["--tasks", "grouped27", "--methods", "cmaes", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


def test_paper_schedule_is_the_published_one_at_any_budget() -> None:
    from optuna_bocr import PAPER_SCHEDULE

    names = [f"layer{i}" for i in range(27)]
    space = {n: FloatDistribution(0.1, 1.0) for n in names}
    features = {n: np.array([float(i // 9), 0.01 * i]) for i, n in enumerate(names)}
    schedules = []
    for n_trials in (60, 100, 200):
        sampler, settings = _methods.make_sampler(
            "bocr-paper", seed=0, search_space=space, features=features, n_trials=n_trials
        )
        assert isinstance(sampler, BOCRSampler) and sampler.stage_sizes == [3, 9, 27]
        schedules.append({k: settings[k] for k in PAPER_SCHEDULE})
    assert schedules == [PAPER_SCHEDULE] * 3
    # At 200 trials the budget-scaled gradual rollback is the same schedule.
    assert _methods.rollback_schedule(200, "bocr-gradual") == dict(PAPER_SCHEDULE)
    assert _methods.rollback_schedule(100, "bocr-gradual")["rollback_at"] == (50, 75)


def test_synthetic_report_gives_the_trial_bocr_reached_its_last_stage(tmp_path: Path) -> None:
    import json

    from benchmarks import synthetic

    out = tmp_path / "out"
    synthetic.main(
        ["--tasks", "misleading27", "--methods", "bocr,random", "--seeds", "1,"]
        + ["--n-trials", "30", "--out", str(out)]
    )
    record = json.loads(next(out.rglob("*bocr*seed1.json")).read_text())
    stages = [t["stage"] for t in record["trials"]]
    assert stages[0] == 0 and max(stages) == 1  # the run rolled back within 30 trials
    opened = stages.index(1)
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
        for line in (out / "results.md").read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| method")
    }
    bocr_row = next(cells for label, cells in rows.items() if label.startswith("BOCR"))
    assert bocr_row[-1] == f"{opened} ({opened}-{opened})"
    assert rows["RandomSampler"][-1] == "-"
