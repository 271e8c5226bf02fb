"""Label policies: from judgments to soft labels (DESIGN section 3). Numpy, plus a
torch twin of each any-lam rule for labelling batches on the training device (torch
is imported inside those functions only, so the web process never loads it).

A policy labels a mixed point (class c1, class c2, lam = weight of the first image)
with a K-vector. The human policies read the judgments gathered on that point:
perceived lams (Infer) or midpoints (Construct, Select-Shuffled) of its pair,
confidences, and Top-2 Clamp soft labels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# human_fit: a class pair needs this many judgments for a curve of its own; below it,
# the pair uses the curve fitted over all pairs.
MIN_JUDGMENTS_PER_PAIR = 5
# Slope of the logistic curve when only midpoints are known (no Infer judgments at all).
DEFAULT_SLOPE = 10.0


@dataclass
class PointJudgments:
    """What people said about one mixed point."""

    class1: int
    class2: int
    lam: float
    perceived: list[float] = field(default_factory=list)  # perceived lam of image 1
    confidences: list[float | None] = field(default_factory=list)  # 0-1, one per perceived
    soft_labels: list[np.ndarray] = field(default_factory=list)


def perceived_from_midpoint(lam: float, midpoint: float) -> float:
    """The share of image 1 a person perceives, given where they put the 50/50 point:
    piecewise linear through (0, 0), (midpoint, 0.5) and (1, 1)."""
    midpoint = min(max(midpoint, 1e-6), 1 - 1e-6)
    if lam <= midpoint:
        return 0.5 * lam / midpoint
    return 0.5 + 0.5 * (lam - midpoint) / (1.0 - midpoint)


def _two_class(num_classes: int, class1: int, class2: int, share1: float) -> np.ndarray:
    label = np.zeros(num_classes)
    label[class1] += share1
    label[class2] += 1.0 - share1
    return label


def _confidence(point: PointJudgments) -> float:
    known = [c for c in point.confidences if c is not None]
    return float(np.mean(known)) if known else 1.0


def _two_class_batch(
    num_classes: int, class1: np.ndarray, class2: np.ndarray, share1: np.ndarray
) -> np.ndarray:
    """_two_class for a batch: (B,) classes and shares -> (B, K)."""
    class1, class2 = np.asarray(class1, dtype=int), np.asarray(class2, dtype=int)
    share1 = np.broadcast_to(np.asarray(share1, dtype=np.float64), class1.shape)
    labels = np.zeros((len(class1), num_classes))
    rows = np.arange(len(class1))
    np.add.at(labels, (rows, class1), share1)
    np.add.at(labels, (rows, class2), 1.0 - share1)
    return labels


def _mixup_any(c1, c2, lam, num_classes, curves):
    return _two_class_batch(num_classes, c1, c2, lam)


def _uniform_any(c1, c2, lam, num_classes, curves):
    return np.full((len(c1), num_classes), 1.0 / num_classes)


def _human_fit_any(c1, c2, lam, num_classes, curves):
    if curves is None:
        raise ValueError("human_fit needs fitted curves")
    lams = np.broadcast_to(np.asarray(lam, dtype=np.float64), np.shape(c1))
    shares = [curves.share(int(a), int(b), float(x)) for a, b, x in zip(c1, c2, lams, strict=True)]
    return _two_class_batch(num_classes, c1, c2, np.array(shares, dtype=np.float64))


def _lam_tensor(lam, n: int, device):
    """lam (a float, or a (B,) or 0-d tensor) as a (n,) float32 tensor on the device. A
    float becomes a fill, never a host-to-device copy (which would wait for the GPU)."""
    import torch

    if isinstance(lam, torch.Tensor):
        return lam.to(device=device, dtype=torch.float32).expand(n)
    return torch.full((n,), float(lam), dtype=torch.float32, device=device)


def _two_class_torch(num_classes: int, class1, class2, share1):
    """_two_class_batch on tensors: (B,) long classes, share1 a (B,) tensor or a float
    -> (B, K) float32 on the classes' device."""
    import torch

    rows = torch.zeros(len(class1), num_classes, dtype=torch.float32, device=class1.device)
    share = _lam_tensor(share1, len(class1), class1.device)
    rows.scatter_add_(1, class1[:, None], share[:, None].clone())
    rows.scatter_add_(1, class2[:, None], (1.0 - share)[:, None])
    return rows


