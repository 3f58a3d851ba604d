"""Proxy quality: how well each search score predicts the fine-tuned accuracy that ships.

The search scores a pruned network *without fine-tuning*; users ship it *after* a short
fine-tune. This benchmark takes N pruning strategies at one FLOPs budget (random ones plus
the best trials of a short TPE study on today's objective), scores each with four proxies
(validation top-1 of :class:`~optuna_bocr.pruning.PruningObjective` without fine-tuning):

- ``none``: the kept channels' weights as they are (plain L1 masking);
- ``ls``: least-squares reconstruction of the kept weights (the objective's default);
- ``bn``: batch-norm recalibration only (``reconstruction=False, bn_recalibration=B``);
- ``ls+bn``: both;

then fine-tunes every strategy the same short way (from the least-squares export, batch
norms in train mode, seeded), tests it, and reports, per proxy, Kendall's tau and
Spearman's rho against the fine-tuned test top-1 with percentile bootstrap intervals
(strategies resampled), and the fine-tuned test top-1 of the proxy's top-1 pick and the
mean over its top-5 picks. Every strategy's results are cached in ``--out`` as they come
(a killed run resumes; ``--reverse`` lets a second process work from the other end on a
copy; ``--report-only`` prints the tables of what is there). ``--finetune-from`` fine-tunes
from another proxy's export instead (reusing the proxy scores of the default run).

The checkpoint is trained once by this script with :func:`optuna_bocr.training.train`
(seeded weights, data order and augmentation, on one thread so that it is the same on any
machine of the same kind) and cached under ``--work-dir``.

Example (ResNet-20: 15 minutes of training, then 40 minutes on a loaded 2-core machine)::

    OMP_NUM_THREADS=1 python -m benchmarks.proxy --task resnet20
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import time
from typing import Any

import numpy as np
import optuna

from benchmarks import _common as common
from benchmarks import _jobs
from benchmarks._rank_correlation import correlations

DATASET = "fashion-mnist"
PROXIES = ("none", "ls", "bn", "ls+bn")
TASKS: dict[str, dict[str, Any]] = {
    "resnet20": {"model": "resnet20", "lbound": 0.1},
    "resnet56": {"model": "resnet56", "lbound": 0.1},
    "mobilenet_v1": {"model": "mobilenet_v1", "lbound": 0.2},
}


# -- Setup ------------------------------------------------------------------------------------


def get_splits(args: argparse.Namespace) -> Any:
    """Fashion-MNIST splits (validation from the training set, data seed 0)."""
    from optuna_bocr.data import load_splits

    return load_splits(DATASET, root=args.data_root, val_size=args.val_size, seed=0)


def ensure_checkpoint(args: argparse.Namespace, splits: Any) -> Path:
    """Train the task's model once on one thread (if not cached) and return its path."""
    import torch

    from optuna_bocr.models import build_model
    from optuna_bocr.training import evaluate
    from optuna_bocr.training import train

    model_name = TASKS[args.task]["model"]
    tag = f"e{args.train_epochs:g}-m{args.train_max_images}-val{args.val_size}-t1"
    path = Path(args.work_dir) / "checkpoints" / f"{model_name}-{DATASET}-{tag}.pt"
    if path.exists():
        return path
    model = build_model(
        model_name, num_classes=splits.num_classes, in_channels=splits.in_channels, seed=0
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        train(
            model,
            splits.train,
            epochs=args.train_epochs,
            device="cpu",
            seed=0,
            max_images=args.train_max_images,
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    top1, _ = evaluate(model, splits.val, device="cpu")
    print(f"[train] {model_name}: val top-1 {top1:.2f}% in {time.perf_counter() - t0:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": model.state_dict(), "val_top1": top1}, tmp)
    tmp.replace(path)
    return path


def make_objectives(
    args: argparse.Namespace, splits: Any, path: Path, proxies: tuple[str, ...] = PROXIES
) -> dict[str, Any]:
    """One PruningObjective per proxy, on the same checkpoint, data and budget."""
    from optuna_bocr.models import build_model
    from optuna_bocr.models import load_checkpoint
    from optuna_bocr.pruning import PruningObjective

    settings = {
        "none": {"reconstruction": False, "bn_recalibration": 0},
        "ls": {"reconstruction": True, "bn_recalibration": 0},
        "bn": {"reconstruction": False, "bn_recalibration": args.bn_batches},
        "ls+bn": {"reconstruction": True, "bn_recalibration": args.bn_batches},
    }
    model = build_model(
        TASKS[args.task]["model"], num_classes=splits.num_classes, in_channels=splits.in_channels
    )
    load_checkpoint(model, path)
    objectives = {}
    for proxy in proxies:
        t0 = time.perf_counter()
        objectives[proxy] = PruningObjective(
            model,
            calibration=splits.train,
            validation=splits.val.subset(range(min(args.val_images, len(splits.val)))),
            flops_ratio=args.flops_ratio,
            budget_rule="wall",  # the rule of the measurements in benchmarks/README.md
            lbound=TASKS[args.task]["lbound"],
            device="cpu",
            n_calibration_images=args.n_calibration_images,
            bn_batch_size=args.bn_batch_size,
            report_every=None,
            seed=0,
            **settings[proxy],
        )
        print(f"[setup] {proxy}: {time.perf_counter() - t0:.1f} s", flush=True)
    return objectives


def baseline_top1(args: argparse.Namespace, splits: Any, path: Path) -> float:
    """Validation top-1 (%) of the unpruned checkpoint on the images the proxies score on."""
    from optuna_bocr.models import build_model
    from optuna_bocr.models import load_checkpoint
    from optuna_bocr.training import evaluate

    model = build_model(
        TASKS[args.task]["model"], num_classes=splits.num_classes, in_channels=splits.in_channels
    )
    load_checkpoint(model, path)
    val = splits.val.subset(range(min(args.val_images, len(splits.val))))
    return evaluate(model, val, device="cpu")[0]


# -- Strategies -------------------------------------------------------------------------------


def make_strategies(args: argparse.Namespace, objective: Any) -> list[dict[str, Any]]:
    """``--n-random`` random strategies, then the ``--n-good`` best of a TPE study (actual)."""
    rng = np.random.default_rng(args.seed)
    names = list(objective.search_space)
    strategies = []
    for i in range(args.n_random):
        requested = {n: float(rng.uniform(objective.lbound, objective.rbound)) for n in names}
        strategies.append({"id": f"random-{i}", "ratios": objective.clip(requested)})
    if args.n_good:
        sampler = optuna.samplers.TPESampler(seed=args.seed)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=args.n_tpe_trials)
        print(f"[tpe] {args.n_tpe_trials} trials in {time.perf_counter() - t0:.0f} s", flush=True)
        seen: set[tuple[float, ...]] = set()
        ranked = sorted(study.trials, key=lambda t: -(t.value or -np.inf))
        for t in ranked:
            actual = objective.clip(t.params)
            key = tuple(round(actual[n], 6) for n in names)
            if key in seen:
                continue
            seen.add(key)
            strategies.append({"id": f"tpe-{t.number}", "ratios": actual})
            if len(seen) == args.n_good:
                break
    return strategies


