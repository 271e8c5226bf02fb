"""Evaluation metrics (DESIGN section 4) and their summaries over seeds. Pure
numpy/scipy/torch, no Django."""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from .config import FGSM_EPS, PGD_EPS, PGD_RANDOM_START, PGD_STEP, PGD_STEPS

EPS = 1e-12
ECE_BINS = 15
RMS_BIN_SIZE = 100


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == labels).mean())


def top_k_accuracy(probs: np.ndarray, labels: np.ndarray, k: int = 2) -> float:
    """Share of samples whose label is among the k most probable classes; ties go to the
    lower class index, as argmax's do (so k=1 is `accuracy`)."""
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((top == np.asarray(labels)[:, None]).any(axis=1).mean())


def worst_class_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """The lowest per-class accuracy over the classes present in `labels`."""
    labels = np.asarray(labels)
    correct = probs.argmax(axis=1) == labels
    return float(min(correct[labels == c].mean() for c in np.unique(labels)))


def total_variation(probs: np.ndarray, reference: np.ndarray) -> float:
    """Mean over samples of the total-variation distance 1/2 sum_k |p_k - q_k| between
    the model's distribution and the reference (human) one; in [0, 1]."""
    return float(0.5 * np.abs(probs - reference).sum(axis=1).mean())


def entropy(probs: np.ndarray) -> np.ndarray:
    """(N,) Shannon entropy in nats of each row (0 log 0 = 0)."""
    p = np.clip(probs, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=1)


def entropy_spearman(probs: np.ndarray, reference: np.ndarray) -> float | None:
    """Spearman rank correlation between the model's and the humans' per-image
    entropy (do the images people disagree on get the model's flattest outputs?);
    None when either side has no spread (the correlation is undefined)."""
    model_h, human_h = entropy(probs), entropy(reference)
    if len(model_h) < 2 or np.ptp(model_h) == 0 or np.ptp(human_h) == 0:
        return None
    return float(stats.spearmanr(model_h, human_h).statistic)


def undefined_as_none(figures: dict) -> dict:
    """The figures with every non-finite float (NaN, inf: a model whose outputs went NaN
    has no defined CE, ECE, ...) replaced by None, which is what JSON and PostgreSQL's
    jsonb can hold (both refuse NaN) and what summaries over seeds skip."""
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in figures.items()
    }


def human_measures(probs: np.ndarray, soft_labels: np.ndarray | None) -> dict:
    """Measures against human label distributions (None each when there are none):
    ce_human (soft_cross_entropy), tv_human (total_variation), entropy_spearman."""
    if soft_labels is None:
        return {"ce_human": None, "tv_human": None, "entropy_spearman": None}
    return {
        "ce_human": soft_cross_entropy(probs, soft_labels),
        "tv_human": total_variation(probs, soft_labels),
        "entropy_spearman": entropy_spearman(probs, soft_labels),
    }


def soft_cross_entropy(probs: np.ndarray, soft_labels: np.ndarray) -> float:
    """Mean over samples of -sum_k y_k log p_k."""
    return float(-(soft_labels * np.log(np.clip(probs, EPS, 1.0))).sum(axis=1).mean())


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE with equal-width confidence bins."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def rms_calibration_error(
    probs: np.ndarray, labels: np.ndarray, bin_size: int = RMS_BIN_SIZE
) -> float:
    """RMS calibration error with adaptive bins of bin_size samples (sorted by confidence)."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(float)
    order = np.argsort(confidence, kind="stable")
    n = len(order)
    squared = 0.0
    for start in range(0, n, bin_size):
        members = order[start : start + bin_size]
        gap = correct[members].mean() - confidence[members].mean()
        squared += len(members) / n * gap**2
    return float(np.sqrt(squared))


def fgsm(
    model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, eps: float = FGSM_EPS
) -> torch.Tensor:
    """x' = clip(x + eps * sign(grad_x CE(model(x), y)), 0, 1), x in [0, 1] pixel space."""
    x = x.clone().detach().requires_grad_(True)
    loss = F.cross_entropy(model(x).float(), labels)
    (gradient,) = torch.autograd.grad(loss, x)
    return (x + eps * gradient.sign()).clamp(0.0, 1.0).detach()


def pgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    eps: float = PGD_EPS,
    step: float = PGD_STEP,
    steps: int = PGD_STEPS,
    random_start: bool = PGD_RANDOM_START,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L-inf projected gradient descent on CE (Madry et al. 2018), in [0, 1] pixel space:
    from x (plus uniform noise in [-eps, eps] with random_start, drawn from
    `generator` on x's device), `steps` times x' <- clip(proj_eps(x' + step *
    sign(grad_x' CE)), 0, 1). With eps 4/255 and step 1/255, 10 steps can cross the
    ball (8 are needed), so on a model whose loss gradient keeps its sign (a linear
    model) PGD ends at the ball's worst corner. Returns x' detached."""
    x = x.detach()
    low, high = (x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0)
    adv = x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        adv = torch.minimum(torch.maximum(x + (2 * noise - 1) * eps, low), high)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv).float(), labels)
        (gradient,) = torch.autograd.grad(loss, adv)
        adv = torch.minimum(torch.maximum(adv.detach() + step * gradient.sign(), low), high)
    return adv.detach()


# --- summaries over seeds --------------------------------------------------------------

CONFIDENCE = 0.95


def seed_summary(values: list[float], confidence: float = CONFIDENCE) -> dict | None:
    """Mean, sample std (ddof 1) and the `confidence` Student-t interval of the mean,
    mean +- t_{n-1} * std / sqrt(n), of one figure over seeds; None for no values.
    With one seed std is 0 and the interval undefined (None)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if not len(v):
        return None
    n, mean = len(v), float(v.mean())
    std = float(v.std(ddof=1)) if n > 1 else 0.0
    half = None
    if n > 1:
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n))
    return {
        "mean": mean,
        "std": std,
        "n": n,
        "ci_low": mean - half if half is not None else None,
        "ci_high": mean + half if half is not None else None,
        "half_width": half,
    }


def paired_difference(
    a: dict[int, float], b: dict[int, float], alpha: float = 1 - CONFIDENCE
) -> dict | None:
    """Whether policy a's figure differs from policy b's by more than seed noise,
    pairing the two by seed (same seed: same split of randomness, so seed-to-seed
    variation cancels): the per-seed differences a_s - b_s over the seeds both have,
    their mean with its t interval, and the two-sided paired t-test (a one-sample t
    test of the differences against 0). `exceeds_noise` when p < alpha. None with
    fewer than 2 shared seeds (no estimate of the noise). Differences that are all
    equal and non-zero give p = 0; all zero give p = 1."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    diffs = np.array([a[s] - b[s] for s in seeds], dtype=np.float64)
    summary = seed_summary(list(diffs))
    if np.ptp(diffs) == 0:
        p = 0.0 if diffs[0] != 0 else 1.0
    else:
        p = float(stats.ttest_1samp(diffs, 0.0).pvalue)
    return {**summary, "seeds": seeds, "p_value": p, "exceeds_noise": p < alpha}


def reliability_diagram(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> bytes:
    """PNG: accuracy per confidence bin against the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    centres = (edges[:-1] + edges[1:]) / 2
    acc = [correct[index == b].mean() if (index == b).any() else 0.0 for b in range(bins)]
    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    ax.bar(centres, acc, width=1.0 / bins, edgecolor="#1a1a1a", color="#2457a6", alpha=0.8)
    ax.plot([0, 1], [0, 1], linestyle="--", color="#b3261e", linewidth=1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"ECE {expected_calibration_error(probs, labels, bins):.3f}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()
