"""Compare pruning studies kept in different journals: medians and per-seed paired differences.

The pruning report reads one storage. Rows run on different machines (a GPU machine's
journal and the CPU's) are compared here, from the same studies' best-so-far curves::

    python -m benchmarks.journal_pairs \\
        --reference benchmarks/results/pruning-resnet56-val5000-cpu/studies.log:bocr-key-any \\
        --against benchmarks/results/pruning-val5000-cuda/studies.log:bocr-trust,cmaes,gp \\
        --prefix pruning-resnet56-flops0.5-val5000-scale --seeds 0-3 --counts 25,50,100 \\
        --target-seeds 0-4

Study names are ``<prefix>-<method>-seed<seed>``. A method named in several journals is one
row whose seeds come from the first journal that has each, and a row ``A+B`` takes each
seed's study of method ``A`` where there is one, else of ``B`` (e.g. a seed run again with
another setting in place of its earlier run)::

    python -m benchmarks.journal_pairs --reference $J:bocr-key-yj-gain5+bocr-key-yj \\
        --against $J_CUDA:cmaes,gp --against $J:cmaes,gp --seeds 0-9 ...

Printed: each method's median best value over the seeds the reference has to the last
count (a method that lacks some of them: over those it has, saying how many), the trial at
which each seed first reached the ``--target`` method's median at trial ``--target-at`` (over
``--target-seeds``), and the reference minus each method paired by seed
(:func:`benchmarks._common.paired_difference`). ``--plot`` draws the median curves.
``--tests`` names report folders holding seed tests (``benchmarks.pruning --report-only
--seed-tests --n-trials N --out FOLDER``): then the test top-1 of each seed's best of its
first ``N`` trials (``N`` the last count) is paired the same way, each test checked to be
of that very trial.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from benchmarks._common import best_so_far
from benchmarks._common import first_reaching
from benchmarks._common import journal_rows
from benchmarks._common import journal_studies
from benchmarks._common import paired_difference
from benchmarks._common import parse_seeds
from benchmarks._methods import METHOD_LABELS
from benchmarks._plots import plot_curves


def studies(
    paths: list[str], prefix: str, row: str, seeds: list[int]
) -> dict[int, tuple[str, list[FrozenTrial]]]:
    """Seed -> (study name, complete trials in trial order) of each seed's study of ``row``.

    ``row`` is a method or ``A+B+...``: each seed's study is the first found of ``A``, then
    ``B``, ..., each looked up in ``paths`` in order.
    """
    out: dict[int, tuple[str, list[FrozenTrial]]] = {}
    for method in row.split("+"):
        for path in paths:
            left = [s for s in seeds if s not in out]
            found = journal_studies(path, prefix, method, left)
            out.update({s: (f"{prefix}-{method}-seed{s}", ts) for s, ts in found.items() if ts})
    return out


def curves(found: dict[int, tuple[str, list[FrozenTrial]]]) -> dict[int, np.ndarray]:
    """Seed -> best-so-far curve of each seed's study found by :func:`studies`."""
    return {s: best_so_far([t.value for t in ts]) for s, (_, ts) in found.items()}


