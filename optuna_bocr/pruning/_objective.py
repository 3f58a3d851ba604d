"""The pruning objective: per-layer preserve ratios -> pruned network -> validation accuracy."""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Mapping
import contextlib
import copy
import time
from typing import Any
from typing import Literal

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
from optuna_bocr.pruning._inputs import check_arguments
from optuna_bocr.pruning._inputs import check_model_device
from optuna_bocr.pruning._inputs import collect
from optuna_bocr.pruning._network import PrunableNetwork
from optuna_bocr.pruning._weights import ChannelWeights
from optuna_bocr.sampler import ParameterFeatures
from optuna_bocr.training._device import resolve_device
from optuna_bocr.training._evaluation import accuracy


class PruningObjective:
    """Optuna objective that prunes a CNN to per-layer preserve ratios and measures accuracy.

    This is the environment of BOCR (and AMC): each prunable layer (see below) gets one
    float parameter, its *preserve ratio* (fraction of its input channels kept), named after
    the layer's module (e.g. ``"layer1.0.conv2"``). For a trial, the ratios are made to meet
    the FLOPs budget by the ``budget_rule`` (:meth:`clip`), each layer keeps the input
    channels of largest L1 importance, the kept weights are refitted by least squares to the
    unpruned layer's outputs on calibration features captured once at construction
    (``reconstruction=True``, the default), the batch-norm running statistics are
    optionally re-estimated on calibration images (``bn_recalibration``), and the top-1
    accuracy (%) on the validation data is returned. By default each trial is evaluated on
    the physically smaller network (what :meth:`export` returns, built in a few hundredths
    of a second), which runs the pruned network's FLOPs rather than the full network's (how
    much faster that is depends on the network and the convolution kernels: 2x for
    MobileNetV1 at 50% FLOPs on a CPU); ``evaluate_pruned=False`` evaluates the full-size
    network with the pruned channels zeroed instead (as the BOCR paper does). Both compute
    the same function up to floating-point rounding.

    Every public method that takes ``ratios`` takes *requested* ratios (one per prunable
    layer, in ``[lbound, rbound]``) and applies the budget rule itself; the rule is a no-op
    on actual ratios (its own results), so passing those gives the same result.

    A layer is prunable when removing its input channels only requires removing the output
    channels of the producing convolution, its batch norm and any depthwise convolutions in
    between (found from torch-pruning's dependency graph, for any CNN). Channels tied to a
    residual add, a concatenation or a grouped convolution are not pruned: in a ResNet only
    the inner convolutions of each block are prunable (the residual stream keeps its width),
    the first convolution (no producer) and the classifier (``Linear``) keep all their inputs.

    Recorded user attributes on each trial (keys in :mod:`optuna_bocr.keys`):
    ``ACTUAL_PARAMS_KEY`` (layer -> actual ratio after the budget rule; set before evaluation, so
    pruned trials have it too), ``FLOPS_RATIO_KEY``, ``PARAMS_RATIO_KEY``, ``TOP1_KEY``,
    ``TOP5_KEY`` and ``EVAL_SECONDS_KEY``.

    Args:
        model: A trained classifier (left untouched: the objective works on a copy).
        calibration: Training images (``(image, label)`` pairs) for the feature capture and
            the batch-norm recalibration.
        validation: Held-out images with labels, never the test set. Held on the device.
        flops_ratio: FLOPs budget as a fraction of the unpruned model's FLOPs, in (0, 1].
        budget_rule: How requested ratios meet the budget. ``"scale"``: all are multiplied
            by one factor, the largest with which the network fits the budget (a request
            over the budget shrinks, one under it grows, the proportions between the layers
            stay). ``"wall"``: the rule of AMC and the BOCR paper; layers are decided in
            network order, each ratio clipped down so that the budget could still be met
            with every later layer at ``lbound`` (a request over the budget loses its last
            layers' channels; one under it stays under). Measured in
            ``benchmarks/RECORD.md`` ("The budget rule").
        lbound: Smallest preserve ratio.
        rbound: Largest preserve ratio.
        device: ``"auto"`` (CUDA if available), or any torch device
            (see :func:`optuna_bocr.training.resolve_device`).
        n_calibration_images: Images used for the feature capture (a seeded random subset
            of a ``Dataset``; the first ones of a ``DataLoader``).
        points_per_layer: Random output positions sampled per image and layer.
        eval_batch_size: Batch size of the validation passes.
        report_every: Report the running top-1 accuracy with ``trial.report`` every this
            many batches (and honour ``trial.should_prune()``); ``None`` never reports.
        autocast: Evaluate under :func:`torch.autocast` (bfloat16; float16 on a GPU without
            bfloat16).
        evaluate_pruned: Evaluate each trial on the physically pruned network (usually
            faster) rather than on the masked full-size network.
        reconstruction: Refit the kept weights by least squares (``False``: keep them as
            they are, and capture no features).
        bn_recalibration: Batches of calibration images on which every trial's network has
            its batch-norm running statistics re-estimated (0: off). The images are one
            fixed set (the first ``bn_recalibration * bn_batch_size`` of the calibration
            subset), held on the device; :meth:`export` recalibrates the same way. Cost:
            forward passes over those images per trial (no backward pass). Off by default:
            with or without the reconstruction, it did not rank pruning strategies by
            fine-tuned accuracy better than the reconstruction alone on both ResNet-20 and
            MobileNetV1 (``benchmarks/README.md``, "Proxy quality").
        bn_batch_size: Images per batch of the recalibration.
        seed: Seed of the calibration subset and sampled positions.

    Raises:
        ValueError: Infeasible budget, bad bounds or counts, no prunable layer, recalibration
            asked of a model without batch norms, empty or mismatched data, model or data on
            another device, an unknown device.
        FloatingPointError: Non-finite model outputs on the validation data.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        calibration: DataLoader | Dataset,
        validation: DataLoader | Dataset,
        flops_ratio: float = 0.5,
        budget_rule: Literal["scale", "wall"] = "scale",
        lbound: float = 0.1,
        rbound: float = 1.0,
        device: str | torch.device = "auto",
        n_calibration_images: int = 3000,
        points_per_layer: int = 10,
        eval_batch_size: int = 1000,
        report_every: int | None = 1,
        autocast: bool = False,
        evaluate_pruned: bool = True,
        reconstruction: bool = True,
        bn_recalibration: int = 0,
        bn_batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        check_arguments(
            model,
            flops_ratio=flops_ratio,
            budget_rule=budget_rule,
            lbound=lbound,
            rbound=rbound,
            counts={
                "n_calibration_images": n_calibration_images,
                "points_per_layer": points_per_layer,
                "eval_batch_size": eval_batch_size,
                "bn_batch_size": bn_batch_size,
            },
            report_every=report_every,
            bn_recalibration=bn_recalibration,
        )
        self._device = resolve_device(device)
        check_model_device(model, self._device)
        self.flops_ratio = float(flops_ratio)
        self.budget_rule: str = budget_rule
        self.lbound = float(lbound)
        self.rbound = float(rbound)
        self._eval_batch_size = int(eval_batch_size)
        self._report_every = report_every
        self._autocast = bool(autocast)
        self._evaluate_pruned = bool(evaluate_pruned)
        self.reconstruction = bool(reconstruction)
        self.bn_recalibration = int(bn_recalibration)
        self._bn_batch_size = int(bn_batch_size)
        self._seed = int(seed)

        self._model = copy.deepcopy(model).to(self._device).eval()
        for p in self._model.parameters():
            p.requires_grad_(False)

        n_bn = self.bn_recalibration * self._bn_batch_size
        n_cal = max(int(n_calibration_images) if self.reconstruction else 1, n_bn)
        cal_x, _ = collect(calibration, "calibration", self._device, n_cal, seed)
        val_x, val_y = collect(validation, "validation", self._device, None, seed)
        if cal_x.shape[1:] != val_x.shape[1:]:
            raise ValueError(
                f"calibration images have shape {tuple(cal_x.shape[1:])} but validation images "
                f"have shape {tuple(val_x.shape[1:])}."
            )
        if n_bn > cal_x.shape[0]:
            raise ValueError(
                f"bn_recalibration={self.bn_recalibration} batches of {self._bn_batch_size} "
                f"need {n_bn} calibration images, the calibration data has {cal_x.shape[0]}: "
                "lower bn_recalibration or bn_batch_size."
            )
        self.input_size: tuple[int, int, int] = tuple(val_x.shape[1:])  # type: ignore[assignment]
        self._net = PrunableNetwork(
            self._model, cal_x[:1].to(self._device), flops_ratio=flops_ratio, lbound=lbound
        )
        self.num_classes = self._net.num_classes
        if val_y.min() < 0 or val_y.max() >= self.num_classes:
            raise ValueError(
                f"validation labels must be in [0, {self.num_classes}) (the model has "
                f"{self.num_classes} outputs), got [{int(val_y.min())}, {int(val_y.max())}]."
            )
        self._layers = self._net.layers
        self._convs = self._net.convs
        self._budget = self._net.budget
        self.original_flops: int = self._net.original_flops
        self.original_params: int = self._net.original_params

        self._weights = ChannelWeights(
            self._model,
            self._convs,
            calibration=cal_x[: int(n_calibration_images)] if self.reconstruction else None,
            points_per_layer=int(points_per_layer),
            seed=seed,
            device=self._device,
        )
        self._bn_x = cal_x[:n_bn].to(self._device)
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
        return self._net.features(self._weights.importance)

    def clip(self, ratios: Mapping[str, float]) -> dict[str, float]:
        """Apply the FLOPs budget rule (``budget_rule``) to requested ratios.

        Args:
            ratios: One ratio in ``[lbound, rbound]`` per prunable layer.

        Returns:
            The actual ratios (plain floats), layer name -> ratio, in network order.
        """
        self._check_ratios(ratios)
        if self.budget_rule == "scale":
            return self._budget.scale(
                ratios, target=self._net.target, lbound=self.lbound, rbound=self.rbound
            )
        return self._budget.clip(ratios, target=self._net.target, lbound=self.lbound)

    def network_key(self, ratios: Mapping[str, float]) -> tuple[int, ...]:
        """The kept channels of every layer, in network order (budget rule applied).

        Ratios with the same key prune to the same network and score the same: pass this to
        ``BOCRSampler(evaluation_key=...)`` so that no trial repeats an earlier network.
        """
        keep = self._keep(self.clip(ratios))
        return tuple(keep[layer.name] for layer in self._layers)

    def predicted_flops(self, ratios: Mapping[str, float]) -> int:
        """Multiply-accumulates of the network pruned to ``ratios`` (budget rule applied)."""
        return self._budget.flops(self._keep(self.clip(ratios)))

    def evaluate(self, ratios: Mapping[str, float]) -> dict[str, Any]:
        """Clip, prune, reconstruct, recalibrate and evaluate, without a trial.

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
        """Consumer weights (reconstructed, or as they are) for ``ratios`` after the budget rule.

        Args:
            ratios: One ratio in ``[lbound, rbound]`` per prunable layer.

        Returns:
            Layer name -> weight of the original shape, zero in the pruned input channels.
            Layers that keep every channel are left out.
        """
        return self._weights.masked(self._keep(self.clip(ratios)))

    def kept_channels(self, ratios: Mapping[str, float]) -> dict[str, torch.Tensor]:
        """Sorted indices of each layer's kept input channels (``ratios``, budget rule applied)."""
        return self._weights.kept(self._keep(self.clip(ratios)))

    @contextlib.contextmanager
    def masked(self, ratios: Mapping[str, float]) -> Iterator[nn.Module]:
        """Context manager: the objective's network pruned by masks, as during search.

        Args:
            ratios: One ratio in ``[lbound, rbound]`` per layer (the budget rule is applied).

        Yields:
            The objective's own network (on its device, eval mode) with the masked weights
            swapped in (and its batch norms recalibrated when ``bn_recalibration`` is on).
            Weights and statistics are restored exactly on exit: do not keep it.
        """
        with self._applied(self.clip(ratios)) as model:
            yield model

    def export(self, trial_or_ratios: FrozenTrial | Mapping[str, float]) -> nn.Module:
        """Build the physically pruned network of a trial (or of ratios).

        The trial's recorded actual ratios are used when present (its params otherwise);
        ratios go through the budget rule (a no-op on actual ratios). The result has the
        kept channels, their weights (reconstructed or not, as in the search), recalibrated
        batch norms when ``bn_recalibration`` is on, and computes what the network scored
        during the search computes.

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

    def _keep(self, actual: Mapping[str, float]) -> dict[str, int]:
        return self._budget.keep(actual)

    def _applied(
        self, actual: Mapping[str, float]
    ) -> contextlib.AbstractContextManager[nn.Module]:
        weights = self._weights.masked(self._keep(actual))
        bn_images = self._bn_x if self.bn_recalibration else None
        return self._net.masked(weights, self._weights.originals, bn_images, self._bn_batch_size)

    def _pruned(self, actual: Mapping[str, float]) -> nn.Module:
        """The physically pruned copy of the network for actual ratios (no gradients)."""
        keep = self._keep(actual)
        bn_images = self._bn_x if self.bn_recalibration else None
        return self._net.pruned(
            self._weights.masked(keep), self._weights.kept(keep), bn_images, self._bn_batch_size
        )

    def _check_ratios(self, ratios: Mapping[str, float]) -> None:
        self._net.check_ratios(ratios, self.lbound, self.rbound)

    def _run(self, ratios: Mapping[str, float], trial: optuna.Trial | None) -> dict[str, Any]:
        started = time.perf_counter()
        actual = self.clip(ratios)
        keep = self._keep(actual)
        result: dict[str, Any] = {
            ACTUAL_PARAMS_KEY: {name: float(v) for name, v in actual.items()},
            FLOPS_RATIO_KEY: self._budget.flops(keep) / self.original_flops,
            PARAMS_RATIO_KEY: self._budget.params(keep) / self.original_params,
        }
        if trial is not None:
            for key, value in result.items():
                trial.set_user_attr(key, value)
        if self._evaluate_pruned:
            top1, top5 = self._evaluate_model(self._pruned(actual), trial)
        else:
            with self._applied(actual) as model:
                top1, top5 = self._evaluate_model(model, trial)
        result[TOP1_KEY] = top1
        result[TOP5_KEY] = top5
        result[EVAL_SECONDS_KEY] = time.perf_counter() - started
        return result

    def _evaluate_model(self, model: nn.Module, trial: optuna.Trial | None) -> tuple[float, float]:
        """Top-1 and top-5 (%) of ``model`` on the validation images (shared loop)."""
        n = self._val_x.shape[0]
        size = self._eval_batch_size
        batches = (
            (self._val_x[i : i + size], self._val_y[i : i + size]) for i in range(0, n, size)
        )
        every = self._report_every

        def report(step: int, seen: int, correct1: torch.Tensor) -> None:
            if trial is None or every is None or (step + 1) % every != 0 or seen >= n:
                return
            trial.report(100.0 * int(correct1) / seen, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"Pruned at step {step} ({seen} images).")

        return accuracy(
            model,
            batches,
            device=self._device,
            autocast=self._autocast,
            what="the validation data",
            on_batch=report,
        )
