"""The mixing-method registry: one definition per method of the mixup literature.

Pure numpy (torch only inside the training path, imported there), no Django.
Conventions (DESIGN section 1): lam is the weight of the FIRST image, in pixel
space. A method's definition (a `MixingMethod` in MIXING_METHODS) gives

- `mix_numpy`: uint8 batches (N, H, W, C) -> the mixed uint8 batch, for stimuli;
- `mix_torch`: float tensors (N, C, H, W) on the training device -> the mixed
  batch on that device, for online training;
- the effective lam of each image: the share of image 1 it really holds, which is
  what stimuli record and what label policies are given.

Both paths take the method's random choices (e.g. CutMix's boxes) from one numpy
Generator in the same order, so the same inputs and seed give the same images
(tests/test_mixing.py checks it). Adding a method: write one subclass below and
list it in MIXING_METHODS; the model, forms, stimulus generation and training read
the registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


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
    x1, x2 = np.asarray(x1), np.asarray(x2)
    if lam_arr.ndim == 1 and x1.dtype == np.uint8 and x2.dtype == np.uint8 and x1.ndim > 1:
        unique, inverse = np.unique(lam_arr, return_inverse=True)
        if len(unique) * _LUT_SIZE < x1.size:
            return _mixup_by_table(x1, x2, unique, inverse)
    lam_arr = lam_arr.reshape(lam_arr.shape + (1,) * (x1.ndim - lam_arr.ndim))
    mixed = lam_arr * x1.astype(np.float64) + (1.0 - lam_arr) * x2.astype(np.float64)
    return np.rint(mixed).astype(np.uint8)


_LUT_SIZE = 256 * 256


def _mixup_by_table(
    x1: np.ndarray, x2: np.ndarray, unique: np.ndarray, inverse: np.ndarray
) -> np.ndarray:
    """mixup for uint8 batches with few distinct lams: the same float64 formula evaluated
    once per (lam, x1 level, x2 level) and looked up, so the bytes are identical to the
    direct formula at a fraction of its cost (a stimulus set has ~11 lams)."""
    levels = np.arange(256, dtype=np.float64)
    lam = unique[:, None, None]
    tables = np.rint(lam * levels[None, :, None] + (1.0 - lam) * levels[None, None, :])
    tables = tables.astype(np.uint8).reshape(len(unique), _LUT_SIZE)
    index = (x1.astype(np.intp) << 8) | x2
    index += (inverse * _LUT_SIZE).reshape((-1,) + (1,) * (x1.ndim - 1))
    return tables.reshape(-1)[index]


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
    return MIXING_METHODS["cutmix"].mix_numpy(x1, x2, lam, np.random.default_rng(seed), distinct)


def _cutmix_mask_numpy(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, H, W) bool: True inside each image's box (y0, y1, x0, x1)."""
    rows = np.arange(height)[None, :, None]
    cols = np.arange(width)[None, None, :]
    return (
        (rows >= boxes[:, 0, None, None])
        & (rows < boxes[:, 1, None, None])
        & (cols >= boxes[:, 2, None, None])
        & (cols < boxes[:, 3, None, None])
    )


