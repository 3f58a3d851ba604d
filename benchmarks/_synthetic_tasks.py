"""The synthetic benchmark's tasks: the budget rule, the four tasks, their optimum.

Every parameter is a layer's preserve ratio in ``[lbound, 1]`` (``lbound = 0.1``). Each layer
has a FLOPs weight; the FLOPs of a strategy are ``fixed + sum_i w_i r_i`` and the budget is
half the unpruned FLOPs. The budget is enforced by the same rule as the pruning objective
(AMC's "action wall"): layers are decided in order and each proposed ratio is clipped down so
that the target stays reachable if every later layer went to ``lbound``, never below
``lbound``. The clipped ratios are what is scored, and they are recorded on the trial as the
user attr ``optuna_bocr.keys.ACTUAL_PARAMS_KEY`` (with ``FLOPS_RATIO_KEY``).

Objective (maximised): ``100 - loss`` where ``loss = sum_i a_i * s_i ** q_i``,
``s_i = (1 - r_i) / (1 - lbound)`` (a convex accuracy-loss penalty per layer whose weight
``a_i`` and exponent ``q_i`` depend on the layer's group), except task ``hartmann6-50`` which
maximises ``-Hartmann6`` of six of its fifty ratios. Results are reported as normalised
regret ``(f* - best) / (f* - f_ref)``, where ``f*`` is the task's exact optimum and ``f_ref``
the median score of 10,000 uniformly random (clipped) strategies, i.e. 1 = as good as a typical
random strategy, 0 = optimal.

Tasks (fixed instances, generated from fixed seeds; the run seed only seeds the sampler):

``grouped27``
    27 layers in 3 stages of 9 (ResNet-56 shape: 16/32/64 channels, equal FLOPs per layer).
    The sensitivity group is the stage; features reveal the stages (samples per layer:
    lognormal "L1 importances" with stage-specific location and spread, one per input
    channel; vectors: structural c_in, c_out, k, params, FLOPs, output size, c_in/c_out).
``spread54``
    54 layers in 3 stages of 18 (ResNet-110 shape, FLOPs weights spread +-20%). Sensitivity
    varies inside each stage (lognormal factor, sigma 0.5) and 4 single layers are 8 times
    as sensitive as their stage; the features still only reveal the stages, so tying a stage
    to one ratio leaves regret that only rollback (one variable per layer) can remove.
``misleading27``
    As ``grouped27`` but the sensitivity group is ``layer % 3`` (interleaved), while the
    features reveal the stages: every feature cluster mixes all three sensitivities.
``hartmann6-50``
    50 layers with random FLOPs weights; six layers at random positions feed Hartmann6
    (``x = (r - lbound) / (1 - lbound)``), the other 44 only spend FLOPs. Features are
    honest: uninformative (i.i.d. samples and random vectors for every layer).

Optimum ``f*``: tasks 1-3 minimise a separable convex loss under one linear FLOPs constraint
(feasible strategies are fixed points of the clipping rule and clipped strategies are always
feasible, so the clipped problem has the same optimum). The KKT conditions give
``s_i = (lambda w_i (1 - lbound) / (a_i q_i)) ** (1 / (q_i - 1))`` clipped to [0, 1]; the
multiplier is found by bisection so that the budget is met exactly. This is cross-checked
with scipy SLSQP (``--check-optimum``). Task 4: Hartmann6's known global minimum
-3.32237 at x* (polished with L-BFGS-B), with every other layer at ``lbound``, which meets the
budget (asserted). Also printed per task: the best regret reachable when every *true* group
is tied to one ratio (dense grid over the 3 group ratios, clipped), i.e. what clustering
alone can reach with perfect clusters, and the same with the stages (the groups that the
features reveal) tied.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
import math

import numpy as np
from optuna.distributions import FloatDistribution

from optuna_bocr import ParameterFeatures

TASKS = ("grouped27", "spread54", "misleading27", "hartmann6-50")
LBOUND = 0.1
FLOPS_TARGET = 0.5

# -- The budget rule --------------------------------------------------------------------------


def clip_ratios(
    proposed: np.ndarray, weights: np.ndarray, fixed: float, target: float, lbound: float
) -> np.ndarray:
    """AMC's action wall: clip ratios, layer by layer, so the FLOPs target stays reachable.

    Args:
        proposed: Proposed ratios, shape ``(n_layers,)`` or ``(batch, n_layers)``.
        weights: FLOPs of each layer at ratio 1, shape ``(n_layers,)``.
        fixed: FLOPs that pruning does not touch.
        target: Allowed FLOPs (absolute, same unit as ``weights``).
        lbound: Smallest ratio.

    Returns:
        The actual ratios, same shape as ``proposed``: each is
        ``max(lbound, min(proposed, r_max))`` where ``r_max`` leaves room for every later
        layer at ``lbound``.
    """
    p = np.atleast_2d(np.asarray(proposed, dtype=float))
    out = np.empty_like(p)
    used = np.full(p.shape[0], float(fixed))
    later_min = lbound * (np.sum(weights) - np.cumsum(weights))  # later layers at lbound
    for i, w in enumerate(weights):
        r_max = (target - used - later_min[i]) / w
        out[:, i] = np.maximum(lbound, np.minimum(p[:, i], r_max))
        used += w * out[:, i]
    return out.reshape(np.shape(proposed))


# -- Tasks ------------------------------------------------------------------------------------

_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H6_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
_H6_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)
_H6_XSTAR = np.array([0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573])


def hartmann6(x: np.ndarray) -> np.ndarray:
    """Hartmann6 on [0, 1]^6 (global minimum -3.32237); ``x`` shape ``(..., 6)``."""
    x = np.asarray(x, dtype=float)
    inner = np.sum(_H6_A * (x[..., None, :] - _H6_P) ** 2, axis=-1)
    return -np.sum(_H6_ALPHA * np.exp(-inner), axis=-1)


@dataclass
class SyntheticTask:
    """One fixed synthetic pruning problem."""

    name: str
    description: str
    weights: np.ndarray
    fixed: float
    features: ParameterFeatures
    a: np.ndarray | None = None  # penalty weight per layer (penalty tasks)
    q: np.ndarray | None = None  # penalty exponent per layer (penalty tasks)
    groups: np.ndarray | None = None  # true sensitivity group per layer (penalty tasks)
    feature_groups: np.ndarray | None = None  # groups the features reveal (stages)
    h6_dims: np.ndarray | None = None  # layers that feed Hartmann6 (hartmann task)
    lbound: float = LBOUND
    n_clusters: int = 3
    bridge_clusters: int = 9
    info: dict[str, float] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        """Number of parameters (layers)."""
        return len(self.weights)

    @property
    def names(self) -> list[str]:
        """Parameter names, in layer order."""
        return [f"layer{i:02d}" for i in range(self.dim)]

    @property
    def target(self) -> float:
        """Allowed FLOPs (absolute)."""
        return FLOPS_TARGET * (self.fixed + float(np.sum(self.weights)))

    @property
    def search_space(self) -> dict[str, FloatDistribution]:
        """One float distribution ``[lbound, 1]`` per layer."""
        return {n: FloatDistribution(self.lbound, 1.0) for n in self.names}

    def clip(self, proposed: np.ndarray) -> np.ndarray:
        """Actual ratios after the budget rule."""
        return clip_ratios(proposed, self.weights, self.fixed, self.target, self.lbound)

    def flops_ratio(self, actual: np.ndarray) -> np.ndarray:
        """FLOPs of a strategy / unpruned FLOPs."""
        total = self.fixed + float(np.sum(self.weights))
        return (self.fixed + np.asarray(actual) @ self.weights) / total

    def score_actual(self, actual: np.ndarray) -> np.ndarray:
        """Score (maximised) of actual (already clipped) ratios; batched on the last axis."""
        r = np.asarray(actual, dtype=float)
        if self.h6_dims is not None:
            x = (r[..., self.h6_dims] - self.lbound) / (1.0 - self.lbound)
            return -hartmann6(x)
        assert self.a is not None and self.q is not None
        s = np.clip((1.0 - r) / (1.0 - self.lbound), 0.0, 1.0)
        return 100.0 - np.sum(self.a * s**self.q, axis=-1)

    def score(self, proposed: np.ndarray) -> np.ndarray:
        """Score of proposed ratios (clipped first)."""
        return self.score_actual(self.clip(proposed))


def _resnet_like_features(
    stage_of_layer: np.ndarray, widths: tuple[int, ...], sizes: tuple[int, ...], seed: int
) -> ParameterFeatures:
    """Features that reveal the stages: L1-importance-like samples and structural vectors."""
    rng = np.random.default_rng(seed)
    loc = (0.0, 0.7, 1.4)
    spread = (0.3, 0.5, 0.4)
    samples: dict[str, np.ndarray] = {}
    vectors: dict[str, np.ndarray] = {}
    for i, st in enumerate(stage_of_layer):
        c, hw = widths[st], sizes[st]
        name = f"layer{i:02d}"
        samples[name] = rng.lognormal(loc[st], spread[st], size=c)
        params = 9 * c * c
        vectors[name] = np.array([c, c, 3, params, params * hw * hw, hw, 1.0], dtype=float)
    return ParameterFeatures(samples=samples, vectors=vectors)


def make_task(name: str) -> SyntheticTask:
    """Build the fixed instance of a task."""
    group_a = np.array([6.0, 2.5, 1.0])  # per-layer loss at lbound, by sensitivity group
    group_q = np.array([2.0, 2.5, 3.0])  # convexity, by sensitivity group
    if name in ("grouped27", "misleading27"):
        rng = np.random.default_rng(27)
        stage = np.repeat(np.arange(3), 9)
        groups = stage if name == "grouped27" else np.arange(27) % 3
        a = group_a[groups] * rng.uniform(0.95, 1.05, size=27)
        q = group_q[groups]
        feats = _resnet_like_features(stage, (16, 32, 64), (32, 16, 8), seed=270)
        desc = (
            "27 layers, 3 stages = 3 sensitivity groups; features reveal the groups"
            if name == "grouped27"
            else "27 layers, 3 stages; sensitivity group = layer % 3; features show stages"
        )
        return SyntheticTask(
            name,
            desc,
            np.ones(27),
            fixed=27 * 0.05,
            features=feats,
            a=a,
            q=q,
            groups=groups,
            feature_groups=stage,
        )
    if name == "spread54":
        rng = np.random.default_rng(54)
        stage = np.repeat(np.arange(3), 18)
        a = group_a[stage] * rng.lognormal(0.0, 0.5, size=54)
        sensitive = np.array([5, 21, 33, 47])
        a[sensitive] *= 8.0
        q = group_q[stage]
        weights = rng.uniform(0.8, 1.2, size=54)
        feats = _resnet_like_features(stage, (16, 32, 64), (32, 16, 8), seed=540)
        return SyntheticTask(
            name,
            "54 layers, 3 stages, spread inside stages + 4 single sensitive layers "
            f"({', '.join(map(str, sensitive))}); features reveal the stages only",
            weights,
            fixed=float(np.sum(weights)) * 0.05,
            features=feats,
            a=a,
            q=q,
            groups=stage,
            feature_groups=stage,
        )
    if name == "hartmann6-50":
        rng = np.random.default_rng(50)
        weights = rng.lognormal(0.0, 0.5, size=50)
        dims = np.sort(rng.choice(50, size=6, replace=False))
        names = [f"layer{i:02d}" for i in range(50)]
        samples = {n: rng.lognormal(0.0, 0.5, size=32) for n in names}
        vectors = {n: rng.normal(size=7) for n in names}
        return SyntheticTask(
            name,
            f"Hartmann6 on layers {', '.join(map(str, dims))} of 50; uninformative features",
            weights,
            fixed=float(np.sum(weights)) * 0.05,
            features=ParameterFeatures(samples=samples, vectors=vectors),
            h6_dims=dims,
        )
    raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")


# -- Optimum and reference --------------------------------------------------------------------


def optimum_kkt(task: SyntheticTask) -> np.ndarray:
    """Exact optimum of a penalty task (separable convex loss, one linear budget)."""
    assert task.a is not None and task.q is not None
    lb, w, a, q = task.lbound, task.weights, task.a, task.q
    budget = task.target - task.fixed

    def ratios(lam: float) -> np.ndarray:
        s = np.clip((lam * w * (1 - lb) / (a * q)) ** (1.0 / (q - 1.0)), 0.0, 1.0)
        return 1.0 - s * (1 - lb)

    lo, hi = 0.0, 1.0
    while ratios(hi) @ w > budget:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ratios(mid) @ w > budget else (lo, mid)
    return ratios(hi)


def optimum_hartmann(task: SyntheticTask) -> np.ndarray:
    """Optimum of the Hartmann task: polished x* on its layers, ``lbound`` elsewhere."""
    from scipy.optimize import minimize

    res = minimize(hartmann6, _H6_XSTAR, method="L-BFGS-B", bounds=[(0.0, 1.0)] * 6)
    r = np.full(task.dim, task.lbound)
    assert task.h6_dims is not None
    r[task.h6_dims] = task.lbound + res.x * (1 - task.lbound)
    assert np.allclose(task.clip(r), r), "Hartmann optimum must meet the FLOPs budget"
    return r


def optimum(task: SyntheticTask) -> tuple[float, np.ndarray]:
    """Optimal score and ratios of a task."""
    r = optimum_hartmann(task) if task.h6_dims is not None else optimum_kkt(task)
    r = task.clip(r)  # no-op up to rounding
    return float(task.score_actual(r)), r


def optimum_slsqp(task: SyntheticTask, n_starts: int = 20, seed: int = 0) -> float:
    """Independent check of the optimum: SLSQP with the budget as a linear constraint."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(seed)
    budget = task.target - task.fixed
    cons = [{"type": "ineq", "fun": lambda r: budget - r @ task.weights}]
    best = -math.inf
    for _ in range(n_starts):
        x0 = task.clip(rng.uniform(task.lbound, 1.0, size=task.dim))
        res = minimize(
            lambda r: -float(task.score_actual(r)),
            x0,
            method="SLSQP",
            bounds=[(task.lbound, 1.0)] * task.dim,
            constraints=cons,
            options={"maxiter": 500, "ftol": 1e-12},
        )
        best = max(best, float(task.score_actual(task.clip(res.x))))
    return best