def _mixup_torch(c1, c2, lam, num_classes, curves):
    return _two_class_torch(num_classes, c1, c2, lam)


def _uniform_torch(c1, c2, lam, num_classes, curves):
    import torch

    return torch.full((len(c1), num_classes), 1.0 / num_classes, device=c1.device)


def _human_fit_torch(c1, c2, lam, num_classes, curves):
    import torch

    if curves is None:
        raise ValueError("human_fit needs fitted curves")
    slopes, mids = curves.tables(num_classes)  # float64 (K, K), cached per curves
    device = c1.device
    key = (device, num_classes)
    if key not in curves._device_tables:
        curves._device_tables[key] = (
            torch.as_tensor(slopes, dtype=torch.float32, device=device),
            torch.as_tensor(mids, dtype=torch.float32, device=device),
        )
    k_table, m_table = curves._device_tables[key]
    low, high = torch.minimum(c1, c2), torch.maximum(c1, c2)
    first_low = c1 < c2
    lam_t = _lam_tensor(lam, len(c1), device)
    lam_low = torch.where(first_low, lam_t, 1.0 - lam_t)
    share_low = torch.sigmoid(k_table[low, high] * (lam_low - m_table[low, high]))
    share = torch.where(first_low, share_low, 1.0 - share_low)
    share = torch.where(c1 == c2, torch.ones_like(share), share)
    return _two_class_torch(num_classes, c1, c2, share)


def _relabel_point(p: PointJudgments, num_classes: int) -> np.ndarray:
    return _two_class(num_classes, p.class1, p.class2, float(np.mean(p.perceived)))


def _relabel_weighted_point(p: PointJudgments, num_classes: int) -> np.ndarray:
    confidences = [1.0 if c is None else c for c in p.confidences]
    weighted = float(np.mean(np.asarray(p.perceived) * np.asarray(confidences)))
    return _two_class(num_classes, p.class1, p.class2, weighted)


def _relabel_uncertain_point(p: PointJudgments, num_classes: int) -> np.ndarray:
    w = _confidence(p)
    relabel = _relabel_point(p, num_classes)
    return w * relabel + (1 - w) * np.full(num_classes, 1.0 / num_classes)


def _soft_categorical_point(p: PointJudgments, num_classes: int) -> np.ndarray:
    return np.mean(np.stack(p.soft_labels), axis=0)


# (class1 (B,), class2 (B,), lam (B,) or scalar, K, curves) -> (B, K) labels.
AnyLamLabels = Callable[[np.ndarray, np.ndarray, Any, int, "PairCurves | None"], np.ndarray]
# The same on tensors: (B,) long classes on a device, a float lam -> (B, K) float32 there.
AnyLamTorch = Callable[[Any, Any, Any, int, "PairCurves | None"], Any]


@dataclass(frozen=True)
class OnlineLabelMap:
    """A policy's labels for online mixing at any lam, for K classes: called with numpy
    (class1 (B,), class2 (B,), lam) -> (B, K) float64, or through `torch` with (B,) long
    tensors on the training device -> (B, K) float32 there, with no host round trip
    (tests/test_policies_metrics.py checks the two agree)."""

    any_lam: AnyLamLabels
    any_lam_torch: AnyLamTorch
    num_classes: int
    curves: PairCurves | None = None

    def __call__(self, class1: np.ndarray, class2: np.ndarray, lam: Any) -> np.ndarray:
        return self.any_lam(class1, class2, lam, self.num_classes, self.curves)

    def torch(self, class1: Any, class2: Any, lam: Any) -> Any:
        """(B,) long tensors, lam a float or (B,) tensor -> (B, K) float32 tensor."""
        return self.any_lam_torch(class1, class2, lam, self.num_classes, self.curves)


