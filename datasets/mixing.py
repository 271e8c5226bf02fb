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
    chosen = _nearest_counts(
        (1.0 - lams) * (height * width),
        areas,
        distinct,
        f"a {height}x{width} image allows only {len(areas)} different CutMix box areas",
    )
    return chosen.astype(np.int64)


def _nearest_counts(
    targets: np.ndarray, counts: np.ndarray, distinct: bool, too_fine: str
) -> np.ndarray:
    """(L,) targets -> (L,) values from the ascending `counts` (pixel counts an image
    allows): the nearest (a tie takes the smaller), or with `distinct` different values
    for different targets, minimising the summed distance (_distinct_nearest). Raises
    ValueError, starting with `too_fine`, when there are fewer counts than targets."""
    unique, inverse = np.unique(targets, return_inverse=True)
    if not distinct:
        right = np.clip(np.searchsorted(counts, unique), 1, len(counts) - 1)
        left = right - 1
        nearer_left = unique - counts[left] <= counts[right] - unique
        chosen = np.where(nearer_left, counts[left], counts[right])
    else:
        if len(unique) > len(counts):
            raise ValueError(
                f"{too_fine}, fewer than the {len(unique)} different lam values asked for"
            )
        chosen = _distinct_nearest(counts, unique)
    return chosen[inverse.reshape(-1)]


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


def box_sizes(
    lams: np.ndarray, height: int, width: int, distinct: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N,) lams -> box heights, widths (N,) int and the effective lam of each: the box
    area comes from cutmix_areas, its shape is the image's as nearly as whole pixels
    allow, and the effective lam is the exact share of pixels outside it."""
    areas = cutmix_areas(lams, height, width, distinct)
    sides = {a: _box_sides(int(a), height, width) for a in np.unique(areas)}
    box_h = np.array([sides[a][0] for a in areas], dtype=int)
    box_w = np.array([sides[a][1] for a in areas], dtype=int)
    kept = (height * width - areas) / float(height * width)  # kept pixels / all, exactly
    return box_h, box_w, kept


def cutmix_boxes(
    lams: np.ndarray,
    height: int,
    width: int,
    rng: np.random.Generator,
    distinct: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (y0, y1, x0, x1) whose areas come from cutmix_areas, placed at random, and
    the effective lam of each: the share of pixels that stays image 1."""
    box_h, box_w, kept = box_sizes(lams, height, width, distinct)
    y0 = rng.integers(0, height - box_h + 1)
    x0 = rng.integers(0, width - box_w + 1)
    boxes = np.stack([y0, y0 + box_h, x0, x0 + box_w], axis=1)
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
    """One mixing method. Subclasses set `name` (stored on stimulus sets and training
    jobs) and define `effective_lams`, `mix_numpy` and `mix_torch`.

    `space` is "image" for methods that make images (stimulus sets, online training)
    and "hidden" for methods that mix a network's hidden states (training only; they
    make no images, so stimulus sets never offer them). A method's effective lams
    depend only on the lams and the image size, never on pixel values, so the torch
    path never reads the device back to know them.
    """

    name: str = ""
    space: str = "image"

    @property
    def makes_images(self) -> bool:
        return self.space == "image"

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


def to_device(array: np.ndarray, device: torch.device, dtype: torch.dtype | None = None):
    """A host array as a tensor on `device`. On CUDA the copy goes through pinned memory
    with non_blocking=True: a copy from pageable memory makes the host wait for the
    device's queued work, so the next training step could not be queued meanwhile (the
    caching host allocator keeps the pinned block alive until the copy is done)."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if torch.device(device).type == "cuda":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    else:
        tensor = tensor.to(device)
    return tensor if dtype is None else tensor.to(dtype)


def _blend_torch(x1: torch.Tensor, x2: torch.Tensor, lams: np.ndarray) -> torch.Tensor:
    """lam * x1 + (1 - lam) * x2 with one lam per row of the first dimension; 1 - lam is
    taken in float64 before the cast, as numpy's path computes it."""

    shape = (-1,) + (1,) * (x1.ndim - 1)
    lams = np.asarray(lams, dtype=np.float64)
    weight1 = to_device(lams, x1.device, x1.dtype).reshape(shape)
    weight2 = to_device(1.0 - lams, x1.device, x1.dtype).reshape(shape)
    return weight1 * x1 + weight2 * x2


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
        lam_arr = np.broadcast_to(check_lams(lams), (x1.shape[0],)).copy()
        return _blend_torch(x1, x2, lam_arr), lam_arr


