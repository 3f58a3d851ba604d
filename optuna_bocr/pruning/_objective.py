"""The pruning objective: per-layer preserve ratios -> pruned network -> validation accuracy."""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Mapping
import contextlib
import copy
import math
import time
from typing import Any

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset

from optuna_bocr.keys import ACTUAL_PARAMS_KEY
from optuna_bocr.keys import EVAL_SECONDS_KEY
from optuna_bocr.keys import FLOPS_RATIO_KEY
from optuna_bocr.keys import PARAMS_RATIO_KEY
from optuna_bocr.keys import TOP1_KEY
from optuna_bocr.keys import TOP5_KEY
from optuna_bocr.pruning._flops import BudgetModel
from optuna_bocr.pruning._graph import find_prunable_layers
from optuna_bocr.pruning._graph import measure_layers
from optuna_bocr.pruning._graph import PrunableLayer
from optuna_bocr.pruning._reconstruct import FeatureCapture
from optuna_bocr.pruning._reconstruct import l1_importance
from optuna_bocr.pruning._reconstruct import reconstruct
from optuna_bocr.pruning._reconstruct import select_channels
from optuna_bocr.sampler._features import ParameterFeatures

_logger = optuna.logging.get_logger(__name__)

_CAPTURE_BATCH = 100


def _resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"Invalid device {device!r}: {e}") from e


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type == "cuda":
        ia = a.index if a.index is not None else torch.cuda.current_device()
        ib = b.index if b.index is not None else torch.cuda.current_device()
        return ia == ib
    return True


def _iter_pairs(data: DataLoader | Dataset, what: str) -> Iterator[tuple[Any, Any]]:
    if isinstance(data, DataLoader):
        yield from data
    elif isinstance(data, Dataset):
        yield from DataLoader(data, batch_size=256, shuffle=False)
    else:
        raise TypeError(f"{what} must be a torch DataLoader or Dataset, got {type(data)!r}.")


def _split_batch(batch: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (list, tuple)) or len(batch) < 2:
        raise ValueError(f"{what} must yield (images, labels) pairs.")
    x, y = batch[0], batch[1]
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{what} must yield tensors, got {type(x)!r} and {type(y)!r}.")
    return x, torch.as_tensor(y)


def _check_data_device(x: torch.Tensor, device: torch.device, what: str) -> None:
    if x.device.type != "cpu" and not _same_device(x.device, device):
        raise ValueError(
            f"{what} is on {x.device} but the objective runs on {device}: put the data on "
            f"the CPU or on {device}, or pass device={str(x.device)!r}."
        )


def _collect(
    data: DataLoader | Dataset, what: str, device: torch.device, limit: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, Dataset) and not isinstance(data, DataLoader) and limit is not None:
        try:
            n = len(data)  # type: ignore[arg-type]
        except TypeError:
            n = None
        if n is not None and n > limit:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit]
            data = torch.utils.data.Subset(data, order.tolist())
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    count = 0
    for batch in _iter_pairs(data, what):
        x, y = _split_batch(batch, what)
        _check_data_device(x, device, what)
        if x.dim() == 3:
            x = x.unsqueeze(0)
            y = y.reshape(1)
        xs.append(x.detach().cpu())
        ys.append(y.detach().cpu().reshape(-1))
        count += x.shape[0]
        if limit is not None and count >= limit:
            break
    if count == 0:
        raise ValueError(f"{what} is empty.")
    images = torch.cat(xs)
    labels = torch.cat(ys)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    if images.dim() != 4:
        raise ValueError(f"{what} images must be (C, H, W) tensors, got shape {images.shape[1:]}.")
    if not images.is_floating_point():
        raise TypeError(f"{what} images must be floating point tensors, got {images.dtype}.")
    return images, labels.long()


