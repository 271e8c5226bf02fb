"""Mixing policies on uint8 image batches. Pure numpy, no Django.

Conventions (DESIGN section 1): lam is the weight of the FIRST image, in pixel
space; images are (..., H, W, C) uint8.
"""

from __future__ import annotations

import numpy as np

MIXING_POLICIES = ("mixup", "cutmix")


def check_lams(lams: np.ndarray | float | list[float]) -> np.ndarray:
    """Return lams as a float64 array, or raise ValueError if any is outside [0, 1]."""
    arr = np.asarray(lams, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or arr.min(initial=0.0) < 0.0 or arr.max(initial=0.0) > 1.0:
        bad = arr[~((arr >= 0.0) & (arr <= 1.0))]
        raise ValueError(f"lam must lie in [0, 1]; got {bad.tolist()}")
    return arr


def mixup(x1: np.ndarray, x2: np.ndarray, lam: np.ndarray | float) -> np.ndarray:
    """round(lam * x1 + (1 - lam) * x2) for a batch; lam is a scalar or one per image."""
    lam_arr = check_lams(lam)
    lam_arr = lam_arr.reshape(lam_arr.shape + (1,) * (x1.ndim - lam_arr.ndim))
    mixed = lam_arr * x1.astype(np.float64) + (1.0 - lam_arr) * x2.astype(np.float64)
    return np.rint(mixed).astype(np.uint8)


def cutmix_boxes(
    lams: np.ndarray, height: int, width: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (y0, y1, x0, x1) covering a (1 - lam) share of the image, and the exact lam kept."""
    lams = check_lams(lams).reshape(-1)
    side = np.sqrt(1.0 - lams)
    box_h = np.rint(height * side).astype(int)
    box_w = np.rint(width * side).astype(int)
    y0 = rng.integers(0, height - box_h + 1)
    x0 = rng.integers(0, width - box_w + 1)
    boxes = np.stack([y0, y0 + box_h, x0, x0 + box_w], axis=1)
    kept = 1.0 - (box_h * box_w) / float(height * width)
    return boxes, kept


def cutmix(
    x1: np.ndarray, x2: np.ndarray, lam: np.ndarray | float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Paste a box of x2 into x1 so that a lam share of the pixels stays x1.

    Returns the mixed batch and the exact area fraction kept (box sides are whole
    pixels, so it can differ slightly from the lam asked for).
    """
    x1 = np.asarray(x1)
    batch = x1.shape[0]
    lams = np.broadcast_to(check_lams(lam), (batch,))
    height, width = x1.shape[1], x1.shape[2]
    boxes, kept = cutmix_boxes(lams, height, width, np.random.default_rng(seed))
    rows = np.arange(height)[None, :, None]
    cols = np.arange(width)[None, None, :]
    inside = (
        (rows >= boxes[:, 0, None, None])
        & (rows < boxes[:, 1, None, None])
        & (cols >= boxes[:, 2, None, None])
        & (cols < boxes[:, 3, None, None])
    )
    mixed = np.where(inside[..., None], x2, x1).astype(np.uint8)
    return mixed, kept


def mix_pairs(
    x1: np.ndarray,
    x2: np.ndarray,
    lams: np.ndarray | list[float],
    policy: str = "mixup",
    seed: int = 0,
) -> np.ndarray:
    """Every pair at every lam: (P, H, W, C) x2 -> (P, L, H, W, C) uint8."""
    if policy not in MIXING_POLICIES:
        raise ValueError(f"unknown mixing policy {policy!r}; choose from {MIXING_POLICIES}")
    lam_arr = check_lams(lams).reshape(-1)
    pairs, n_lams = x1.shape[0], lam_arr.shape[0]
    a = np.repeat(x1, n_lams, axis=0)
    b = np.repeat(x2, n_lams, axis=0)
    per_image = np.tile(lam_arr, pairs)
    if policy == "mixup":
        mixed = mixup(a, b, per_image)
    else:
        mixed, _ = cutmix(a, b, per_image, seed=seed)
    return mixed.reshape((pairs, n_lams) + x1.shape[1:])