def reference_score(task: SyntheticTask, n: int = 10_000, seed: int = 12345) -> float:
    """Median score of ``n`` uniformly random strategies (after clipping)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(task.lbound, 1.0, size=(n, task.dim))
    return float(np.median(task.score(x)))


def tied_group_optimum(task: SyntheticTask, groups: np.ndarray | None, n_grid: int = 61) -> float:
    """Best score when every group shares one proposed ratio (grid over the 3 ratios)."""
    if groups is None:
        return math.nan
    g = np.linspace(task.lbound, 1.0, n_grid)
    grid = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
    best = -math.inf
    for chunk in np.array_split(grid, 32):
        best = max(best, float(np.max(task.score(chunk[:, groups]))))
    return best


def task_summary(task: SyntheticTask) -> dict[str, float]:
    """Optimum, reference and tied-group optimum of a task (cached on the task)."""
    if not task.info:
        f_star, r_star = optimum(task)
        f_ref = reference_score(task)
        f_tied = tied_group_optimum(task, task.groups)
        f_tied_feat = tied_group_optimum(task, task.feature_groups)
        gap = f_star - f_ref
        task.info = {
            "f_star": f_star,
            "f_ref": f_ref,
            "f_tied": f_tied,
            "tied_regret": (f_star - f_tied) / gap if math.isfinite(f_tied) else -1,
            "tied_feature_regret": (f_star - f_tied_feat) / gap
            if math.isfinite(f_tied_feat)
            else -1,
            "flops_at_optimum": float(task.flops_ratio(r_star)),
        }
    return task.info
