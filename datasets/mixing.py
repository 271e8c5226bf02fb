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


def _achievable_areas(height: int, width: int) -> np.ndarray:
    """Every box area h * w (0 <= h <= height, 0 <= w <= width), ascending, unique."""
    return np.unique(np.outer(np.arange(height + 1), np.arange(width + 1)))


def cutmix_areas(
    lams: np.ndarray | list[float], height: int, width: int, distinct: bool = False
) -> np.ndarray:
    """Box areas in pixels, one per lam: the whole-pixel box area nearest (1 - lam) * H * W.

    With `distinct` (a stimulus set), different lams always get different areas: the
    areas minimise the summed distance to the targets under that constraint, so a
    lam is exact wherever its area is a whole box (h * w) and no neighbour needs it.
    Raises ValueError when the image has fewer box areas than distinct lams.
    """
    lams = check_lams(lams).reshape(-1)
    areas = _achievable_areas(height, width).astype(np.float64)
    unique, inverse = np.unique(lams, return_inverse=True)
    targets = (1.0 - unique)[::-1] * (height * width)  # ascending areas
    if not distinct:
        right = np.clip(np.searchsorted(areas, targets), 1, len(areas) - 1)
        left = right - 1
        nearer_left = targets - areas[left] <= areas[right] - targets
        chosen = np.where(nearer_left, areas[left], areas[right])
    else:
        if len(unique) > len(areas):
            raise ValueError(
                f"a {height}x{width} image allows only {len(areas)} different CutMix box "
                f"areas, fewer than the {len(unique)} different lam values asked for"
            )
        chosen = _distinct_nearest(areas, targets)
    return chosen[::-1][inverse].astype(np.int64)


def _distinct_nearest(areas: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Strictly increasing picks from sorted `areas` for sorted `targets`, minimising the
    summed |area - target| (dynamic programme over prefix minima, O(len * areas))."""
    m = len(areas)
    index = np.arange(m)
    cost = np.abs(areas - targets[0])
    back_links = []
    for target in targets[1:]:
        prefix = np.minimum.accumulate(cost)
        new_min = np.ones(m, dtype=bool)
        new_min[1:] = cost[1:] < prefix[:-1]
        prefix_at = np.maximum.accumulate(np.where(new_min, index, 0))
        best = np.full(m, np.inf)
        best[1:] = prefix[:-1]  # the previous pick lies strictly left
        back = np.zeros(m, dtype=np.int64)
        back[1:] = prefix_at[:-1]
        back_links.append(back)
        cost = np.abs(areas - target) + best
    picks = [int(np.argmin(cost))]
    for back in reversed(back_links):
        picks.append(int(back[picks[-1]]))
    return areas[np.array(picks[::-1])]


def _box_sides(area: int, height: int, width: int) -> tuple[int, int]:
    """(h, w) with h * w == area, shaped most like the image (h / H closest to w / W)."""
    if area == 0:
        return 0, 0
    best = None
    for h in range(1, height + 1):
        if area % h == 0 and area // h <= width:
            w = area // h
            skew = abs(h / height - w / width)
            if best is None or skew < best[0]:
                best = (skew, h, w)
    assert best is not None, "areas come from _achievable_areas"
    return best[1], best[2]


def cutmix_boxes(
    lams: np.ndarray,
    height: int,
    width: int,
    rng: np.random.Generator,
    distinct: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (y0, y1, x0, x1) whose areas come from cutmix_areas, placed at random, and
    the effective lam of each: the share of pixels that stays image 1."""
    areas = cutmix_areas(lams, height, width, distinct)
    sides = {a: _box_sides(int(a), height, width) for a in np.unique(areas)}
    box_h = np.array([sides[a][0] for a in areas], dtype=int)
    box_w = np.array([sides[a][1] for a in areas], dtype=int)
    y0 = rng.integers(0, height - box_h + 1)
    x0 = rng.integers(0, width - box_w + 1)
    boxes = np.stack([y0, y0 + box_h, x0, x0 + box_w], axis=1)
    kept = (height * width - areas) / float(height * width)  # kept pixels / all, exactly
    return boxes, kept


def cutmix(
    x1: np.ndarray,
    x2: np.ndarray,
    lam: np.ndarray | float,
    seed: int = 0,
    distinct: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste a box of x2 into x1 so that about a lam share of the pixels stays x1.

    Returns the mixed batch and the effective lam of each image, the exact area
    fraction kept (box sides are whole pixels). `distinct`: see cutmix_areas.
    """
    x1 = np.asarray(x1)
    batch = x1.shape[0]
    lams = np.broadcast_to(check_lams(lam), (batch,))
    height, width = x1.shape[1], x1.shape[2]
    boxes, kept = cutmix_boxes(lams, height, width, np.random.default_rng(seed), distinct)
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


def effective_lams(
    lams: np.ndarray | list[float], policy: str, height: int, width: int
) -> np.ndarray:
    """The share of image 1 that a stimulus made at each lam really holds (DESIGN
    "effective lam"), for H x W images: lam itself for mixup, the kept area for CutMix
    (distinct lams stay distinct). Raises ValueError where that cannot be done."""
    if policy not in MIXING_POLICIES:
        raise ValueError(f"unknown mixing policy {policy!r}; choose from {MIXING_POLICIES}")
    lam_arr = check_lams(lams).reshape(-1)
    if policy == "mixup":
        return lam_arr
    areas = cutmix_areas(lam_arr, height, width, distinct=True)
    return (height * width - areas) / float(height * width)


def mix_pairs(
    x1: np.ndarray,
    x2: np.ndarray,
    lams: np.ndarray | list[float],
    policy: str = "mixup",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Every pair at every lam: (P, H, W, C) x2 -> ((P, L, H, W, C) uint8, (L,) float).

    The second array is the effective lam of each column (effective_lams): store that,
    not the lam asked for. Raises ValueError for an unknown policy or impossible lams.
    """
    if policy not in MIXING_POLICIES:
        raise ValueError(f"unknown mixing policy {policy!r}; choose from {MIXING_POLICIES}")
    lam_arr = check_lams(lams).reshape(-1)
    pairs, n_lams = x1.shape[0], lam_arr.shape[0]
    a = np.repeat(x1, n_lams, axis=0)
    b = np.repeat(x2, n_lams, axis=0)
    per_image = np.tile(lam_arr, pairs)
    if policy == "mixup":
        mixed, kept = mixup(a, b, per_image), lam_arr
    else:
        mixed, kept_all = cutmix(a, b, per_image, seed=seed, distinct=True)
        kept = kept_all[:n_lams] if pairs else effective_lams(lam_arr, policy, *x1.shape[1:3])
    return mixed.reshape((pairs, n_lams) + x1.shape[1:]), np.asarray(kept, dtype=np.float64)