@dataclass(frozen=True)
class LabelPolicy:
    """One label policy (DESIGN section 3).

    A policy labels a point either at any (class1, class2, lam) (`any_lam`: the same
    definition labels stored points and online-mixed batches) or from the judgments
    on a stored point (`per_point`), or draws labels (`random`). `evidence` names the
    judgments every point needs ("perceived" lams or "soft" labels; None: none).
    """

    name: str
    any_lam: AnyLamLabels | None = None
    any_lam_torch: AnyLamTorch | None = None  # the same rule on tensors
    per_point: Callable[[PointJudgments, int], np.ndarray] | None = None
    evidence: str | None = None
    # Fits the per-pair curves before labelling: (points, midpoints) -> PairCurves.
    curve_fit: Callable[..., PairCurves] | None = None
    adds_points: bool = True  # False: train on the base images alone

    @property
    def needs_judgments(self) -> bool:
        return self.evidence is not None

    @property
    def fits_curves(self) -> bool:
        return self.curve_fit is not None

    def fit_curves(
        self,
        points: Sequence[PointJudgments],
        midpoints: Sequence[tuple[int, int, float]],
    ) -> PairCurves:
        """The policy's per-pair curves from the judged points and grid midpoints;
        ValueError for a policy that fits none."""
        if self.curve_fit is None:
            raise ValueError(f"{self.name} fits no curves")
        return self.curve_fit(points, midpoints)

    def label_map(
        self, num_classes: int, curves: PairCurves | None = None
    ) -> OnlineLabelMap | None:
        """Labels for online mixing at any lam (numpy, and torch on the training
        device); None when the policy cannot label an arbitrary lam."""
        if self.any_lam is None or self.any_lam_torch is None:
            return None
        return OnlineLabelMap(self.any_lam, self.any_lam_torch, num_classes, curves)


def _random_labels(points, num_classes, rng):
    return rng.dirichlet(np.ones(num_classes), size=len(points))


LABEL_POLICIES: dict[str, LabelPolicy] = {
    p.name: p
    for p in (
        LabelPolicy("onehot", adds_points=False),
        LabelPolicy("random"),
        LabelPolicy("uniform", any_lam=_uniform_any, any_lam_torch=_uniform_torch),
        LabelPolicy("mixup", any_lam=_mixup_any, any_lam_torch=_mixup_torch),
        LabelPolicy("relabel", per_point=_relabel_point, evidence="perceived"),
        LabelPolicy("relabel_weighted", per_point=_relabel_weighted_point, evidence="perceived"),
        LabelPolicy("relabel_uncertain", per_point=_relabel_uncertain_point, evidence="perceived"),
        LabelPolicy(
            "human_fit",
            any_lam=_human_fit_any,
            any_lam_torch=_human_fit_torch,
            evidence="perceived",
            curve_fit=lambda points, midpoints: fit_human_curves(points, midpoints),
        ),
        LabelPolicy(
            "human_fit_posterior",
            any_lam=_human_fit_any,
            any_lam_torch=_human_fit_torch,
            evidence="perceived",
            curve_fit=lambda points, midpoints: fit_human_curves_posterior(points, midpoints),
        ),
        LabelPolicy("soft_categorical", per_point=_soft_categorical_point, evidence="soft"),
    )
}
POLICIES = tuple(LABEL_POLICIES)
# Derived views of the registry, for messages and checks that name several policies.
HUMAN_POLICIES = {name for name, p in LABEL_POLICIES.items() if p.needs_judgments}
LABEL_MAP_POLICIES = {name for name, p in LABEL_POLICIES.items() if p.any_lam is not None}


def policy_choices() -> list[tuple[str, str]]:
    """(name, name) of every registered policy, for model and form choices."""
    return [(name, name) for name in LABEL_POLICIES]


def get_policy(name: str) -> LabelPolicy:
    """The registered policy called `name`; raises ValueError for any other name. The one
    place a policy string is checked."""
    try:
        return LABEL_POLICIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown policy {name!r}; choose from {POLICIES}") from None


