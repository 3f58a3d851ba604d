"""Shared harness of the benchmarks: timing, bookkeeping and tables.

Used by ``benchmarks/synthetic.py`` and ``benchmarks/pruning.py``. Nothing here knows about
a particular objective: a *run* is one (task, method, seed) study, recorded as a JSON file
with one entry per trial (value, time spent in the sampler, time spent in the objective).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
import functools
import json
import math
import os
from pathlib import Path
import re
import time
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import Study
from optuna.trial import FrozenTrial
from optuna.trial import TrialState

from optuna_bocr.keys import N_CLUSTERS_KEY
from optuna_bocr.keys import STAGE_KEY

SAMPLER_SECONDS_ATTR = "bench:sampler_seconds"
"""User attr written by :class:`TimedSampler`: seconds spent in the sampler for the trial."""

OBJECTIVE_SECONDS_ATTR = "bench:objective_seconds"
"""User attr written by the benchmark objectives: seconds spent evaluating the trial."""

# -- Timing ----------------------------------------------------------------------------------


class TimedSampler(BaseSampler):
    """Wraps a sampler and measures the time spent in it, per trial.

    Time in ``before_trial``, ``infer_relative_search_space``, ``sample_relative``,
    ``sample_independent`` and ``after_trial`` is summed per trial and written as the user attr
    :data:`SAMPLER_SECONDS_ATTR` when the trial is told (so it survives in RDB storage and a
    resumed study keeps the times of earlier trials).
    """

    def __init__(self, inner: BaseSampler) -> None:
        self.inner = inner
        self._seconds: dict[int, float] = {}

    def _add(self, number: int, seconds: float) -> None:
        self._seconds[number] = self._seconds.get(number, 0.0) + seconds

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:  # noqa: D102
        t0 = time.perf_counter()
        self.inner.before_trial(study, trial)
        self._add(trial.number, time.perf_counter() - t0)

    def infer_relative_search_space(  # noqa: D102
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        t0 = time.perf_counter()
        out = self.inner.infer_relative_search_space(study, trial)
        self._add(trial.number, time.perf_counter() - t0)
        return out

    def sample_relative(  # noqa: D102
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        out = self.inner.sample_relative(study, trial, search_space)
        self._add(trial.number, time.perf_counter() - t0)
        return out

    def sample_independent(  # noqa: D102
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        t0 = time.perf_counter()
        out = self.inner.sample_independent(study, trial, param_name, param_distribution)
        self._add(trial.number, time.perf_counter() - t0)
        return out

    def after_trial(  # noqa: D102
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        t0 = time.perf_counter()
        self.inner.after_trial(study, trial, state, values)
        total = self._seconds.pop(trial.number, 0.0) + time.perf_counter() - t0
        study._storage.set_trial_user_attr(trial._trial_id, SAMPLER_SECONDS_ATTR, float(total))

    def reseed_rng(self) -> None:  # noqa: D102
        self.inner.reseed_rng()


# -- Runs ------------------------------------------------------------------------------------


def run_path(out: Path, task: str, method: str, seed: int) -> Path:
    """Path of the JSON record of one (task, method, seed) run."""
    return out / "runs" / f"{task}__{method}__seed{seed}.json"


def parse_list(
    text: str, choices: Sequence[str] | None = None, all_choices: Sequence[str] | None = None
) -> list[str]:
    """Split a comma-separated CLI list and check the items.

    ``"all"`` stands for ``all_choices`` (default: every choice).
    """
    items = [x.strip() for x in text.split(",") if x.strip()]
    if choices is not None:
        if items == ["all"]:
            return list(all_choices if all_choices is not None else choices)
        bad = [x for x in items if x not in choices]
        if bad:
            raise SystemExit(f"unknown value(s) {bad}; choose from {', '.join(choices)}")
    return items


def parse_seeds(text: str, flag: str = "--seeds") -> list[int]:
    """``"5"`` -> seeds 0..4; ``"0,3,7"`` -> those seeds; ``"2-4"`` -> 2, 3, 4; ``"4,"`` -> 4.

    Raises:
        SystemExit: With one line, for any other text, for no seed (``"0"``, ``"4-2"``), and
            for a list that names a seed twice (it would run, or count, one study twice);
            the line names the option as ``flag``.
    """
    text = text.strip()
    seeds: list[int] = []
    if re.fullmatch(r"\d+", text):
        seeds = list(range(int(text)))
    elif match := re.fullmatch(r"(\d+)-(\d+)", text):
        seeds = list(range(int(match[1]), int(match[2]) + 1))
    elif re.fullmatch(r"\d+(\s*,\s*\d+)*\s*,?", text):
        seeds = [int(x) for x in text.split(",") if x.strip()]
        twice = sorted({s for s in seeds if seeds.count(s) > 1})
        if twice:
            raise SystemExit(f"{flag} {text!r} names seed(s) {twice} twice; name each once")
    if not seeds:
        raise SystemExit(
            f"{flag} {text!r}: give N >= 1 (seeds 0..N-1), A-B with A <= B, or A,B,..."
        )
    return seeds


def journal_rows(spec: str, tool: str) -> tuple[str, list[str]]:
    """``"JOURNAL:METHOD[,METHOD...]"`` -> (journal path, methods); ``SystemExit`` if bad.

    Refuses a journal file that does not exist (a ``JournalFileBackend`` would create it).
    """
    path, _, methods = spec.rpartition(":")
    if not path or not methods:
        raise SystemExit(f"{tool}: expected JOURNAL:METHOD[,METHOD...], got {spec!r}")
    if not os.path.isfile(path):
        raise SystemExit(f"{tool}: {path}: no such journal file")
    return path, methods.split(",")


@functools.cache
def _journal(path: str) -> JournalStorage:
    """One storage per journal file and process: each new one replays the whole log."""
    return JournalStorage(JournalFileBackend(path))


def journal_studies(
    path: str, prefix: str, method: str, seeds: Iterable[int]
) -> dict[int, list[FrozenTrial]]:
    """Seed -> complete trials in trial order, of each ``<prefix>-<method>-seed<s>`` in a journal.

    Seeds without a study are left out.
    """
    storage = _journal(path)
    out = {}
    for seed in seeds:
        try:
            study = optuna.load_study(study_name=f"{prefix}-{method}-seed{seed}", storage=storage)
        except KeyError:
            continue
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        out[seed] = sorted(done, key=lambda t: t.number)
    return out


def trial_records(study: Study) -> list[dict[str, Any]]:
    """Per-trial records of a study.

    Each record: number, state, value, sampler and objective seconds, trial wall time, and the
    BOCR stage and number of clusters (None for other samplers).
    """
    records = []
    for t in study.get_trials(deepcopy=False):
        wall = None
        if t.datetime_start is not None and t.datetime_complete is not None:
            wall = (t.datetime_complete - t.datetime_start).total_seconds()
        records.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": None if t.value is None else float(t.value),
                "sampler_seconds": t.user_attrs.get(SAMPLER_SECONDS_ATTR),
                "objective_seconds": t.user_attrs.get(OBJECTIVE_SECONDS_ATTR),
                "wall_seconds": wall,
                "stage": t.user_attrs.get(STAGE_KEY),
                "n_clusters": t.user_attrs.get(N_CLUSTERS_KEY),
            }
        )
    return records


def stage_starts(records: Iterable[Mapping[str, Any]]) -> dict[int, int]:
    """``{stage: number of its first trial}`` from per-trial records (see :func:`trial_records`).

    Empty for samplers that record no BOCR stage.
    """
    firsts: dict[int, int] = {}
    for r in records:
        if r.get("stage") is not None:
            firsts.setdefault(int(r["stage"]), int(r["number"]))
    return firsts


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (write to a temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def load_runs(out: Path) -> list[dict[str, Any]]:
    """Load every run record under ``out/runs``."""
    runs = []
    for p in sorted((out / "runs").glob("*.json")):
        runs.append(json.loads(p.read_text()))
    return runs


def best_so_far(values: Iterable[float | None], maximize: bool = True) -> np.ndarray:
    """Best-so-far curve over trials (failed trials, ``None``, repeat the previous best)."""
    out = []
    best = -math.inf if maximize else math.inf
    for v in values:
        if v is not None and math.isfinite(v):
            best = max(best, v) if maximize else min(best, v)
        out.append(best)
    return np.asarray(out, dtype=float)


def first_reaching(curve: np.ndarray, threshold: float, maximize: bool = True) -> int | None:
    """1-based trial count at which a best-so-far curve first reaches ``threshold``."""
    hit = curve >= threshold if maximize else curve <= threshold
    idx = np.flatnonzero(hit)
    return int(idx[0]) + 1 if idx.size else None


def paired_difference(
    a: Mapping[int, np.ndarray],
    b: Mapping[int, np.ndarray],
    at: int,
    *,
    n_boot: int = 4000,
    seed: int = 0,
) -> tuple[float, float, float, int, int] | None:
    """Per-seed paired difference ``a - b`` of best-so-far curves after ``at`` trials.

    Args:
        a: Seed -> best-so-far curve of one method.
        b: Seed -> best-so-far curve of the method it is compared with.
        at: Trial count (1-based) at which the curves are compared.
        n_boot: Bootstrap resamples of the seeds.
        seed: Seed of the bootstrap.

    Returns:
        ``(mean, low, high, n_positive, n_seeds)``: the mean difference over the seeds both
        methods ran (to ``at`` trials), the 95% percentile bootstrap interval of that mean,
        how many seeds have a positive difference and how many seeds there are; ``None`` if
        no seed is shared.
    """
    shared = sorted(s for s in a if s in b and len(a[s]) >= at and len(b[s]) >= at)
    if not shared:
        return None
    diff = np.array([float(a[s][at - 1] - b[s][at - 1]) for s in shared])
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), float(low), float(high), int((diff > 0).sum()), len(diff)


def median_count(counts: Sequence[int | None], n_trials: int) -> str:
    """Median of trial counts where ``None`` (never reached) counts as infinity."""
    vals = sorted(math.inf if c is None else c for c in counts)
    if not vals:
        return "-"
    med = float(np.median(vals)) if all(math.isfinite(v) for v in vals) else None
    if med is None:
        k = len(vals)
        lo, hi = vals[(k - 1) // 2], vals[k // 2]
        if math.isinf(lo) or math.isinf(hi):
            return f">{n_trials}"
        med = (lo + hi) / 2
    n_miss = sum(math.isinf(v) for v in vals)
    miss = f" ({n_miss}/{len(vals)} never)" if n_miss else ""
    return f"{med:g}{miss}"


def fmt_seconds(x: float | None) -> str:
    """Short human-readable duration."""
    if x is None or not math.isfinite(x):
        return "-"
    if x < 1e-3:
        return f"{x * 1e6:.0f} us"
    if x < 1:
        return f"{x * 1e3:.1f} ms"
    if x < 120:
        return f"{x:.1f} s"
    if x < 7200:
        return f"{x / 60:.1f} min"
    return f"{x / 3600:.2f} h"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
