"""Replay BOCR's stage patience on recorded runs: where each stage change would happen.

A stage change depends only on the values observed before it, so the trial at which a
recorded run would have changed stage under another ``patience_gain`` can be read from its
values with the sampler's own rule (:func:`optuna_bocr.sampler._schedule.should_advance`),
up to the first change: after a change that comes earlier than the recorded one, the run
would have searched differently and its later values are not known. A pruning row of a
journal, or a synthetic row of a ``raw.csv``::

    python -m benchmarks.stage_replay \\
        --journal benchmarks/results/pruning-resnet56-val5000-cpu/studies.log:bocr-key-yj \\
        --prefix pruning-resnet56-flops0.5-val5000-scale --seeds 0-4 --gains 0,0.05,0.1
    python -m benchmarks.stage_replay \\
        --raw benchmarks/results/synthetic-outcome/m27/raw.csv:bocr-yj \\
        --task misleading27 --stage-sizes 3,27 --seeds 0-39 --gains 0,0.05,0.1

Printed per seed: the trial that opened stage 1 in the run (from its trials' ``bocr:stage``
in a journal; ``?`` for a ``raw.csv``), and the trial that opens it under each gain (at most
the one after the last recorded; ``-``: none); then, per gain, the median and how many
seeds differ from the first gain's. Values are maximised, as both benchmarks record them;
the schedule is the sampler's default (``rollback_at=(100, 150)``, ``patience="auto"``) over
the run's stage sizes (a journal's studies record them).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import optuna

from benchmarks._common import journal_rows
from benchmarks._common import journal_studies
from benchmarks._common import parse_seeds
from optuna_bocr.sampler._schedule import make_schedule
from optuna_bocr.sampler._schedule import Schedule
from optuna_bocr.sampler._schedule import should_advance

Run = tuple[list[tuple[int, float]], list[int], int | None]
"""A recorded run: ``(trial number, value)`` of its complete trials in trial order, its stage
sizes, and the trial that opened stage 1 in it (``None``: not recorded, or none did)."""


def first_change(history: list[tuple[int, float]], sizes: list[int], gain: float) -> int | None:
    """The trial that opens stage 1 after ``history``, or ``None`` if none of its trials does.

    Args:
        history: ``(trial number, value)`` of the run's complete trials in trial order,
            larger is better (failed trials are left out, as the sampler leaves them out).
        sizes: The run's stage sizes (variables per stage; at least two stages).
        gain: The ``patience_gain`` replayed.
    """
    schedule: Schedule = make_schedule(
        dims=sizes[-1],
        n_clusters=sizes[0],
        bridge_clusters=list(sizes[1:-1]) or None,
        rollback_at=(100, 150, 200)[: len(sizes) - 1],
        patience="auto",
        patience_from=None,
        patience_gain=gain,
    )
    for number in range(1, history[-1][0] + 2):
        before = [(n, v) for n, v in history if n < number]
        if should_advance(schedule, stage=0, stage_start=0, trial_number=number, history=before):
            return number
    return None


def journal_runs(spec: str, prefix: str, seeds: list[int]) -> dict[int, Run]:
    """Seed -> run of one row of a pruning journal (stage sizes from its study's record)."""
    path, methods = journal_rows(spec, "stage_replay")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    runs: dict[int, Run] = {}
    for seed, trials in journal_studies(path, prefix, methods[0], seeds).items():
        study_id = storage.get_study_id_from_name(f"{prefix}-{methods[0]}-seed{seed}")
        sizes = storage.get_study_user_attrs(study_id)["sampler"]["stage_sizes"]
        opened = next((t.number for t in trials if t.user_attrs.get("bocr:stage", 0) > 0), None)
        history = [(t.number, t.value) for t in trials if t.value is not None]
        runs[seed] = (history, list(sizes), opened)
    return runs


def raw_runs(spec: str, task: str, sizes: list[int], seeds: list[int]) -> dict[int, Run]:
    """Seed -> run of one row of a synthetic ``raw.csv`` (no stage recorded there)."""
    path, _, method = spec.rpartition(":")
    if not Path(path).is_file():
        raise SystemExit(f"stage_replay: {path!r} is not a file (a synthetic run's raw.csv)")
    rows: dict[int, dict[int, float]] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r["task"] == task and r["method"] == method and int(r["seed"]) in seeds:
                rows.setdefault(int(r["seed"]), {})[int(r["trial"])] = float(r["value"])
    if not rows:
        raise SystemExit(f"stage_replay: {path} has no rows of {task!r}, {method!r}")
    return {s: ([(t, v[t]) for t in sorted(v)], sizes, None) for s, v in rows.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--journal", help="JOURNAL:METHOD (a pruning row)")
    src.add_argument("--raw", help="RAW_CSV:METHOD (a synthetic row)")
    p.add_argument("--prefix", help="--journal: study names <prefix>-<method>-seed<s>")
    p.add_argument("--task", help="--raw: the synthetic task")
    p.add_argument("--stage-sizes", help="--raw: the run's stage sizes, e.g. 3,27")
    p.add_argument("--seeds", default="0-4", help="N, 'a-b' or 'a,b,c'")
    p.add_argument("--gains", default="0,0.05", help="patience_gain values to replay")
    args = p.parse_args(argv)
    try:
        gains = [float(g) for g in args.gains.split(",")]
    except ValueError:
        raise SystemExit(f"stage_replay: --gains {args.gains!r} is not numbers") from None
    seeds = parse_seeds(args.seeds)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if args.journal is not None:
        if not args.prefix:
            raise SystemExit("stage_replay: --journal needs --prefix")
        runs = journal_runs(args.journal, args.prefix, seeds)
    else:
        if not args.task or not args.stage_sizes:
            raise SystemExit("stage_replay: --raw needs --task and --stage-sizes")
        sizes = [int(k) for k in args.stage_sizes.split(",")]
        runs = raw_runs(args.raw, args.task, sizes, seeds)
    if not runs:
        raise SystemExit("stage_replay: no run of the seeds asked for")
    table = {}
    for seed, (history, sizes, opened) in sorted(runs.items()):
        if len(sizes) < 2:
            raise SystemExit(f"stage_replay: seed {seed} ran one stage {sizes}: nothing to replay")
        table[seed] = [first_change(history, sizes, g) for g in gains]
        cells = " ".join(f"{'-' if c is None else c:>4}" for c in table[seed])
        recorded = "?" if args.raw else ("-" if opened is None else opened)
        print(f"seed {seed:3d} ({len(history)} trials): recorded {recorded}, replayed {cells}")
    first = [table[s][0] for s in table]
    for i, gain in enumerate(gains):
        column = [table[s][i] for s in table]
        known = [c for c in column if c is not None]
        median = f"{np.median(known):g}" if known else "-"
        differ = sum(a != b for a, b in zip(column, first, strict=True))
        print(
            f"gain {gain:g}: median {median} ({len(known)} of {len(column)} within the trials); "
            f"{differ} seed(s) differ from gain {gains[0]:g}"
        )


if __name__ == "__main__":
    main()
