"""``optuna-bocr export --top-k``: choose which of the best few trials ships.

With fine-tuning, the ``k`` best distinct trials are fine-tuned the same way and the best
on the validation split ships. Without it, they are scored again on validation images
that neither the search nor the baseline's training saw, and the best on those ships.
"""

from __future__ import annotations

from typing import Any
from typing import TYPE_CHECKING

import optuna

from optuna_bocr.cli._common import CLIError
from optuna_bocr.cli._common import load_data

if TYPE_CHECKING:
    from optuna_bocr.cli._export import ExportSettings
    from optuna_bocr.cli._settings import DataSettings


def fresh_image_count(
    s: ExportSettings, meta: dict[str, Any], search_images: int, seed: int, checkpoint: str
) -> int:
    """How many validation images beyond the search's the re-score may use.

    ``--rescore-images`` when given (the user vouches that the baseline never saw them);
    otherwise what the checkpoint's metadata says ``optuna-bocr train`` held out (with the
    study's data seed) beyond the search's images.

    Raises:
        CLIError: No such images: the baseline held out no more than the search scored.
    """
    if s.rescore_images is not None:
        return s.rescore_images
    held_out = int(meta.get("val_size", 0)) if meta.get("seed") == seed else 0
    if held_out > search_images:
        return held_out - search_images
    raise CLIError(
        f"--top-k without fine-tuning re-scores on validation images the search did not "
        f"score, and the baseline {checkpoint} records no held-out images beyond the "
        f"search's {search_images}: train it with `optuna-bocr train --val-size 5000`, pass "
        "--rescore-images N if its training never saw the N validation images after those, "
        "or give --finetune-epochs"
    )


def choose_rescored(
    s: ExportSettings,
    study: optuna.study.Study,
    objective: Any,
    data: DataSettings,
    search_images: int,
    n_fresh: int,
    device: Any,
) -> optuna.trial.FrozenTrial:
    """Re-score the top-k distinct trials on ``n_fresh`` fresh images; the best on them."""
    from torch.utils.data import Subset

    from optuna_bocr.pruning import record_rescored
    from optuna_bocr.pruning import rescore_top_k

    wide = load_data(data, search_images + n_fresh)
    fresh = Subset(wide.val, range(search_images, search_images + n_fresh))
    print(
        f"Re-scoring the {s.top_k} best distinct trials on {n_fresh} validation images the "
        f"search did not score ...",
        flush=True,
    )
    results = rescore_top_k(study, objective, fresh, k=s.top_k, device=device)
    record_rescored(study, results, n_images=n_fresh)
    best_search = max(results, key=lambda r: r.search_top1).trial_number
    for r in results:
        mark = " <- shipped (best on the fresh images)" if r is results[0] else ""
        mark += " (best search score)" if r.trial_number == best_search else ""
        print(
            f"  trial {r.trial_number}: search val {r.search_top1:.2f}%, fresh "
            f"{r.rescore_top1:.2f}%{mark}"
        )
    return study.trials[results[0].trial_number]


def choose_fine_tuned(
    s: ExportSettings,
    study: optuna.study.Study,
    objective: Any,
    splits: Any,
    device: Any,
    seed: int,
) -> optuna.trial.FrozenTrial:
    """Fine-tune the top-k distinct trials, report them, record them; the best on val."""
    from torch.utils.data import Subset

    from optuna_bocr.pruning import fine_tune_top_k
    from optuna_bocr.pruning import record_fine_tuned
    from optuna_bocr.training import evaluate

    print(f"Fine-tuning the {s.top_k} best distinct trials ...", flush=True)
    results = fine_tune_top_k(
        study, objective, splits.train, splits.val, k=s.top_k, epochs=s.finetune_epochs,
        max_images=s.finetune_images, lr=s.finetune_lr, batch_size=s.batch_size,
        augment=False, freeze_bn=s.finetune_bn == "frozen", device=device, seed=seed,
        progress=not s.quiet,
    )  # fmt: skip
    test_set = splits.test
    if s.test_size is not None and s.test_size < len(test_set):
        test_set = Subset(test_set, range(s.test_size))
    test = {r.trial_number: evaluate(r.model, test_set, device=device)[0] for r in results}
    settings = {"epochs": s.finetune_epochs, "images": s.finetune_images, "lr": s.finetune_lr}
    record_fine_tuned(study, results, settings=settings, test_top1=test)
    best_search = max(results, key=lambda r: r.search_top1).trial_number
    for r in sorted(results, key=lambda r: -r.search_top1):
        mark = " <- shipped (best fine-tuned val)" if r is results[0] else ""
        mark += " (best search score)" if r.trial_number == best_search else ""
        print(
            f"  trial {r.trial_number}: search val {r.search_top1:.2f}%, fine-tuned val "
            f"{r.val_top1:.2f}%, fine-tuned test {test[r.trial_number]:.2f}%{mark}"
        )
    return study.trials[results[0].trial_number]