def read_seed_tests(folders: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Study name -> its test-split entries in the ``final_<task>.json`` of report folders.

    ``benchmarks.pruning --report-only --seed-tests`` writes them (``"seeds"``: the best
    trial of each study's first ``--n-trials``, tested as it is); one study may have been
    tested at several budgets, one entry per folder.

    Raises:
        SystemExit: The folders tested on test splits of different sizes (``--test-size``,
            the part of each entry's key after ``|test``): their top-1 do not pair.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    sizes: dict[str, set[str]] = {}
    for folder in folders:
        for file in sorted(Path(folder).glob("final_*.json")):
            for name, entry in json.loads(file.read_text()).get("seeds", {}).items():
                out.setdefault(name, []).append(entry)
                size = str(entry.get("key", "")).partition("|test")[2] or "None"
                sizes.setdefault(size, set()).add(folder)
    if len(sizes) > 1:
        told = "; ".join(
            f"{'all' if size == 'None' else size} test images in {', '.join(sorted(where))}"
            for size, where in sorted(sizes.items())
        )
        raise SystemExit(
            f"journal_pairs: --tests folders tested on different test splits ({told}); "
            "give folders tested with one --test-size."
        )
    return out


def tested_top1(
    found: dict[int, tuple[str, list[FrozenTrial]]],
    tests: dict[str, list[dict[str, Any]]],
    n: int,
) -> tuple[dict[int, float], list[str]]:
    """Seed -> test top-1 of the best of each study's first ``n`` trials, and what lacks one.

    A test counts only if it is of that very trial (the first best, as the report picks it).
    """
    out: dict[int, float] = {}
    missing = []
    for seed, (name, trials) in found.items():
        if len(trials) < n:
            continue
        best = max(trials[:n], key=lambda t: float(t.value)).number  # type: ignore[arg-type]
        hit = [e for e in tests.get(name, []) if e.get("trial") == best]
        if hit:
            out[seed] = float(hit[0]["test_top1"])
        else:
            missing.append(f"{name} trial {best}")
    return out, missing


def _reaching(curves: dict[int, np.ndarray], seeds: list[int], n: int) -> list[np.ndarray]:
    """The first ``n`` trials of each of ``seeds`` that has ``n`` trials."""
    return [curves[s][:n] for s in seeds if s in curves and len(curves[s]) >= n]


def _median(curves: dict[int, np.ndarray], seeds: list[int], n: int) -> str:
    """``@n <median>`` over the seeds with ``n`` trials; says how many when some lack them."""
    have = [c[-1] for c in _reaching(curves, seeds, n)]
    if not have:
        return f"@{n} -"
    note = "" if len(have) == len(seeds) else f" ({len(have)} of {len(seeds)} seeds)"
    return f"@{n} {np.median(have):.2f}{note}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", required=True, help="JOURNAL:METHOD")
    p.add_argument("--against", required=True, action="append", help="JOURNAL:M1,M2 (repeat)")
    p.add_argument("--prefix", required=True, help="study names: <prefix>-<method>-seed<s>")
    p.add_argument("--seeds", default="0-4", help="N, 'a-b', 'a,b,c' or 'a,' (seed a alone)")
    p.add_argument("--counts", default="25,50,100", help="trial counts to compare at")
    p.add_argument("--target", default="gp", help="method whose final median is the target")
    p.add_argument("--target-at", type=int, default=200, help="trial of the target's median")
    p.add_argument("--target-seeds", default=None, help="seeds of the target (default: --seeds)")
    p.add_argument("--plot", default=None, help="also draw the median curves to this PNG file")
    p.add_argument(
        "--tests",
        action="append",
        default=[],
        help="a report folder whose final_<task>.json holds seed tests (repeat): also pair "
        "the test top-1 of each seed's best of its first COUNTS[-1] trials",
    )
    args = p.parse_args(argv)
    if args.plot is not None and not args.plot.endswith(".png"):
        raise SystemExit(f"journal_pairs: --plot writes a PNG file; got {args.plot!r}")
    for folder in args.tests:
        if not any(Path(folder).glob("final_*.json")):
            raise SystemExit(
                f"journal_pairs: {folder}: no final_<task>.json; write the seed tests with "
                "benchmarks.pruning --report-only --seed-tests --out FOLDER"
            )
    tests = read_seed_tests(args.tests)  # refuses mixed test splits before any work
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    seeds = parse_seeds(args.seeds)
    target_seeds = parse_seeds(args.target_seeds, "--target-seeds") if args.target_seeds else seeds
    counts = [int(c) for c in args.counts.split(",")]
    ref_path, ref_methods = journal_rows(args.reference, "journal_pairs")
    source = {ref_methods[0]: [ref_path]}  # row -> its journals, first first
    for spec in args.against:
        path, methods = journal_rows(spec, "journal_pairs")
        for m in methods:
            source.setdefault(m, []).append(path)
    found = {m: studies(paths, args.prefix, m, seeds) for m, paths in source.items()}
    table = {m: curves(f) for m, f in found.items()}
    ref = table[ref_methods[0]]
    shared = [s for s in seeds if s in ref and len(ref[s]) >= counts[-1]]
    if not shared:
        raise SystemExit(f"journal_pairs: no seed of {ref_methods[0]} has {counts[-1]} trials")
    goal = {}
    if args.target in source:
        goal = (
            table[args.target]
            if target_seeds == seeds
            else curves(studies(source[args.target], args.prefix, args.target, target_seeds))
        )
    finals = [c[args.target_at - 1] for c in goal.values() if len(c) >= args.target_at]
    target = float(np.median(finals)) if finals else None
    print(f"seeds {shared}; {args.target}'s median at trial {args.target_at}: {target}")
    for method, c in table.items():
        medians = [_median(c, shared, n) for n in counts]
        reach = [
            first_reaching(c[s], target) if target is not None and s in c else None for s in shared
        ]
        print(f"{method:16s} median {' '.join(medians)} | first reaching the target: {reach}")
    for method in table:
        if method == ref_methods[0]:
            continue
        cells = []
        for n in counts:
            other = {s: table[method][s] for s in shared if s in table[method]}
            d = paired_difference(ref, other, n)
            if d is not None:
                cells.append(f"@{n} {d[0]:+.2f} [{d[1]:+.2f}, {d[2]:+.2f}] ({d[3]}/{d[4]})")
        print(f"{ref_methods[0]} minus {method}: " + ("; ".join(cells) or "no shared seed"))
    if args.tests:
        _print_tests(found, tests, shared, counts[-1], ref_methods[0])
    if args.plot is not None:
        _plot(table, shared, counts[-1], source, Path(args.plot), args.prefix)


def _print_tests(
    found: dict[str, dict[int, tuple[str, list[FrozenTrial]]]],
    tests: dict[str, list[dict[str, Any]]],
    seeds: list[int],
    n: int,
    reference: str,
) -> None:
    """Medians and paired differences on the test split of each seed's best of ``n`` trials."""
    print(f"test split, each seed's best of its first {n} trials:")
    top1 = {}
    for method, per_seed in found.items():
        shared = {s: per_seed[s] for s in seeds if s in per_seed}
        top1[method], missing = tested_top1(shared, tests, n)
        have = list(top1[method].values())
        median = f"{np.median(have):.2f} ({len(have)} of {len(seeds)} seeds)" if have else "-"
        print(f"{method:16s} test median {median}")
        for study in missing:
            print(f"  no test of {study} (benchmarks.pruning --report-only --seed-tests)")
    ref = {s: np.array([v]) for s, v in top1[reference].items()}
    for method, values in top1.items():
        if method == reference:
            continue
        d = paired_difference(ref, {s: np.array([v]) for s, v in values.items()}, 1)
        cell = f"{d[0]:+.2f} [{d[1]:+.2f}, {d[2]:+.2f}] ({d[3]}/{d[4]})" if d else "no shared seed"
        print(f"{reference} minus {method}: test {cell}")


def _plot(
    table: dict[str, dict[int, np.ndarray]],
    seeds: list[int],
    n: int,
    source: dict[str, list[str]],
    path: Path,
    title: str,
) -> None:
    """Median and quartiles of the first ``n`` trials over the seeds each method has.

    A method none of whose seeds reaches ``n`` trials (one that ran to a smaller budget) is
    drawn over all its seeds to the trial they all reach, so a longer run can be shown beside
    the shorter ones it is compared with.
    """
    drawn: dict[str, np.ndarray] = {}
    for m, c in table.items():
        runs = _reaching(c, seeds, n)
        if not runs:
            have = [c[s] for s in seeds if s in c]
            runs = _reaching(c, seeds, min((len(r) for r in have), default=0))
        if runs and len(runs[0]):
            drawn[m] = np.stack(runs)
    print(
        "plot: "
        + ", ".join(
            f"{m} to trial {a.shape[1]} ({a.shape[0]} seed{'' if a.shape[0] == 1 else 's'})"
            for m, a in drawn.items()
        )
    )
    labels = {
        m: f"{_label(m)}, {' + '.join(dict.fromkeys(Path(p).parent.name for p in source[m]))}"
        for m in drawn
    }
    plot_curves(
        {title: drawn}, path, ylabel="best validation top-1 (%)", zoom_from=10, labels=labels
    )
    print(f"written: {path}")


def _label(row: str) -> str:
    """The plot label of a method, or of ``A+B``: ``A``'s, naming the others."""
    first, *others = row.split("+")
    label = METHOD_LABELS.get(first, first)
    return f"{label} (else {', then '.join(others)})" if others else label


if __name__ == "__main__":
    main()