class PruningObjective:
    """Optuna objective that prunes a CNN to per-layer preserve ratios and measures accuracy.

    This is the environment of BOCR (and AMC): each prunable layer (see below) gets one
    float parameter, its *preserve ratio* (fraction of its input channels kept), named after
    the layer's module (e.g. ``"layer1.0.conv2"``). For a trial, the ratios are clipped in
    network order to meet the FLOPs budget (:meth:`clip`), each layer keeps the input
    channels of largest L1 importance, the kept weights are refitted by least squares to the
    unpruned layer's outputs on calibration features captured once at construction, and the
    top-1 accuracy (%) on the validation data is returned. By default each trial is
    evaluated on the physically smaller network (what :meth:`export` returns, built in a few
    hundredths of a second), which runs the pruned network's FLOPs rather than the full
    network's (how much faster that is depends on the network and the convolution kernels:
    2x for MobileNetV1 at 50% FLOPs on a CPU); ``evaluate_pruned=False`` evaluates the
    full-size network with the pruned channels zeroed instead (as the BOCR paper does). Both
    compute the same function up to floating-point rounding.

    A layer is prunable when removing its input channels only requires removing the output
    channels of the producing convolution, its batch norm and any depthwise convolutions in
    between (found from torch-pruning's dependency graph, for any CNN). Channels tied to a
    residual add, a concatenation or a grouped convolution are not pruned: in a ResNet only
    the inner convolutions of each block are prunable (the residual stream keeps its width),
    the first convolution (no producer) and the classifier (``Linear``) keep all their inputs.

    Recorded user attributes on each trial (keys in :mod:`optuna_bocr.keys`):
    ``ACTUAL_PARAMS_KEY`` (layer -> actual ratio after clipping; set before evaluation, so
    pruned trials have it too), ``FLOPS_RATIO_KEY``, ``PARAMS_RATIO_KEY``, ``TOP1_KEY``,
    ``TOP5_KEY`` (with at least 10 classes) and ``EVAL_SECONDS_KEY``.

    Args:
        model: A trained classifier (left untouched: the objective works on a copy).
        calibration: Training images (``(image, label)`` pairs) for the feature capture.
        validation: Held-out images with labels, never the test set. Held on the device.
        flops_ratio: FLOPs budget as a fraction of the unpruned model's FLOPs, in (0, 1].
        lbound: Smallest preserve ratio.
        rbound: Largest preserve ratio.
        device: ``"auto"`` (CUDA if available), or any torch device.
        n_calibration_images: Images used for the feature capture (a seeded random subset
            of a ``Dataset``; the first ones of a ``DataLoader``).
        points_per_layer: Random output positions sampled per image and layer.
        eval_batch_size: Batch size of the validation passes.
        report_every: Report the running top-1 accuracy with ``trial.report`` every this
            many batches (and honour ``trial.should_prune()``); ``None`` never reports.
        autocast: Evaluate under :func:`torch.autocast` (float16 on CUDA, bfloat16 on CPU).
        evaluate_pruned: Evaluate each trial on the physically pruned network (usually
            faster) rather than on the masked full-size network.
        seed: Seed of the calibration subset and sampled positions.

    Raises:
        ValueError: Infeasible budget, bad bounds, no prunable layer, empty or mismatched
            data, model or data on another device, non-finite model outputs.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        calibration: DataLoader | Dataset,
        validation: DataLoader | Dataset,
        flops_ratio: float = 0.5,
        lbound: float = 0.1,
        rbound: float = 1.0,
        device: str | torch.device = "auto",
        n_calibration_images: int = 3000,
        points_per_layer: int = 10,
        eval_batch_size: int = 1000,
        report_every: int | None = 1,
        autocast: bool = False,
        evaluate_pruned: bool = True,
        seed: int = 0,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model)!r}.")
        if not (0.0 < lbound <= rbound <= 1.0):
            raise ValueError(
                f"Need 0 < lbound <= rbound <= 1, got lbound={lbound}, rbound={rbound}."
            )
        if not (0.0 < flops_ratio <= 1.0):
            raise ValueError(f"flops_ratio must be in (0, 1], got {flops_ratio}.")
        for arg, value in [
            ("n_calibration_images", n_calibration_images),
            ("points_per_layer", points_per_layer),
            ("eval_batch_size", eval_batch_size),
        ]:
            if int(value) != value or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}.")
        if report_every is not None and (int(report_every) != report_every or report_every < 1):
            raise ValueError(
                f"report_every must be a positive integer or None, got {report_every!r}."
            )
        self._device = _resolve_device(device)
        self._check_model_device(model)
        self.flops_ratio = float(flops_ratio)
        self.lbound = float(lbound)
        self.rbound = float(rbound)
        self._eval_batch_size = int(eval_batch_size)
        self._report_every = report_every
        self._autocast = bool(autocast)
        self._evaluate_pruned = bool(evaluate_pruned)
        self._seed = int(seed)

        self._model = copy.deepcopy(model).to(self._device).eval()
        for p in self._model.parameters():
            p.requires_grad_(False)

        cal_x, _ = _collect(calibration, "calibration", self._device, n_calibration_images, seed)
        val_x, val_y = _collect(validation, "validation", self._device, None, seed)
        if cal_x.shape[1:] != val_x.shape[1:]:
            raise ValueError(
                f"calibration images have shape {tuple(cal_x.shape[1:])} but validation images "
                f"have shape {tuple(val_x.shape[1:])}."
            )
        self.input_size: tuple[int, int, int] = tuple(val_x.shape[1:])  # type: ignore[assignment]
        example = cal_x[:1].to(self._device)
        try:
            self._infos = measure_layers(self._model, example)
            logits = self._model(example)
        except (RuntimeError, ValueError) as e:
            raise ValueError(
                f"The model cannot run on images of shape {self.input_size}: {e}"
            ) from e
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise ValueError("The model must return a (batch, classes) tensor of logits.")
        self.num_classes = int(logits.shape[1])
        if val_y.min() < 0 or val_y.max() >= self.num_classes:
            raise ValueError(
                f"validation labels must be in [0, {self.num_classes}) (the model has "
                f"{self.num_classes} outputs), got [{int(val_y.min())}, {int(val_y.max())}]."
            )

        self._layers: list[PrunableLayer] = find_prunable_layers(
            self._model, example, list(self._infos)
        )
        if not self._layers:
            raise ValueError(
                "The model has no prunable layer (a Conv2d whose input channels can be "
                "removed by removing only the output channels of one producing Conv2d)."
            )
        modules = dict(self._model.named_modules())
        self._convs: dict[str, nn.Conv2d] = {
            layer.name: modules[layer.name] for layer in self._layers
        }
        affine = {
            name: bool(m.affine)
            for name, m in modules.items()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
        }
        n_params = sum(p.numel() for p in self._model.parameters())
        self._budget = BudgetModel(self._infos, self._layers, affine, n_params)
        self.original_flops: int = self._budget.original_flops
        self.original_params: int = n_params
        self._target = self.flops_ratio * self.original_flops
        min_flops = self._budget.min_flops(self.lbound)
        if min_flops > self._target:
            raise ValueError(
                f"flops_ratio={self.flops_ratio} cannot be met: with every prunable layer at "
                f"lbound={self.lbound} the model keeps {min_flops / self.original_flops:.3f} "
                f"of its FLOPs. Raise flops_ratio or lower lbound."
            )

        self._originals = {
            name: conv.weight.detach().clone() for name, conv in self._convs.items()
        }
        self._importance = {name: l1_importance(w) for name, w in self._originals.items()}
        self._last_weights: tuple[tuple[int, ...], dict[str, torch.Tensor]] | None = None

        started = time.perf_counter()
        capture = FeatureCapture(self._convs, points_per_layer=int(points_per_layer), seed=seed)
        batches = (
            cal_x[i : i + _CAPTURE_BATCH].to(self._device)
            for i in range(0, cal_x.shape[0], _CAPTURE_BATCH)
        )
        self._grams = capture.run(self._model, batches)
        self._targets = {
            name: self._grams[name] @ w.reshape(w.shape[0], -1).T.to(torch.float64)
            for name, w in self._originals.items()
        }
        _logger.info(
            f"Captured features of {len(self._layers)} layers from {cal_x.shape[0]} images "
            f"in {time.perf_counter() - started:.1f}s."
        )

        self._val_x = val_x.to(self._device)
        self._val_y = val_y.to(self._device)
        self.baseline_top1: float = self._evaluate_model(self._model, None)[0]

    # -- public API -----------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """The device the objective runs on."""
        return self._device

    @property
    def layer_names(self) -> list[str]:
        """Names of the prunable layers, in network order."""
        return [layer.name for layer in self._layers]

    @property
    def search_space(self) -> dict[str, FloatDistribution]:
        """One ``FloatDistribution(lbound, rbound)`` per prunable layer, in network order."""
        return {layer.name: FloatDistribution(self.lbound, self.rbound) for layer in self._layers}

    def layer_features(self) -> ParameterFeatures:
        """Per-layer features for :class:`~optuna_bocr.BOCRSampler`.

        Returns:
            ``samples``: the L1 importance of each input channel of the layer;
            ``vectors``: ``(c_in, c_out, kernel area, params, FLOPs, output size,
            c_in / c_out)`` of the layer (FLOPs as multiply-accumulates).
        """
        samples = {}
        vectors = {}
        for layer in self._layers:
            info = self._infos[layer.name]
            conv = self._convs[layer.name]
            params = sum(p.numel() for p in conv.parameters())
            samples[layer.name] = self._importance[layer.name].cpu().numpy().astype(np.float64)
            vectors[layer.name] = np.array(
                [
                    info.in_channels,
                    info.out_channels,
                    info.kernel_area,
                    params,
                    info.macs,
                    info.output_size,
                    info.in_channels / info.out_channels,
                ],
                dtype=np.float64,
            )
        return ParameterFeatures(samples=samples, vectors=vectors)

    def clip(self, ratios: Mapping[str, float]) -> dict[str, float]:
        """Apply the FLOPs budget rule to proposed ratios (see :class:`PruningObjective`).

        Args:
            ratios: One ratio in ``[lbound, rbound]`` per prunable layer.

        Returns:
            The actual ratios (plain floats), layer name -> ratio, in network order.
        """
        self._check_ratios(ratios)
        return self._budget.clip(ratios, target=self._target, lbound=self.lbound)

    def predicted_flops(self, ratios: Mapping[str, float]) -> int:
        """FLOPs (multiply-accumulates) of the network pruned to (already clipped) ratios."""
        self._check_ratios(ratios)
        return self._budget.flops(self._budget.keep(ratios))

    def evaluate(self, ratios: Mapping[str, float]) -> dict[str, Any]:
        """Clip, prune, reconstruct and evaluate, without a trial.

        Args:
            ratios: One ratio in ``[lbound, rbound]`` per prunable layer.

        Returns:
            The values recorded as user attributes by ``objective(trial)``, under the same
            keys.
        """
        return self._run(ratios, None)

    def __call__(self, trial: optuna.Trial) -> float:
        """Suggest one ratio per prunable layer, prune, and return the top-1 accuracy (%)."""
        ratios = {
            layer.name: trial.suggest_float(layer.name, self.lbound, self.rbound)
            for layer in self._layers
        }
        result = self._run(ratios, trial)
        for key, value in result.items():
            if key != ACTUAL_PARAMS_KEY:
                trial.set_user_attr(key, value)
        return float(result[TOP1_KEY])

    def masked_weights(self, ratios: Mapping[str, float]) -> dict[str, torch.Tensor]:
        """Reconstructed, masked consumer weights for already clipped ratios.

        Args:
            ratios: Actual ratio per prunable layer.

        Returns:
            Layer name -> weight of the original shape, zero in the pruned input channels.
            Layers that keep every channel are left out.
        """
        keep = self._budget.keep(ratios)
        key = tuple(keep[layer.name] for layer in self._layers)
        if self._last_weights is not None and self._last_weights[0] == key:
            return dict(self._last_weights[1])
        out = {}
        for layer in self._layers:
            k = keep[layer.name]
            if k >= layer.channels:
                continue
            kept = select_channels(self._importance[layer.name], k)
            out[layer.name] = reconstruct(
                self._grams[layer.name],
                self._targets[layer.name],
                self._originals[layer.name],
                kept,
            )
        self._last_weights = (key, out)
        return dict(out)

    @contextlib.contextmanager
    def masked(self, ratios: Mapping[str, float]) -> Iterator[nn.Module]:
        """Context manager: the objective's network pruned by masks, as during search.

        Args:
            ratios: One ratio in ``[lbound, rbound]`` per layer (clipped by the budget).

        Yields:
            The objective's own network (on its device, eval mode) with the reconstructed,
            masked weights swapped in. They are restored exactly on exit: do not keep it.
        """
        with self._applied(self.clip(ratios)):
            yield self._model

    @contextlib.contextmanager
    def _applied(self, actual: Mapping[str, float]) -> Iterator[None]:
        weights = self.masked_weights(actual)
        try:
            with torch.no_grad():
                for name, weight in weights.items():
                    self._convs[name].weight.copy_(weight)
            yield
        finally:
            with torch.no_grad():
                for name in weights:
                    self._convs[name].weight.copy_(self._originals[name])

    def kept_channels(self, ratios: Mapping[str, float]) -> dict[str, torch.Tensor]:
        """Sorted indices of the kept input channels of each layer for (clipped) ratios."""
        keep = self._budget.keep(ratios)
        return {
            layer.name: select_channels(self._importance[layer.name], keep[layer.name]).cpu()
            for layer in self._layers
        }

    def export(self, trial_or_ratios: FrozenTrial | Mapping[str, float]) -> nn.Module:
        """Build the physically pruned network of a trial (or of ratios).

        The trial's recorded actual ratios are used when present (its params otherwise);
        ratios are clipped by the budget rule (a no-op on actual ratios). The result has the
        kept channels, the reconstructed weights, and computes what the masked network of
        the search computes.

        Args:
            trial_or_ratios: A finished trial of this objective, or one ratio per layer.

        Returns:
            A new, smaller ``nn.Module`` on the objective's device, in eval mode.
        """
        if isinstance(trial_or_ratios, FrozenTrial):
            source = trial_or_ratios.user_attrs.get(ACTUAL_PARAMS_KEY, trial_or_ratios.params)
        elif isinstance(trial_or_ratios, Mapping):
            source = trial_or_ratios
        else:
            raise TypeError(
                "export needs a FrozenTrial or a mapping of ratios, "
                f"got {type(trial_or_ratios)!r}."
            )
        pruned = self._pruned(self.clip(source))
        for p in pruned.parameters():
            p.requires_grad_(True)
        return pruned

    # -- internals ------------------------------------------------------------------------

    def _pruned(self, actual: Mapping[str, float]) -> nn.Module:
        """The physically pruned copy of the network for clipped ratios (no gradients)."""
        from optuna_bocr.pruning._export import prune_physically

        weights = self.masked_weights(actual)
        model = copy.deepcopy(self._model)
        modules = dict(model.named_modules())
        with torch.no_grad():
            for name, weight in weights.items():
                modules[name].weight.copy_(weight)
        kept = self.kept_channels(actual)
        return prune_physically(model, self._val_x[:1], self._layers, kept).eval()

    def _check_model_device(self, model: nn.Module) -> None:
        devices = {t.device for t in list(model.parameters()) + list(model.buffers())}
        for dev in devices:
            if dev.type != "cpu" and not _same_device(dev, self._device):
                raise ValueError(
                    f"The model is on {dev} but the objective runs on {self._device}: move the "
                    f"model to the CPU or to {self._device}, or pass device={str(dev)!r}."
                )

    def _check_ratios(self, ratios: Mapping[str, float]) -> None:
        if not isinstance(ratios, Mapping):
            raise TypeError(
                f"ratios must be a mapping of layer name -> ratio, got {type(ratios)!r}."
            )
        names = {layer.name for layer in self._layers}
        missing = names - set(ratios)
        unknown = set(ratios) - names
        if missing or unknown:
            raise ValueError(
                f"ratios must have one value per prunable layer; missing {sorted(missing)}, "
                f"unknown {sorted(unknown)}."
            )
        for name, value in ratios.items():
            v = float(value)
            if not math.isfinite(v) or not (self.lbound <= v <= self.rbound):
                raise ValueError(
                    f"Ratio of {name!r} is {value}, outside [lbound, rbound] = "
                    f"[{self.lbound}, {self.rbound}]."
                )

    def _run(self, ratios: Mapping[str, float], trial: optuna.Trial | None) -> dict[str, Any]:
        started = time.perf_counter()
        actual = self.clip(ratios)
        keep = self._budget.keep(actual)
        flops = self._budget.flops(keep)
        params = self._budget.params(keep)
        result: dict[str, Any] = {
            ACTUAL_PARAMS_KEY: {name: float(v) for name, v in actual.items()},
            FLOPS_RATIO_KEY: flops / self.original_flops,
            PARAMS_RATIO_KEY: params / self.original_params,
        }
        if trial is not None:
            for key, value in result.items():
                trial.set_user_attr(key, value)
        if self._evaluate_pruned:
            top1, top5 = self._evaluate_model(self._pruned(actual), trial)
        else:
            with self._applied(actual):
                top1, top5 = self._evaluate_model(self._model, trial)
        result[TOP1_KEY] = top1
        if top5 is not None:
            result[TOP5_KEY] = top5
        result[EVAL_SECONDS_KEY] = time.perf_counter() - started
        return result

    def _evaluate_model(
        self, model: nn.Module, trial: optuna.Trial | None
    ) -> tuple[float, float | None]:
        n = self._val_x.shape[0]
        correct1 = torch.zeros((), dtype=torch.long, device=self._device)
        correct5 = torch.zeros((), dtype=torch.long, device=self._device)
        with_top5 = self.num_classes >= 10
        seen = 0
        autocast_dtype = torch.float16 if self._device.type == "cuda" else torch.bfloat16
        with (
            torch.inference_mode(),
            torch.autocast(self._device.type, dtype=autocast_dtype, enabled=self._autocast),
        ):
            for step, start in enumerate(range(0, n, self._eval_batch_size)):
                x = self._val_x[start : start + self._eval_batch_size]
                y = self._val_y[start : start + self._eval_batch_size]
                logits = model(x)
                if not bool(torch.isfinite(logits).all()):
                    raise ValueError(
                        "The model produced NaN or infinite outputs on the validation data."
                    )
                if with_top5:
                    top = logits.topk(5, dim=1).indices
                    hits = top == y[:, None]
                    correct1 += hits[:, 0].sum()
                    correct5 += hits.any(dim=1).sum()
                else:
                    correct1 += (logits.argmax(dim=1) == y).sum()
                seen += x.shape[0]
                if (
                    trial is not None
                    and self._report_every is not None
                    and (step + 1) % self._report_every == 0
                    and seen < n
                ):
                    trial.report(100.0 * int(correct1) / seen, step)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"Pruned at step {step} ({seen} images).")
        top1 = 100.0 * int(correct1) / n
        return top1, (100.0 * int(correct5) / n if with_top5 else None)