def score(
    args: argparse.Namespace,
    splits: Any,
    objectives: dict[str, Any],
    s: dict,
    known: dict | None = None,
) -> dict:
    """Every proxy's score of one strategy (or the ``known`` ones), then its fine-tuned test
    accuracy (fine-tuned from the export of the ``--finetune-from`` proxy)."""
    import torch

    from optuna_bocr.keys import FLOPS_RATIO_KEY
    from optuna_bocr.keys import TOP1_KEY
    from optuna_bocr.training import evaluate
    from optuna_bocr.training import train

    out = dict(s)
    if known is not None:
        keys = [*PROXIES, *(f"{p}_seconds" for p in PROXIES), "flops_ratio"]
        out.update({k: known[k] for k in keys})
    for proxy, objective in objectives.items():
        if known is not None:
            break
        t0 = time.perf_counter()
        result = objective.evaluate(s["ratios"])
        out[proxy] = result[TOP1_KEY]
        out[f"{proxy}_seconds"] = time.perf_counter() - t0
        out["flops_ratio"] = result[FLOPS_RATIO_KEY]
    test = splits.test.subset(range(min(args.test_size, len(splits.test))))
    t0 = time.perf_counter()
    pruned = objectives[args.finetune_from].export(s["ratios"])
    torch.manual_seed(0)
    train(
        pruned,
        splits.train,
        epochs=args.finetune_epochs,
        lr=args.finetune_lr,
        device="cpu",
        seed=0,
        max_images=args.finetune_max_images,
        progress=False,
    )
    out["finetuned_test_top1"] = evaluate(pruned, test, device="cpu")[0]
    out["finetune_seconds"] = time.perf_counter() - t0
    return out