class MixingMethod:
    """One mixing method. Subclasses set `name` (stored on stimulus sets) and define
    `effective_lams`, `mix_numpy` and `mix_torch`."""

    name: str = ""

    def effective_lams(
        self, lams: np.ndarray, height: int, width: int, distinct: bool = False
    ) -> np.ndarray:
        """(L,) float64: the share of image 1 an H x W image made at each lam holds.
        `distinct`: different lams must stay different (a stimulus set)."""
        raise NotImplementedError

    def mix_numpy(
        self,
        x1: np.ndarray,
        x2: np.ndarray,
        lams: np.ndarray,
        rng: np.random.Generator,
        distinct: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W, C) uint8 x2, (N,) lams -> ((N, H, W, C) uint8, (N,) effective lams)."""
        raise NotImplementedError

    def mix_torch(
        self, x1: torch.Tensor, x2: torch.Tensor, lams: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, np.ndarray]:
        """(N, C, H, W) float tensors on one device, (N,) lams -> (the mixed batch on
        that device, (N,) effective lams)."""
        raise NotImplementedError


class Mixup(MixingMethod):
    """Pixel-wise convex combination (Zhang et al. 2018, "mixup: Beyond Empirical Risk
    Minimization"); uint8 results are rounded to the nearest level."""

    name = "mixup"

    def effective_lams(self, lams, height, width, distinct=False):
        return check_lams(lams).reshape(-1)

    def mix_numpy(self, x1, x2, lams, rng, distinct=False):
        lam_arr = check_lams(lams)
        return mixup(x1, x2, lam_arr), np.broadcast_to(lam_arr, (len(x1),)).copy()

    def mix_torch(self, x1, x2, lams, rng):
        import torch

        lam_arr = np.broadcast_to(check_lams(lams), (x1.shape[0],)).copy()
        shape = (-1,) + (1,) * (x1.ndim - 1)
        # 1 - lam in float64 before the cast, as numpy's path computes it.
        weight1 = torch.as_tensor(lam_arr, dtype=x1.dtype, device=x1.device).reshape(shape)
        weight2 = torch.as_tensor(1.0 - lam_arr, dtype=x1.dtype, device=x1.device).reshape(shape)
        return weight1 * x1 + weight2 * x2, lam_arr


class CutMix(MixingMethod):
    """A box of image 2 pasted into image 1 (Yun et al. 2019, "CutMix"). Box sides are
    whole pixels, so the effective lam is the exact share of pixels kept, not the lam
    asked for (cutmix_areas)."""

    name = "cutmix"

    def effective_lams(self, lams, height, width, distinct=False):
        areas = cutmix_areas(check_lams(lams).reshape(-1), height, width, distinct)
        return (height * width - areas) / float(height * width)

    def mix_numpy(self, x1, x2, lams, rng, distinct=False):
        x1 = np.asarray(x1)
        lam_arr = np.broadcast_to(check_lams(lams), (x1.shape[0],))
        height, width = x1.shape[1], x1.shape[2]
        boxes, kept = cutmix_boxes(lam_arr, height, width, rng, distinct)
        inside = _cutmix_mask_numpy(boxes, height, width)
        return np.where(inside[..., None], x2, x1).astype(np.uint8), kept

    def mix_torch(self, x1, x2, lams, rng):
        import torch

        lam_arr = np.broadcast_to(check_lams(lams), (x1.shape[0],))
        height, width = x1.shape[-2], x1.shape[-1]
        boxes, kept = cutmix_boxes(lam_arr, height, width, rng)
        box = torch.as_tensor(boxes, device=x1.device)
        rows = torch.arange(height, device=x1.device)[None, :, None]
        cols = torch.arange(width, device=x1.device)[None, None, :]
        inside = (
            (rows >= box[:, 0, None, None])
            & (rows < box[:, 1, None, None])
            & (cols >= box[:, 2, None, None])
            & (cols < box[:, 3, None, None])
        )
        return torch.where(inside[:, None], x2, x1), kept


MIXING_METHODS: dict[str, MixingMethod] = {m.name: m for m in (Mixup(), CutMix())}
MIXING_POLICIES = tuple(MIXING_METHODS)


def mixing_choices() -> list[tuple[str, str]]:
    """(name, name) of every registered method, for model and form choices (a callable,
    so registering a method needs no migration)."""
    return [(name, name) for name in MIXING_METHODS]


def get_method(name: str) -> MixingMethod:
    """The registered method called `name`; raises ValueError for any other name."""
    try:
        return MIXING_METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown mixing policy {name!r}; choose from {MIXING_POLICIES}") from None


def effective_lams(
    lams: np.ndarray | list[float], policy: str, height: int, width: int
) -> np.ndarray:
    """The share of image 1 that a stimulus made at each lam really holds (DESIGN
    "effective lam"), for H x W images, distinct lams kept distinct (the method's
    effective_lams). Raises ValueError where that cannot be done."""
    return get_method(policy).effective_lams(check_lams(lams).reshape(-1), height, width, True)


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
    method = get_method(policy)
    lam_arr = check_lams(lams).reshape(-1)
    pairs, n_lams = x1.shape[0], lam_arr.shape[0]
    if not pairs:
        kept = method.effective_lams(lam_arr, x1.shape[1], x1.shape[2], distinct=True)
        return np.zeros((0, n_lams) + x1.shape[1:], np.uint8), kept
    a = np.repeat(x1, n_lams, axis=0)
    b = np.repeat(x2, n_lams, axis=0)
    per_image = np.tile(lam_arr, pairs)
    mixed, kept_all = method.mix_numpy(a, b, per_image, np.random.default_rng(seed), True)
    kept = np.asarray(kept_all[:n_lams], dtype=np.float64)
    return mixed.reshape((pairs, n_lams) + x1.shape[1:]), kept