def label_points(
    policy: str,
    points: Sequence[PointJudgments],
    num_classes: int,
    rng: np.random.Generator,
    curves: PairCurves | None = None,
) -> np.ndarray:
    """(N, K) labels for the mixed points under a policy ('onehot' adds no points).
    Raises ValueError for an unknown policy, a human policy without the judgments it
    needs on every point, or human_fit without curves."""
    spec = get_policy(policy)
    if not spec.adds_points:
        return np.zeros((0, num_classes))
    if spec.any_lam is not None:
        if spec.fits_curves and curves is None:
            raise ValueError(f"{policy} needs fitted curves")
        if not points:
            return np.zeros((0, num_classes))
        c1 = np.array([p.class1 for p in points])
        c2 = np.array([p.class2 for p in points])
        lam = np.array([p.lam for p in points], dtype=np.float64)
        return spec.any_lam(c1, c2, lam, num_classes, curves)
    if spec.per_point is None:
        return _random_labels(points, num_classes, rng)
    labels = []
    for p in points:
        if spec.evidence == "soft" and not p.soft_labels:
            raise ValueError(f"{policy} needs soft-label judgments on every point")
        if spec.evidence == "perceived" and not p.perceived:
            raise ValueError(f"{policy} needs judgments on every point")
        labels.append(spec.per_point(p, num_classes))
    return np.stack(labels) if labels else np.zeros((0, num_classes))