# -- Statistics and report ---------------------------------------------------------------------


def report(args: argparse.Namespace, records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The markdown table of one task."""
    y = np.array([r["finetuned_test_top1"] for r in records])
    scores = {p: np.array([r[p] for r in records]) for p in PROXIES}
    stats = correlations(scores, y, args.bootstrap, args.seed, reference="ls")
    rows = []
    for proxy in PROXIES:
        x = scores[proxy]
        c = stats[proxy]
        order = np.argsort(-x, kind="stable")
        seconds = np.median([r[f"{proxy}_seconds"] for r in records])
        rows.append(
            [
                f"`{proxy}`",
                f"{np.median(x):.2f}",
                "{:.3f} [{:.3f}, {:.3f}]".format(*c["tau"]),
                "{:+.3f} [{:+.3f}, {:+.3f}]".format(*c["dtau"]) if proxy != "ls" else "-",
                "{:.3f} [{:.3f}, {:.3f}]".format(*c["rho"]),
                f"{y[order[0]]:.2f}",
                f"{np.mean(y[order[:5]]):.2f}",
                f"{seconds:.2f} s",
            ]
        )
    header = [
        "proxy",
        "median val top-1",
        "Kendall tau [95%]",
        "tau - tau(ls) [95%]",
        "Spearman rho [95%]",
        "top-1 pick: ft test",
        "top-5 picks: mean ft test",
        "s / evaluation",
    ]
    best = np.sort(y)[::-1]
    lines = [
        f"### {args.task}: {len(records)} strategies at {args.flops_ratio:g} FLOPs",
        "",
        common.markdown_table(header, rows),
        "",
        f"Fine-tuned test top-1 over all strategies: median {np.median(y):.2f}%, range "
        f"[{best[-1]:.2f}, {best[0]:.2f}]%, mean of the best 5 {np.mean(best[:5]):.2f}% (what "
        f"perfect picks would get); unpruned: val {meta['baseline_val_top1']:.2f}% "
        f"({args.val_images} images). Median fine-tune + test per strategy: "
        f"{np.median([r['finetune_seconds'] for r in records]):.1f} s. Strategies: "
        f"{sum(r['id'].startswith('random') for r in records)} random, "
        f"{sum(r['id'].startswith('tpe') for r in records)} from TPE.",
        "",
    ]
    return "\n".join(lines)


# -- CLI --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--task", default="resnet20", choices=list(TASKS))
    p.add_argument("--flops-ratio", type=float, default=0.5)
    p.add_argument("--n-random", type=int, default=16, help="random strategies")
    p.add_argument("--n-good", type=int, default=8, help="best distinct TPE trials kept")
    p.add_argument("--n-tpe-trials", type=int, default=16, help="trials of the TPE study")
    p.add_argument("--val-size", type=int, default=2000, help="validation split (from train)")
    p.add_argument(
        "--val-images", type=int, default=1000, help="validation images the proxies score on"
    )
    p.add_argument("--n-calibration-images", type=int, default=1000)
    p.add_argument("--bn-batches", type=int, default=8, help="batch-norm recalibration batches")
    p.add_argument("--bn-batch-size", type=int, default=64)
    p.add_argument("--train-epochs", type=float, default=2)
    p.add_argument("--train-max-images", type=int, default=10000)
    p.add_argument("--finetune-epochs", type=float, default=1)
    p.add_argument("--finetune-max-images", type=int, default=1500)
    p.add_argument("--finetune-lr", type=float, default=0.01)
    p.add_argument(
        "--finetune-from",
        default="ls",
        choices=PROXIES,
        help="which proxy's exported network is fine-tuned (the ground truth's start point)",
    )
    p.add_argument("--test-size", type=int, default=2000, help="first N test images")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--data-root", default=None)
    p.add_argument("--work-dir", default="benchmarks/_work/proxy", help="checkpoint cache")
    p.add_argument("--out", default="benchmarks/_work/proxy/out", help="results folder")
    p.add_argument("--train-only", action="store_true", help="only train the checkpoint")
    p.add_argument(
        "--reverse",
        action="store_true",
        help="score the strategies last to first (a second process on a copy of --out)",
    )
    p.add_argument(
        "--report-only", action="store_true", help="only print the report of the results so far"
    )
    args = p.parse_args(argv)
    _jobs.limit_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t_start = time.perf_counter()
    splits = get_splits(args)
    path = ensure_checkpoint(args, splits)
    if args.train_only:
        return
    key = (
        f"{args.task}-flops{args.flops_ratio:g}-val{args.val_images}of{args.val_size}"
        f"-cal{args.n_calibration_images}"
        f"-bn{args.bn_batches}x{args.bn_batch_size}-r{args.n_random}-g{args.n_good}of"
        f"{args.n_tpe_trials}-ft{args.finetune_epochs:g}m{args.finetune_max_images}"
        f"lr{args.finetune_lr:g}-test{args.test_size}-seed{args.seed}-{path.stem}"
    )
    base_path = Path(args.out) / f"{key}.json"
    if args.finetune_from != "ls":
        key += f"-from-{args.finetune_from}"
    cache_path = Path(args.out) / f"{key}.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    # Another fine-tune start point: the strategies and proxy scores are those of the run
    # that fine-tunes from the least-squares export, when it is there.
    base = (
        json.loads(base_path.read_text()) if cache_path != base_path and base_path.exists() else {}
    )
    if "strategies" in base and "strategies" not in cache:
        cache = {"strategies": base["strategies"], "records": {}, "meta": base.get("meta")}
    todo = [
        s for s in cache.get("strategies", [None]) if s is None or s["id"] not in cache["records"]
    ]
    if args.report_only:
        if "strategies" not in cache:
            raise SystemExit(f"No results in {cache_path}: run without --report-only first.")
        records = [cache["records"][s["id"]] for s in cache["strategies"] if s not in todo]
        meta = cache.get("meta") or {"baseline_val_top1": baseline_top1(args, splits, path)}
        print(report(args, records, meta))
        return
    known = base.get("records", {})
    reuse = bool(known) and all(s["id"] in known for s in cache.get("strategies", []))
    proxies = (args.finetune_from,) if reuse else PROXIES
    objectives = make_objectives(args, splits, path, proxies) if todo else {}
    if todo and not reuse:
        cache["meta"] = {"baseline_val_top1": objectives["ls"].baseline_top1}
    if "strategies" not in cache:
        cache["strategies"] = make_strategies(args, objectives["ls"])
        cache["records"] = {}
        common.write_json(cache_path, cache)
    order = list(enumerate(cache["strategies"]))
    for i, s in reversed(order) if args.reverse else order:
        if s["id"] in cache["records"]:
            continue
        record = score(args, splits, objectives, s, known[s["id"]] if reuse else None)
        cache["records"][s["id"]] = record
        common.write_json(cache_path, cache)
        print(
            f"  [{i + 1}/{len(cache['strategies'])}] {s['id']}: "
            + " ".join(f"{p}={record[p]:.2f}" for p in PROXIES)
            + f" -> ft test {record['finetuned_test_top1']:.2f} "
            f"({record['finetune_seconds']:.0f} s)",
            flush=True,
        )
    records = [cache["records"][s["id"]] for s in cache["strategies"]]
    meta = cache.get("meta") or {"baseline_val_top1": baseline_top1(args, splits, path)}
    text = report(args, records, meta)
    (Path(args.out) / f"{key}.md").write_text(text)
    print(text)
    print(f"total {common.fmt_seconds(time.perf_counter() - t_start)}; written {cache_path}")


if __name__ == "__main__":
    main()
