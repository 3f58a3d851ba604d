"""Compare synthetic-benchmark rows kept in different runs: median regret and paired seeds.

The synthetic report compares the methods of one ``--out`` folder. Rows run at different
times (a new variant against the committed rows of the defaults and GPSampler) are compared
here, from each run's ``raw.csv``::

    python -m benchmarks.synthetic_pairs --task misleading27 --seeds 0-39 \\
        --reference benchmarks/results/synthetic-tied/m27/raw.csv:bocr-one \\
        --against benchmarks/results/synthetic-flat/raw.csv:bocr-any,gp

Printed per row: the median normalised regret over the seeds at each ``--counts`` (lower is
better), and the other row's regret minus the reference's, paired by seed (positive: the
reference is better), with its 95% bootstrap interval and the number of seeds where the
reference is better (:func:`benchmarks._common.paired_difference`).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from benchmarks._common import markdown_table
from benchmarks._common import paired_difference
from benchmarks._common import parse_list
from benchmarks._common import parse_seeds


def regret_curves(path: str, task: str, method: str, seeds: list[int]) -> dict[int, np.ndarray]:
    """Seed -> normalised regret after each trial (best so far) of one row of ``raw.csv``.

    Raises:
        SystemExit: The file is missing, or holds none of the seeds for the task and method.
    """
    if not Path(path).is_file():
        raise SystemExit(f"synthetic_pairs: {path} is not a file (a run's raw.csv)")
    rows: dict[int, dict[int, float]] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r["task"] == task and r["method"] == method and int(r["seed"]) in seeds:
                rows.setdefault(int(r["seed"]), {})[int(r["trial"])] = float(
                    r["normalised_regret"]
                )
    if not rows:
        raise SystemExit(
            f"synthetic_pairs: {path} has no rows of task {task!r}, method {method!r} for "
            "the seeds asked for"
        )
    return {s: np.array([by_trial[t] for t in sorted(by_trial)]) for s, by_trial in rows.items()}


def _spec(text: str) -> tuple[str, list[str]]:
    path, sep, methods = text.rpartition(":")
    if not sep or not path or not methods:
        raise SystemExit(f"synthetic_pairs: {text!r} is not RAW_CSV:METHOD[,METHOD...]")
    return path, parse_list(methods)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True)
    p.add_argument("--reference", required=True, help="RAW_CSV:METHOD")
    p.add_argument("--against", action="append", default=[], help="RAW_CSV:METHOD[,...]")
    p.add_argument("--seeds", default="5", help="N (0..N-1), 'a-b' or 'a,b,c'")
    p.add_argument("--counts", default="50,100,150", help="trial counts compared")
    args = p.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    counts = [int(c) for c in args.counts.split(",")]
    ref_path, ref_methods = _spec(args.reference)
    if len(ref_methods) != 1:
        raise SystemExit("synthetic_pairs: --reference names one method")
    rows = [(ref_methods[0], regret_curves(ref_path, args.task, ref_methods[0], seeds))]
    for spec in args.against:
        path, methods = _spec(spec)
        rows += [(m, regret_curves(path, args.task, m, seeds)) for m in methods]
    reference = rows[0][1]
    table = []
    for method, curves in rows:
        line = [method, str(len(curves))]
        for n in counts:
            have = [c[n - 1] for c in curves.values() if len(c) >= n]
            line.append(f"{np.median(have):.4f}" if have else "-")
        for n in counts:
            # other minus reference: positive when the reference's regret is lower
            found = None if curves is reference else paired_difference(curves, reference, n)
            line.append(
                "-"
                if found is None
                else f"{found[0]:+.4f} [{found[1]:+.4f}, {found[2]:+.4f}] ({found[3]}/{found[4]})"
            )
        table.append(line)
    header = ["row", "seeds", *(f"regret @{n}" for n in counts)]
    header += [f"minus {rows[0][0]} @{n}" for n in counts]
    print(f"{args.task}: median normalised regret; paired: the row's regret minus the reference's")
    print(markdown_table(header, table))


if __name__ == "__main__":
    main()
