"""The pruning benchmark's final evaluation of each method's best model, and its report."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from benchmarks import _common as common
from benchmarks import _methods
from benchmarks import _plots
from benchmarks._pruning_setup import get_storage
from benchmarks._pruning_setup import SAMPLER_SETTINGS_KEY
from benchmarks._pruning_setup import study_name

CHECKPOINTS = (25, 50, 100, 200)


# -- Report -----------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "not measured (run without --skip-final)" if value is None else f"{value:.2f}%"


def _range(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{np.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def _label(method: str, args: argparse.Namespace) -> str:
    """The method's name in the tables; BOCR's methods name a ``--distance`` given."""
    label = _methods.METHOD_LABELS.get(method, method)
    distance = getattr(args, "distance", None)
    if distance and method in _methods.BOCR_METHODS:
        label += f", distance {distance!r}"
    return label


def _stage_changes(
    data: dict[str, dict[int, list[dict[str, Any]]]], args: argparse.Namespace
) -> list[str]:
    """Markdown lines: the trial numbers at which each BOCR study entered a new stage."""
    rows = []
    for method, per_seed in data.items():
        for seed, recs in sorted(per_seed.items()):
            firsts = common.stage_starts(recs)
            if firsts:
                changes = [str(n) for stage, n in sorted(firsts.items()) if stage > 0]
                rows.append(
                    [
                        _label(method, args),
                        str(seed),
                        ", ".join(changes) or "none",
                    ]
                )
    if not rows:
        return []
    return [
        "Trial numbers at which each BOCR study entered its next stage (bridge, then one "
        "ratio per layer for gradual rollback):",
        "",
        common.markdown_table(["method", "seed", "stage changes"], rows),
        "",
    ]


def _paired_lines(
    bests: dict[str, dict[int, np.ndarray]], cps: list[int], args: argparse.Namespace
) -> list[str]:
    """The reference BOCR variant (``--reference``, default ``bocr``) against GPSampler,
    CMA-ES, TPE, random search, the paper's schedules and BOCR's defaults (``bocr``, and
    ``bocr-trust`` with TuRBO's first side), paired per seed, at each checkpoint."""
    reference = getattr(args, "reference", "bocr")
    if reference not in bests:
        return []
    rows = []
    for ref in (
        "gp",
        "cmaes",
        "tpe",
        "random",
        "bocr-direct",
        "bocr-gradual",
        "bocr-paper",
        "bocr",
        "bocr-trust",
    ):
        if ref not in bests or ref == reference:
            continue
        cells = []
        for c in cps:
            d = common.paired_difference(bests[reference], bests[ref], c)
            cells.append(
                "-" if d is None else f"{d[0]:+.2f} [{d[1]:+.2f}, {d[2]:+.2f}] ({d[3]}/{d[4]})"
            )
        rows.append([_label(ref, args), *cells])
    if not rows:
        return []
    return [
        f"{_label(reference, args)} minus each method, paired by seed: mean difference of the "
        "best validation top-1 so far (points), 95% bootstrap interval of the mean (4000 "
        "resamples of the seeds), and the seeds where BOCR is ahead:",
        "",
        common.markdown_table(["against", *[f"@{c}" for c in cps]], rows),
        "",
    ]


def _seed_test_lines(
    final: dict[str, Any],
    args: argparse.Namespace,
    task: str,
    methods: list[str],
    seeds: list[int],
) -> list[str]:
    """The test top-1 of each seed's best trial: per method, and BOCR minus the others.

    Records are looked up by study name, so tests of studies with other settings (another
    ``--distance``, validation size or budget) cached in the same file never mix in.
    """
    reference = getattr(args, "reference", "bocr")
    tests: dict[str, dict[int, np.ndarray]] = {}
    tested = final.get("seeds", {})
    for method in methods:
        for seed in seeds:
            rec = tested.get(study_name(args, task, method, seed))
            if rec is not None:
                tests.setdefault(method, {})[seed] = np.array([rec["test_top1"]])
    if not tests:
        return []
    rows = []
    for method in methods:
        if method not in tests:
            continue
        values = [float(v[0]) for v in tests[method].values()]
        diff = "-"
        if method != reference and reference in tests:
            d = common.paired_difference(tests[reference], tests[method], 1)
            if d is not None:
                diff = f"{d[0]:+.2f} [{d[1]:+.2f}, {d[2]:+.2f}] ({d[3]}/{d[4]})"
        rows.append([_label(method, args), str(len(values)), _range(values), diff])
    return [
        "Test top-1 (%) of each seed's best trial (the network a user would keep), without "
        f"fine-tuning: median [min, max] over seeds, and {_label(reference, args)} minus the "
        "method, paired by seed (mean, 95% bootstrap interval, seeds where BOCR is ahead):",
        "",
        common.markdown_table(["method", "seeds", "test top-1", "BOCR minus it"], rows),
        "",
    ]


def _first_complete(recs: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The records up to and including the ``n``-th complete trial.

    A study extended past the report's trial budget is read as it stood at that budget,
    so its times and columns match a run of exactly ``n`` trials.
    """
    done = 0
    for i, r in enumerate(recs):
        done += r["state"] == "COMPLETE"
        if done == n:
            return recs[: i + 1]
    return recs


def report(
    args: argparse.Namespace, tasks: list[str], methods: list[str], seeds: list[int]
) -> str:
    """Tables, raw CSV and plot from the studies in the storage."""
    storage = get_storage(args.storage)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Pruning benchmark results", ""]
    csv_rows = ["task,method,seed,trial,state,val_top1,best_so_far,sampler_s,objective_s,stage"]
    curves: dict[str, dict[str, np.ndarray]] = {}
    for task in tasks:
        data: dict[str, dict[int, list[dict[str, Any]]]] = {}
        structure: set[str] = set()  # BOCR's verdict on the layer features
        for method in methods:
            for seed in seeds:
                try:
                    study = optuna.load_study(
                        study_name=study_name(args, task, method, seed), storage=storage
                    )
                except KeyError:
                    continue
                recs = _first_complete(common.trial_records(study), args.n_trials)
                data.setdefault(method, {})[seed] = recs
                settings = study.user_attrs.get(SAMPLER_SETTINGS_KEY, {})
                if settings.get("structure_pvalue") is not None:
                    structure.add(
                        f"p = {settings['structure_pvalue']:g} "
                        f"(stage sizes {settings.get('stage_sizes')})"
                    )
                best = -math.inf
                for r in recs:
                    if r["state"] == "COMPLETE" and r["value"] is not None:
                        best = max(best, r["value"])
                    csv_rows.append(
                        f"{task},{method},{seed},{r['number']},{r['state']},{r['value']!r},"
                        f"{best!r},{r['sampler_seconds']!r},{r['objective_seconds']!r},"
                        f"{r['stage']!r}"
                    )
        if not data:
            continue
        n_max = max(
            sum(r["state"] == "COMPLETE" for r in recs)
            for per_seed in data.values()
            for recs in per_seed.values()
        )
        final_path = out / f"final_{task}.json"
        final = json.loads(final_path.read_text()) if final_path.exists() else {}
        lines += [
            f"## {task}",
            "",
            f"{args.val_size} validation images, FLOPs budget {args.flops_ratio:g}; "
            f"unpruned model: val top-1 {_pct(final.get('baseline_val_top1'))}, test top-1 "
            f"{_pct(final.get('baseline_test_top1'))}"
            + (f" (first {args.test_size} test images)" if args.test_size else "")
            + ".",
            "",
        ]
        if structure:
            lines += [
                "BOCR's structure test on the layer features (clusters kept as asked): "
                + "; ".join(sorted(structure)),
                "",
            ]
        # best-so-far per method and seed
        bests: dict[str, dict[int, np.ndarray]] = {}
        for method, per_seed in data.items():
            for seed, recs in per_seed.items():
                vals = [r["value"] for r in recs if r["state"] == "COMPLETE"][: args.n_trials]
                if vals:
                    bests.setdefault(method, {})[seed] = common.best_so_far(vals)
        gp_final = [c[-1] for c in bests.get("gp", {}).values()]
        threshold = float(np.median(gp_final)) if gp_final else math.nan
        cps = [c for c in CHECKPOINTS if c <= n_max]
        if n_max not in cps:
            cps.append(n_max)
        header = (
            ["method", "seeds"]
            + [f"best val @{c}" for c in cps]
            + [
                "trials to GP's final best",
                "sampler time",
                "eval time",
                "sampler share",
                "best model: FLOPs / val / test / test fine-tuned",
            ]
        )
        rows = []
        curves[task] = {}
        for method in methods:
            if method not in bests:
                continue
            curves_of_seed = bests[method]
            cells = []
            for c in cps:
                vals = [float(b[c - 1]) for b in curves_of_seed.values() if len(b) >= c]
                cells.append(
                    _range(vals)
                    + ("" if len(vals) == len(curves_of_seed) else f" (n={len(vals)})")
                )
            hits = [common.first_reaching(b, threshold) for b in curves_of_seed.values()]
            s_tot = [
                sum(r["sampler_seconds"] or 0.0 for r in data[method][s]) for s in curves_of_seed
            ]
            e_tot = [
                sum(r["objective_seconds"] or 0.0 for r in data[method][s]) for s in curves_of_seed
            ]
            share = [s / (s + e) for s, e in zip(s_tot, e_tot, strict=True) if s + e > 0]
            fin = final.get(method)
            fin_txt = "-"
            if fin:
                ft = fin["test_top1_finetuned"]
                flops = fin.get("flops_ratio")
                fin_txt = (
                    (f"{flops:.3f} / " if flops is not None else "- / ")
                    + f"{fin['val_top1']:.2f} / {fin['test_top1']:.2f} / "
                ) + (f"{ft:.2f}" if ft is not None else "-")
            rows.append(
                [_label(method, args), str(len(curves_of_seed))]
                + cells
                + [
                    common.median_count(hits, n_max) if math.isfinite(threshold) else "-",
                    common.fmt_seconds(float(np.median(s_tot))),
                    common.fmt_seconds(float(np.median(e_tot))),
                    f"{100 * np.median(share):.1f}%" if share else "-",
                    fin_txt,
                ]
            )
            n = min(len(b) for b in curves_of_seed.values())
            curves[task][method] = np.vstack([b[:n] for b in curves_of_seed.values()])
        lines += [
            common.markdown_table(header, rows),
            "",
            "Best val: median [min, max] over seeds of the best validation top-1 (%) so far. "
            f"GP's final best (median over seeds): {threshold:.2f}%. Times: median over seeds "
            "of the total per run. Best model: the best trial over all seeds of the method, "
            "exported (FLOPs: of the physically pruned model, as a fraction of the "
            f"unpruned one) and tested; fine-tuned {args.finetune_epochs:g} epoch(s) of "
            f"{args.finetune_max_images or 'all'} images at lr {args.finetune_lr:g}.",
            "",
        ]
        lines += _paired_lines(bests, cps, args)
        lines += _seed_test_lines(final, args, task, methods, seeds)
        lines += _stage_changes(data, args)
    (out / "raw.csv").write_text("\n".join(csv_rows) + "\n")
    if curves:
        _plots.plot_curves(
            curves,
            out / "pruning.png",
            ylabel="best validation top-1 (%)",
            zoom_from=10,
            labels={m: _label(m, args) for m in methods},
        )
        lines += ["![best-so-far curves](pruning.png)", ""]
    text = "\n".join(lines)
    (out / "results.md").write_text(text)
    return text


# -- CLI --------------------------------------------------------------------------------------