def _box_mask_torch(
    y0: torch.Tensor, y1: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """(N,) box edges on a device -> (N, 1, H, W) bool, True inside each image's box."""
    import torch

    rows = torch.arange(height, device=y0.device)[None, :, None]
    cols = torch.arange(width, device=y0.device)[None, None, :]
    inside = (
        (rows >= y0[:, None, None])
        & (rows < y1[:, None, None])
        & (cols >= x0[:, None, None])
        & (cols < x1[:, None, None])
    )
    return inside[:, None]


def _boxes_to_device(boxes: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:

    box = to_device(boxes, device)
    return box[:, 0], box[:, 1], box[:, 2], box[:, 3]


class _BoxMethod(MixingMethod):
    """Methods that paste a box of image 2 into image 1: the box area follows CutMix's
    rule (cutmix_areas), so the effective lam is the exact share of pixels outside it."""

    def effective_lams(self, lams, height, width, distinct=False):
        areas = cutmix_areas(check_lams(lams).reshape(-1), height, width, distinct)
        return (height * width - areas) / float(height * width)


class CutMix(_BoxMethod):
    """A box of image 2 pasted into image 1 (Yun et al. 2019, "CutMix: Regularization
    Strategy to Train Strong Classifiers with Localizable Features"). Box sides are
    whole pixels, so the effective lam is the exact share of pixels kept, not the lam
    asked for (cutmix_areas); the box lies wholly inside the image, placed at random."""

    name = "cutmix"

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
        inside = _box_mask_torch(*_boxes_to_device(boxes, x1.device), height, width)
        return torch.where(inside, x2, x1), kept


# --- FMix -------------------------------------------------------------------------------


def low_frequency_noise(
    n: int, height: int, width: int, rng: np.random.Generator, decay_power: float = 3.0
) -> np.ndarray:
    """(n, H, W) float64 grey-level fields from low-frequency Fourier noise (Harris et al.
    2020, "FMix: Enhancing Mixed Sample Data Augmentation", section 3): complex Gaussian
    coefficients scaled by 1 / f ** decay_power (frequency f in cycles per pixel, floored
    at 1 / max(H, W)), transformed back to image space. Draws n * H * (W // 2 + 1) * 2
    standard normals from rng."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    freqs = np.sqrt(fx * fx + fy * fy)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(height, width)) ** decay_power
    draws = rng.standard_normal((n, height, width // 2 + 1, 2))
    spectrum = scale * (draws[..., 0] + 1j * draws[..., 1])
    return np.fft.irfft2(spectrum, s=(height, width))


def fmix_masks(
    lams: np.ndarray,
    height: int,
    width: int,
    rng: np.random.Generator,
    distinct: bool = False,
    decay_power: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(N,) lams -> ((N, H, W) bool, True where image 1 stays; (N,) effective lams).

    FMix binarises each low-frequency field (low_frequency_noise) by keeping its
    highest pixels: exactly the whole number of pixels nearest lam * H * W (a half
    rounds down; `distinct`: different lams keep different counts), so the effective
    lam, kept pixels / (H * W), is exact. Ties between equal field values are broken
    by pixel order (a stable sort). Raises ValueError when a set's lams are too many
    for the image's pixel counts."""
    pixels = height * width
    counts = _nearest_counts(
        check_lams(lams).reshape(-1) * pixels,
        np.arange(pixels + 1, dtype=np.float64),
        distinct,
        f"a {height}x{width} image allows only {pixels + 1} different FMix pixel counts",
    ).astype(np.int64)
    field = low_frequency_noise(len(counts), height, width, rng, decay_power).reshape(-1, pixels)
    order = np.argsort(-field, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(pixels)[None, :], axis=1)
    keep = ranks < counts[:, None]
    return keep.reshape(-1, height, width), counts / float(pixels)


class FMix(MixingMethod):
    """Image 1 kept where a low-frequency Fourier noise field is highest, image 2
    elsewhere (Harris et al. 2020, "FMix: Enhancing Mixed Sample Data Augmentation";
    decay power 3 as in the paper's CIFAR-10 runs). The kept share equals the
    effective lam exactly (fmix_masks). The paper draws one mask per batch; here each
    image gets its own, so a stimulus set's pairs differ in shape, not in share. The
    masks are drawn on the host from the method's numpy Generator (as CutMix's boxes
    are) and the batch is mixed on its device."""

    name = "fmix"
    decay_power = 3.0

    def effective_lams(self, lams, height, width, distinct=False):
        pixels = height * width
        counts = _nearest_counts(
            check_lams(lams).reshape(-1) * pixels,
            np.arange(pixels + 1, dtype=np.float64),
            distinct,
            f"a {height}x{width} image allows only {pixels + 1} different FMix pixel counts",
        )
        return counts / float(pixels)

    def mix_numpy(self, x1, x2, lams, rng, distinct=False):
        x1 = np.asarray(x1)
        lam_arr = np.broadcast_to(check_lams(lams), (x1.shape[0],))
        keep, kept = fmix_masks(lam_arr, x1.shape[1], x1.shape[2], rng, distinct, self.decay_power)
        return np.where(keep[..., None], x1, x2).astype(np.uint8), kept

    def mix_torch(self, x1, x2, lams, rng):
        import torch

        lam_arr = np.broadcast_to(check_lams(lams), (x1.shape[0],))
        keep, kept = fmix_masks(lam_arr, x1.shape[-2], x1.shape[-1], rng, False, self.decay_power)
        keep_t = to_device(keep, x1.device)
        return torch.where(keep_t[:, None], x1, x2), kept


# --- ResizeMix --------------------------------------------------------------------------


def _resize_sources(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, H, W) int: for each pixel of each image, the flat pixel (row * W + col) of
    image 2 that a nearest-neighbour resize of the whole of image 2 into the image's box
    puts there (source row floor((r - y0) * H / h), in whole numbers); pixels outside
    the box get an index that is in range but unused."""
    rows = np.arange(height)[None, :]
    cols = np.arange(width)[None, :]
    box_h = np.maximum(boxes[:, 1] - boxes[:, 0], 1)[:, None]
    box_w = np.maximum(boxes[:, 3] - boxes[:, 2], 1)[:, None]
    src_rows = np.clip((rows - boxes[:, 0, None]) * height // box_h, 0, height - 1)
    src_cols = np.clip((cols - boxes[:, 2, None]) * width // box_w, 0, width - 1)
    return src_rows[:, :, None] * width + src_cols[:, None, :]


class ResizeMix(_BoxMethod):
    """The whole of image 2, shrunk into a box, pasted onto image 1 (Qin et al. 2020,
    "ResizeMix: Mixing Data with Preserved Object Information and True Labels"). The box
    area follows CutMix's rule and its place is random, so the pasted area is 1 - lam
    to the pixel and the effective lam is the exact share of image 1 left outside it.
    The resize is nearest-neighbour (the paper's code interpolates with mode
    "nearest"), in whole numbers so both paths pick the same source pixels."""

    name = "resizemix"

    def mix_numpy(self, x1, x2, lams, rng, distinct=False):
        x1, x2 = np.asarray(x1), np.asarray(x2)
        n, height, width = x1.shape[:3]
        lam_arr = np.broadcast_to(check_lams(lams), (n,))
        boxes, kept = cutmix_boxes(lam_arr, height, width, rng, distinct)
        source = _resize_sources(boxes, height, width)
        shrunk = x2.reshape(n, height * width, -1)[np.arange(n)[:, None, None], source]
        inside = _cutmix_mask_numpy(boxes, height, width)
        return np.where(inside[..., None], shrunk, x1).astype(np.uint8), kept

    def mix_torch(self, x1, x2, lams, rng):
        import torch

        n, channels, height, width = x1.shape
        lam_arr = np.broadcast_to(check_lams(lams), (n,))
        boxes, kept = cutmix_boxes(lam_arr, height, width, rng)
        source = to_device(_resize_sources(boxes, height, width), x1.device)
        index = source.reshape(n, 1, height * width).expand(n, channels, height * width)
        shrunk = torch.gather(x2.reshape(n, channels, height * width), 2, index)
        inside = _box_mask_torch(*_boxes_to_device(boxes, x1.device), height, width)
        return torch.where(inside, shrunk.reshape(x1.shape), x1), kept


# --- SaliencyMix ------------------------------------------------------------------------


def _grey_weights(channels: int) -> np.ndarray:
    """Luma weights (ITU-R BT.601, as OpenCV's RGB -> grey) for 3 channels, else a mean."""
    if channels == 3:
        return np.array([0.299, 0.587, 0.114])
    return np.full(channels, 1.0 / channels)


def _gaussian_matrix(size: int, sigma: float) -> np.ndarray:
    """(size, size) Gaussian smoothing as a matrix: row i weighs pixel i + k by
    exp(-k^2 / (2 sigma^2)) for |k| <= ceil(3 sigma), normalised, with offsets past the
    border reflected without repeating the edge (OpenCV's default border, reflect-101)."""
    if size == 1:
        return np.ones((1, 1))
    radius = int(np.ceil(3.0 * sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets**2) / (2.0 * sigma * sigma))
    kernel /= kernel.sum()
    period = 2 * (size - 1)
    columns = (np.arange(size)[:, None] + offsets[None, :]) % period
    columns = np.where(columns > size - 1, period - columns, columns)
    matrix = np.zeros((size, size))
    np.add.at(
        matrix,
        (np.repeat(np.arange(size), len(offsets)), columns.reshape(-1)),
        np.tile(kernel, size),
    )
    return matrix


def _spectral_residual(grey, xp, smooth_rows, smooth_cols):
    """The spectral-residual saliency of (N, H, W) float64 grey images, written once for
    numpy and torch (`xp` is either module; the smoothing matrices are its arrays)."""
    spectrum = xp.fft.fft2(grey)
    amplitude = xp.abs(spectrum)
    # A floor of 1e-3 of the mean amplitude: the exact zeros of synthetic images (flat
    # areas, whole-pixel squares) would otherwise dominate the log spectrum.
    floor = 1e-3 * amplitude.mean(axis=(-2, -1), keepdims=True) + 1e-12
    log_amplitude = xp.log(amplitude + floor)
    local_mean = (
        sum(
            xp.roll(xp.roll(log_amplitude, dy, -2), dx, -1)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        )
        / 9.0
    )  # 3 x 3 mean filter over the (periodic) spectrum
    residual = log_amplitude - local_mean
    back = xp.fft.ifft2(xp.exp(residual + 1j * xp.angle(spectrum)))
    energy = xp.abs(back) ** 2
    return smooth_rows @ energy @ smooth_cols.T


def spectral_residual_saliency(grey: np.ndarray) -> np.ndarray:
    """(N, H, W) grey images -> (N, H, W) float64 saliency maps by the spectral residual
    (Hou & Zhang 2007, "Saliency Detection: A Spectral Residual Approach"): the log
    amplitude spectrum (amplitudes floored at 1e-3 of their mean) minus its 3 x 3 local
    mean, back to image space with the original phase, squared, smoothed by a Gaussian
    of sigma max(H, W) / 8 (the paper's sigma 8 at its 64-pixel working width). Images
    are used at their own size (the paper shrinks larger images to 64 pixels wide)."""
    grey = np.asarray(grey, dtype=np.float64)
    height, width = grey.shape[-2:]
    sigma = max(height, width) / 8.0
    return _spectral_residual(
        grey, np, _gaussian_matrix(height, sigma), _gaussian_matrix(width, sigma)
    )


def spectral_residual_saliency_torch(grey: torch.Tensor) -> torch.Tensor:
    """spectral_residual_saliency on a device: (N, H, W) tensor -> (N, H, W) float64
    tensor on the same device (float64 so both paths find the same peak)."""
    import torch

    grey = grey.to(torch.float64)
    height, width = grey.shape[-2:]
    sigma = max(height, width) / 8.0
    rows = to_device(_gaussian_matrix(height, sigma), grey.device)
    cols = to_device(_gaussian_matrix(width, sigma), grey.device)
    return _spectral_residual(grey, torch, rows, cols)


def _centred_starts(centre, size, limit, xp):
    """First row (or column) of boxes of `size` centred on `centre` (centre - size // 2),
    moved inside [0, limit): the box keeps its size and still contains the centre."""
    return xp.minimum(xp.maximum(centre - size // 2, 0 * size), limit - size)


class SaliencyMix(_BoxMethod):
    """CutMix with the box centred on the most salient pixel of image 2 (Uddin et al.
    2021, "SaliencyMix: A Saliency Guided Data Augmentation Strategy for Better
    Regularization"): image 2's pixels in that box are pasted onto image 1 at the same
    place. Saliency is the spectral residual (spectral_residual_saliency; the paper uses
    OpenCV's fine-grained static saliency and reports the spectral residual as an
    alternative), computed on the batch's device in the torch path. The box area follows
    CutMix's rule; where the box would cross the border it is moved inside rather than
    cut (the paper cuts it), so it keeps its area, still contains the salient pixel, and
    every pair of a stimulus set holds the set's effective lam."""

    name = "saliencymix"

    def mix_numpy(self, x1, x2, lams, rng, distinct=False):
        x1, x2 = np.asarray(x1), np.asarray(x2)
        n, height, width, channels = x1.shape
        lam_arr = np.broadcast_to(check_lams(lams), (n,))
        box_h, box_w, kept = box_sizes(lam_arr, height, width, distinct)
        grey = x2.astype(np.float64) @ _grey_weights(channels)
        peak = spectral_residual_saliency(grey).reshape(n, -1).argmax(axis=1)
        y0 = _centred_starts(peak // width, box_h, height, np)
        x0 = _centred_starts(peak % width, box_w, width, np)
        boxes = np.stack([y0, y0 + box_h, x0, x0 + box_w], axis=1)
        inside = _cutmix_mask_numpy(boxes, height, width)
        return np.where(inside[..., None], x2, x1).astype(np.uint8), kept

    def mix_torch(self, x1, x2, lams, rng):
        import torch

        n, channels, height, width = x1.shape
        lam_arr = np.broadcast_to(check_lams(lams), (n,))
        box_h, box_w, kept = box_sizes(lam_arr, height, width)
        weights = to_device(_grey_weights(channels), x1.device)
        grey = torch.einsum("nchw,c->nhw", x2.to(torch.float64), weights)
        peak = spectral_residual_saliency_torch(grey).reshape(n, -1).argmax(dim=1)
        sides = to_device(np.stack([box_h, box_w]), x1.device)
        y0 = _centred_starts(peak // width, sides[0], height, torch)
        x0 = _centred_starts(peak % width, sides[1], width, torch)
        inside = _box_mask_torch(y0, y0 + sides[0], x0, x0 + sides[1], height, width)
        return torch.where(inside, x2, x1), kept


# --- Manifold Mixup (hidden states; training only) ---------------------------------------


def mix_hidden(h: torch.Tensor, index: torch.Tensor, lam: float | np.ndarray) -> torch.Tensor:
    """Manifold Mixup's mixing of a hidden batch (Verma et al. 2019, "Manifold Mixup:
    Better Representations by Interpolating Hidden States"): lam * h + (1 - lam) *
    h[index].

    h: (N, ...) hidden states (any float dtype, any device); index: (N,) long tensor on
    h's device, the partner of each row (a permutation of the batch); lam: one float
    for the batch, or (N,) floats, one per row. Returns a tensor shaped and typed like h,
    on its device. The label of row i is then the label map at (class_i,
    class_index[i], lam): hidden states mix linearly, so the effective lam is lam.
    Raises ValueError for a lam outside [0, 1]."""
    lam_arr = np.broadcast_to(check_lams(lam), (h.shape[0],)).copy()
    return _blend_torch(h, h[index], lam_arr)


class ManifoldMixup(MixingMethod):
    """Mixup of hidden states at a block chosen at random per batch (Verma et al. 2019,
    "Manifold Mixup: Better Representations by Interpolating Hidden States"; for PreAct
    ResNet-18 the paper mixes at the input or after its first or second residual stage).
    Training only: the model's forward mixes with `mix_hidden`, so this entry makes no
    images (`space` "hidden"): stimulus sets do not offer it and mix_numpy / mix_torch
    refuse. The effective lam is lam (the mixing is linear)."""

    name = "manifold_mixup"
    space = "hidden"

    def effective_lams(self, lams, height, width, distinct=False):
        return check_lams(lams).reshape(-1)

    def _refuse(self):
        raise ValueError(
            f"{self.name} mixes hidden states inside the model (mix_hidden); it makes no images"
        )

    def mix_numpy(self, x1, x2, lams, rng, distinct=False):
        self._refuse()

    def mix_torch(self, x1, x2, lams, rng):
        self._refuse()


MIXING_METHODS: dict[str, MixingMethod] = {
    m.name: m for m in (Mixup(), CutMix(), FMix(), ResizeMix(), SaliencyMix(), ManifoldMixup())
}
MIXING_POLICIES = tuple(MIXING_METHODS)
# The methods that make images: a stimulus set may use these (and only these).
IMAGE_MIXING_METHODS = tuple(name for name, m in MIXING_METHODS.items() if m.makes_images)


def mixing_choices() -> list[tuple[str, str]]:
    """(name, name) of every registered method, for training's online mixing choices (a
    callable, so registering a method needs no migration)."""
    return [(name, name) for name in MIXING_METHODS]


def image_mixing_choices() -> list[tuple[str, str]]:
    """(name, name) of every method that makes images: a stimulus set's choices."""
    return [(name, name) for name in IMAGE_MIXING_METHODS]


def get_method(name: str) -> MixingMethod:
    """The registered method called `name`; raises ValueError for any other name."""
    try:
        return MIXING_METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown mixing policy {name!r}; choose from {MIXING_POLICIES}") from None


def get_image_method(name: str) -> MixingMethod:
    """get_method for making images; also raises ValueError for a hidden-space method."""
    method = get_method(name)
    if not method.makes_images:
        raise ValueError(
            f"{name} mixes hidden states during training and makes no images; "
            f"a stimulus set uses one of {IMAGE_MIXING_METHODS}"
        )
    return method


def effective_lams(
    lams: np.ndarray | list[float], policy: str, height: int, width: int
) -> np.ndarray:
    """The share of image 1 that a stimulus made at each lam really holds (DESIGN
    "effective lam"), for H x W images, distinct lams kept distinct (the method's
    effective_lams). Raises ValueError where that cannot be done, or for a method that
    makes no images."""
    method = get_image_method(policy)
    return method.effective_lams(check_lams(lams).reshape(-1), height, width, True)


def mix_pairs(
    x1: np.ndarray,
    x2: np.ndarray,
    lams: np.ndarray | list[float],
    policy: str = "mixup",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Every pair at every lam: (P, H, W, C) x2 -> ((P, L, H, W, C) uint8, (L,) float).

    The second array is the effective lam of each column (effective_lams): store that,
    not the lam asked for. Raises ValueError for an unknown policy, a method that makes
    no images, or impossible lams.
    """
    method = get_image_method(policy)
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