# --- human_fit: one logistic curve per unordered class pair --------------------------


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def fit_logistic(lams: np.ndarray, shares: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Fit share = sigmoid(k * (lam - m)) by Newton's method on the soft-target log loss;
    returns (k, m). Needs two distinct lams with shares not all equal."""
    x = np.column_stack([lams, np.ones_like(lams)])
    w = np.array([DEFAULT_SLOPE, -DEFAULT_SLOPE * 0.5])
    shares = np.clip(shares, 0.0, 1.0)
    for _ in range(iterations):
        p = _sigmoid(x @ w)
        gradient = x.T @ (p - shares)
        hessian = x.T @ (x * (p * (1 - p))[:, None]) + 1e-6 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    k, b = float(w[0]), float(w[1])
    return k, -b / k if abs(k) > 1e-9 else 0.5


@dataclass
class PairCurves:
    """Fitted (k, m) per unordered class pair, oriented as share of the lower class index."""

    curves: dict[tuple[int, int], tuple[float, float]]
    fallback: tuple[float, float]
    # (device, K) -> (slopes, midpoints) tensors, filled by the torch label map.
    _device_tables: dict = field(default_factory=dict, repr=False, compare=False)

    def tables(self, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """(K, K) slopes and midpoints, entry [low, high] for the pair of classes low <
        high (the fallback curve where the pair has none of its own): share's
        parameters as arrays, for labelling whole batches at once."""
        slopes = np.full((num_classes, num_classes), self.fallback[0], dtype=np.float64)
        mids = np.full((num_classes, num_classes), self.fallback[1], dtype=np.float64)
        for (low, high), (k, m) in self.curves.items():
            slopes[low, high], mids[low, high] = k, m
        return slopes, mids

    def share(self, class1: int, class2: int, lam: float) -> float:
        """Perceived share of class1 in a mix with weight lam on class1."""
        if class1 == class2:
            return 1.0
        key = (min(class1, class2), max(class1, class2))
        k, m = self.curves.get(key, self.fallback)
        lam_low = lam if class1 < class2 else 1.0 - lam  # weight of the lower-index class
        share_low = float(_sigmoid(np.array(k * (lam_low - m))))
        return share_low if class1 < class2 else 1.0 - share_low


def _pair_observations(
    points: Sequence[PointJudgments], midpoints: Sequence[tuple[int, int, float]]
) -> tuple[dict[tuple[int, int], list[tuple[float, float]]], dict[tuple[int, int], list[float]]]:
    """Per unordered pair (low, high class index): the Infer (lam, perceived share) and
    the midpoints, both as the weight of the lower-index class."""
    observations: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for p in points:
        key = (min(p.class1, p.class2), max(p.class1, p.class2))
        flip = p.class1 > p.class2
        for perceived in p.perceived:
            lam, share = (1 - p.lam, 1 - perceived) if flip else (p.lam, perceived)
            observations[key].append((lam, share))
    mids: dict[tuple[int, int], list[float]] = defaultdict(list)
    for class1, class2, midpoint in midpoints:
        key = (min(class1, class2), max(class1, class2))
        mids[key].append(1 - midpoint if class1 > class2 else midpoint)
    return observations, mids


def fit_human_curves(
    points: Sequence[PointJudgments],
    midpoints: Sequence[tuple[int, int, float]],
    min_judgments: int = MIN_JUDGMENTS_PER_PAIR,
) -> PairCurves:
    """Curves from Infer judgments (whole curve) and midpoints (the location m).

    Per pair: m is the mean midpoint when the pair has enough midpoints, else the
    fitted one; k is fitted when the pair has enough Infer judgments, else the
    all-pairs slope. Pairs below min_judgments altogether use the all-pairs curve.
    """
    observations, mids = _pair_observations(points, midpoints)

    all_obs = [o for obs in observations.values() for o in obs]
    if len({round(o[0], 6) for o in all_obs}) >= 2:
        global_k, global_m = fit_logistic(*map(np.array, zip(*all_obs, strict=True)))
    else:
        global_k, global_m = DEFAULT_SLOPE, 0.5
    all_mids = [m for ms in mids.values() for m in ms]
    if all_mids:
        global_m = float(np.mean(all_mids)) if not all_obs else global_m
    curves = {}
    for key in set(observations) | set(mids):
        obs, pair_mids = observations.get(key, []), mids.get(key, [])
        if len(obs) + len(pair_mids) < min_judgments:
            continue
        k, m = global_k, global_m
        if len(obs) >= min_judgments and len({round(o[0], 6) for o in obs}) >= 2:
            k, m = fit_logistic(*map(np.array, zip(*obs, strict=True)))
        if len(pair_mids) >= min_judgments or (pair_mids and len(obs) < min_judgments):
            m = float(np.mean(pair_mids))
        curves[key] = (k, m)
    return PairCurves(curves, (global_k, global_m))


def fit_human_curves_posterior(
    points: Sequence[PointJudgments],
    midpoints: Sequence[tuple[int, int, float]],
    min_judgments: int = MIN_JUDGMENTS_PER_PAIR,
    noise: dict | None = None,
) -> PairCurves:
    """Curves as the posterior mean of (k, m) per pair under the grid posterior of the
    adaptive studies (adaptive.model: Infer answers as noisy perceived shares on 0.05
    bins, midpoints as noisy picks on the 0.1 grid, noise levels fitted to H-Mix by
    default; Kontsevich & Tyler 1999). Pairs below `min_judgments` and the fallback
    curve are fit_human_curves' (the all-pairs logistic fit), so the two policies differ
    only where a pair has its own evidence. Shapes as fit_human_curves."""
    from adaptive import model

    fitted = fit_human_curves(points, midpoints, min_judgments)
    observations, mids = _pair_observations(points, midpoints)
    grid = model.make_grid()
    midpoint_model = model.build_model("select_shuffled", grid, noise)
    all_lams = sorted({round(lam, 6) for obs in observations.values() for lam, _ in obs})
    infer_model = model.build_model("infer", grid, noise, candidates=all_lams or [0.5])
    curves = {}
    for key in fitted.curves:
        log_post = np.log(grid.prior())
        for lam, share in observations.get(key, []):
            log_post += infer_model.loglik(round(lam, 6), share)
        for midpoint in mids.get(key, []):
            log_post += midpoint_model.loglik(None, midpoint)
        probs = np.exp(log_post - log_post.max())
        probs /= probs.sum()
        curves[key] = (float(probs @ grid.k), float(probs @ grid.m))
    return PairCurves(curves, fitted.fallback)
