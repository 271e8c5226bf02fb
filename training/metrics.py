"""Evaluation metrics (DESIGN section 4). Pure numpy/torch, no Django."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F

from .config import FGSM_EPS

EPS = 1e-12
ECE_BINS = 15
RMS_BIN_SIZE = 100


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == labels).mean())


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
