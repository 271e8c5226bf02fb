import itertools

import numpy as np
import pytest

from datasets.mixing import (
    IMAGE_MIXING_METHODS,
    MIXING_METHODS,
    check_lams,
    cutmix,
    effective_lams,
    get_method,
    mix_pairs,
    mixup,
)
from datasets.naming import PairKey, format_lam, parse_pair_name, stimulus_name


def test_mixup_is_rounded_linear_blend_with_lam_on_first_image(rng):
    x1 = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    x2 = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    out = mixup(x1, x2, 0.3)
    expected = np.round(0.3 * x1.astype(float) + 0.7 * x2.astype(float)).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(mixup(x1, x2, 1.0), x1)
    np.testing.assert_array_equal(mixup(x1, x2, 0.0), x2)


def test_mixup_takes_one_lam_per_image(rng):
    x1 = rng.integers(0, 256, (3, 2, 2, 1), dtype=np.uint8)
    x2 = rng.integers(0, 256, (3, 2, 2, 1), dtype=np.uint8)
    lams = np.array([0.0, 0.5, 1.0])
    out = mixup(x1, x2, lams)
    for i, lam in enumerate(lams):
        np.testing.assert_array_equal(out[i], mixup(x1[i], x2[i], lam))


@pytest.mark.parametrize("bad", [-0.1, 1.01, float("nan")])
def test_lam_outside_unit_interval_is_rejected(bad):
    with pytest.raises(ValueError, match="lam must lie in"):
        check_lams([0.5, bad])


def test_cutmix_keeps_lam_share_of_first_image_and_is_deterministic(rng):
    x1 = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    x2 = np.full((4, 32, 32, 3), 255, dtype=np.uint8)
    lams = np.array([1.0, 0.75, 0.5, 0.0])
    out, kept = cutmix(x1, x2, lams, seed=7)
    share_first = (out[..., 0] == 0).mean(axis=(1, 2))
    np.testing.assert_allclose(share_first, kept)
    np.testing.assert_allclose(kept, lams, atol=0.02)
    again, _ = cutmix(x1, x2, lams, seed=7)
    np.testing.assert_array_equal(out, again)


def test_mix_pairs_covers_every_pair_and_lam(rng):
    x1 = rng.integers(0, 256, (2, 8, 8, 1), dtype=np.uint8)
    x2 = rng.integers(0, 256, (2, 8, 8, 1), dtype=np.uint8)
    lams = [0.0, 0.1, 0.5]
    out, _ = mix_pairs(x1, x2, lams)
    assert out.shape == (2, 3, 8, 8, 1)
    np.testing.assert_array_equal(out[1, 2], mixup(x1[1], x2[1], 0.5))
    with pytest.raises(ValueError, match="unknown mixing policy"):
        mix_pairs(x1, x2, lams, policy="blend")


def test_names_follow_hmix_convention():
    pair = parse_pair_name("Airplane_1596_Frog_3615")
    assert pair == PairKey("Airplane", 1596, "Frog", 3615)
    assert stimulus_name(0.25, pair) == "mixed_0.25_Airplane_1596_Frog_3615.png"
    assert format_lam(0) == "0.0" and format_lam(0.5) == "0.5"
    with pytest.raises(ValueError):
        parse_pair_name("Airplane_1596_Frog")
    with pytest.raises(ValueError):
        parse_pair_name("Airplane_x_Frog_3")


@pytest.mark.shared_data
def test_hmix_endpoints_mix_exactly(shared_data):
    data = np.load(shared_data / "hmix" / "hmix_endpoints.npz")
    row = {int(i): r for r, i in enumerate(data["test_index"])}
    x1 = data["images"][row[1596]]
    x2 = data["images"][row[3615]]
    assert data["class_name"][row[1596]] == "Airplane"
    assert data["class_name"][row[3615]] == "Frog"
    expected = np.array(
        [
            [
                [round(0.3 * int(a) + 0.7 * int(b)) for a, b in zip(pa, pb, strict=True)]
                for pa, pb in zip(ra, rb, strict=True)
            ]
            for ra, rb in zip(x1, x2, strict=True)
        ],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(mixup(x1, x2, 0.3), expected)


GRID = [round(0.1 * i, 1) for i in range(11)]


def black_and_white_pairs(pairs, height, width):
    return (
        np.zeros((pairs, height, width, 1), np.uint8),
        np.full((pairs, height, width, 1), 255, np.uint8),
    )


@pytest.mark.parametrize(("height", "width"), [(32, 32), (8, 8), (28, 28), (5, 7)])
@pytest.mark.parametrize("lams", [GRID, [0.1, 0.25, 0.5, 0.75, 0.9]])
def test_cutmix_stimuli_record_the_share_of_image_1_they_hold(height, width, lams):
    """The lam mix_pairs gives back for each stimulus is the share it really keeps."""
    x1, x2 = black_and_white_pairs(3, height, width)
    mixed, kept = mix_pairs(x1, x2, lams, "cutmix", seed=5)
    share = (mixed[..., 0] == 0).mean(axis=(2, 3))  # (pairs, lams)
    np.testing.assert_array_equal(share, np.broadcast_to(kept, share.shape))
    assert len(set(kept.tolist())) == len(lams)  # steps never collapse into one image
    assert np.all(np.diff(kept) > 0)  # and keep their order
    np.testing.assert_allclose(kept, lams, atol=1.0 / min(height, width))


def test_cutmix_lams_are_exact_where_the_image_size_allows():
    x1, x2 = black_and_white_pairs(1, 32, 32)
    _, kept = mix_pairs(x1, x2, [0.0, 0.25, 0.5, 0.75, 1.0], "cutmix")
    assert kept.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    # 0.1 of 1,024 pixels is not a whole number: the nearest box, to the pixel
    _, kept = mix_pairs(x1, x2, [0.1, 0.9], "cutmix")
    assert abs(kept[0] - 0.1) * 1024 <= 7 and abs(kept[1] - 0.9) * 1024 < 1


def test_demo_digit_grid_steps_are_distinct_images():
    x1, x2 = black_and_white_pairs(1, 8, 8)
    mixed, kept = mix_pairs(x1, x2, GRID, "cutmix")
    images = {mixed[0, j].tobytes() for j in range(len(GRID))}
    assert len(images) == len(GRID)
    assert kept[5] == 0.5 and kept[0] == 0.0 and kept[-1] == 1.0


def test_a_grid_too_fine_for_the_image_says_so():
    x1, x2 = black_and_white_pairs(1, 2, 2)
    with pytest.raises(ValueError, match="2x2 image allows only 4 different CutMix box areas"):
        mix_pairs(x1, x2, GRID, "cutmix")


def test_stored_cutmix_stimuli_carry_their_effective_lam(
    db, settings, tmp_path, django_capture_on_commit_callbacks
):
    """Through the service: each stored image holds exactly its recorded lam of image 1,
    the set lists those lams, and a set the image size cannot honour is refused."""
    from django.core.exceptions import ValidationError

    from datasets.imaging import decode_png
    from datasets.models import StimulusSet
    from datasets.services import create_stimulus_set, import_dataset

    settings.HILLMIX_IMPORT_DIRS = [tmp_path]
    np.savez(
        tmp_path / "bw.npz",
        images=np.stack([np.zeros((8, 8), np.uint8), np.full((8, 8), 255, np.uint8)]),
        class_name=np.array(["Black", "White"]),
        ids=np.array([0, 1]),
    )
    dataset = import_dataset(name="bw", kind="npz", path=tmp_path / "bw.npz")
    with django_capture_on_commit_callbacks(execute=True):
        stimulus_set = create_stimulus_set(
            name="cut",
            dataset=dataset,
            kind="grid",
            mixing_policy="cutmix",
            pairs=["Black_0_White_1"],
        )
    stimulus_set.refresh_from_db()
    assert stimulus_set.status == "succeeded"
    stimuli = list(stimulus_set.pairs.get().stimuli.order_by("lam"))
    assert len({s.lam for s in stimuli}) == 11
    assert [s.lam for s in stimuli] == stimulus_set.lams
    for stimulus in stimuli:
        with stimulus.image.open("rb") as handle:
            share = (decode_png(handle.read()) == 0).mean()
        assert share == stimulus.lam, stimulus.name
    np.savez(
        tmp_path / "tiny.npz",
        images=np.zeros((2, 2, 2), np.uint8),
        class_name=np.array(["Black", "White"]),
        ids=np.array([0, 1]),
    )
    tiny = import_dataset(name="tiny", kind="npz", path=tmp_path / "tiny.npz")
    with pytest.raises(ValidationError, match="allows only 4 different CutMix box areas"):
        create_stimulus_set(
            name="fine",
            dataset=tiny,
            kind="grid",
            mixing_policy="cutmix",
            pairs=["Black_0_White_1"],
        )
    assert not StimulusSet.objects.filter(name="fine").exists()


def test_construct_starts_on_a_cutmix_grid_step(demo_dataset, django_capture_on_commit_callbacks):
    """The 8x8 CutMix grid's steps are effective lams; Construct starts on the steps
    nearest 0.1 and 0.9 (the second and the second-last)."""
    import random

    from datasets.services import create_stimulus_set
    from elicitation.live import grid_lams
    from elicitation.models import Study
    from elicitation.services import _trial_order, build_conditions

    with django_capture_on_commit_callbacks(execute=True):
        stimulus_set = create_stimulus_set(
            name="cut-grid", dataset=demo_dataset, kind="grid", mixing_policy="cutmix", n_pairs=2
        )
    study = Study.objects.create(
        slug="cut-construct",
        interface="construct",
        stimulus_set=stimulus_set,
        status="live",
        construct_start="random",
    )
    build_conditions(study)
    grid = grid_lams(study)
    assert grid[1] != 0.1 and len(set(grid)) == 11
    starts = {spec["start_lam"] for spec in _trial_order(study, [0, 1] * 10, random.Random(3))}
    assert starts == {grid[1], grid[-2]}


# --- the registry: one definition per method, numpy and torch paths agree ------------


@pytest.mark.parametrize("name", IMAGE_MIXING_METHODS)
def test_numpy_and_torch_paths_of_each_method_agree(name, rng):
    """The stimulus path (uint8, channels last) and the training path (float tensors,
    channels first) of a method give the same images and effective lams."""
    torch = pytest.importorskip("torch")
    method = MIXING_METHODS[name]
    x1 = rng.integers(0, 256, (12, 9, 7, 3), dtype=np.uint8)
    x2 = rng.integers(0, 256, (12, 9, 7, 3), dtype=np.uint8)
    lams = rng.random(12)
    expected, kept = method.mix_numpy(x1, x2, lams, np.random.default_rng(3))

    def tensor(x):
        return torch.from_numpy(x).permute(0, 3, 1, 2).to(torch.float64)

    mixed, kept_torch = method.mix_torch(tensor(x1), tensor(x2), lams, np.random.default_rng(3))
    as_uint8 = mixed.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(as_uint8, expected)
    np.testing.assert_array_equal(kept_torch, kept)
    # In training's own units ([0, 1] float32) they agree to within one grey level.
    mixed32, _ = method.mix_torch(
        tensor(x1).float() / 255, tensor(x2).float() / 255, lams, np.random.default_rng(3)
    )
    difference = mixed32.permute(0, 2, 3, 1).numpy() * 255 - expected.astype(np.float64)
    assert np.abs(difference).max() <= 0.5 + 1e-3
    # The effective lam is the share of image 1 each mixed image really holds.
    white, black = np.full_like(x1, 255), np.zeros_like(x2)
    share, _ = method.mix_numpy(white, black, lams, np.random.default_rng(3))
    np.testing.assert_allclose(share.mean(axis=(1, 2, 3)) / 255, kept, atol=0.5 / 255)


def test_unknown_method_is_refused_everywhere(rng):
    x = rng.integers(0, 256, (1, 4, 4, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match="unknown mixing policy"):
        get_method("blend")
    with pytest.raises(ValueError, match="unknown mixing policy"):
        effective_lams([0.5], "blend", 4, 4)
    with pytest.raises(ValueError, match="unknown mixing policy"):
        mix_pairs(x, x, [0.5], "blend")


def test_mixup_table_path_gives_the_formula_bytes(rng):
    """The per-lam lookup table is only a faster evaluation of the same formula."""
    x1 = rng.integers(0, 256, (66, 5, 5, 3), dtype=np.uint8)
    x2 = rng.integers(0, 256, (66, 5, 5, 3), dtype=np.uint8)
    lams = np.tile(np.linspace(0, 1, 11), 6)
    weight = lams.reshape(-1, 1, 1, 1)
    direct = np.rint(weight * x1.astype(float) + (1 - weight) * x2.astype(float))
    np.testing.assert_array_equal(mixup(x1, x2, lams), direct.astype(np.uint8))


# --- the methods of the literature: each one's defining property ----------------------


def test_every_method_is_registered_once_with_its_paper():
    assert set(MIXING_METHODS) == {
        "mixup",
        "cutmix",
        "fmix",
        "resizemix",
        "saliencymix",
        "manifold_mixup",
    }
    papers = {
        "mixup": "Zhang et al. 2018",
        "cutmix": "Yun et al. 2019",
        "fmix": "Harris et al. 2020",
        "resizemix": "Qin et al. 2020",
        "saliencymix": "Uddin et al. 2021",
        "manifold_mixup": "Verma et al. 2019",
    }
    for name, method in MIXING_METHODS.items():
        assert papers[name] in " ".join(type(method).__doc__.split()), name
    assert IMAGE_MIXING_METHODS == ("mixup", "cutmix", "fmix", "resizemix", "saliencymix")


@pytest.mark.parametrize(("height", "width"), [(32, 32), (28, 28), (5, 7)])
def test_fmix_keeps_exactly_the_nearest_whole_share_of_pixels(height, width, rng):
    """Harris et al. binarise the noise by its top lam share: exactly round(lam * H * W)
    pixels stay image 1, and the effective lam is that count over H * W."""
    lams = np.array([0.0, 0.13, 0.33, 0.61, 0.77, 0.94, 1.0])
    pixels = height * width
    x1, x2 = black_and_white_pairs(len(lams), height, width)
    mixed, kept = MIXING_METHODS["fmix"].mix_numpy(x1, x2, lams, np.random.default_rng(1))
    counts = (mixed[..., 0] == 0).sum(axis=(1, 2))
    expected = np.array([round(lam * pixels) for lam in lams])
    assert not np.any(np.isclose(lams * pixels % 1, 0.5))  # no halves to round
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_array_equal(kept, expected / pixels)
    np.testing.assert_array_equal(effective_lams(lams, "fmix", height, width), kept)


def test_fmix_masks_are_low_frequency_blobs_not_scattered_pixels():
    """The kept region of a mask from 1/f^3 Fourier noise is a few smooth blobs: far
    fewer neighbouring pixels differ than in a random mask of the same share."""
    from datasets.mixing import fmix_masks

    keep, kept = fmix_masks(np.full(50, 0.5), 32, 32, np.random.default_rng(0))
    assert np.all(kept == 0.5)
    edges = (keep[:, 1:, :] != keep[:, :-1, :]).sum() + (keep[:, :, 1:] != keep[:, :, :-1]).sum()
    random_edges = 50 * 2 * 32 * 31 * 0.5  # a random half share: every other pair differs
    assert edges < 0.2 * random_edges
    # each mask is its own draw
    assert len({m.tobytes() for m in keep}) == 50


def test_fmix_stimulus_grids_keep_distinct_steps_and_refuse_too_fine_grids():
    x1, x2 = black_and_white_pairs(2, 8, 8)
    mixed, kept = mix_pairs(x1, x2, GRID, "fmix", seed=2)
    share = (mixed[..., 0] == 0).mean(axis=(2, 3))
    np.testing.assert_array_equal(share, np.broadcast_to(kept, share.shape))
    assert np.all(np.diff(kept) > 0) and kept[0] == 0.0 and kept[-1] == 1.0
    np.testing.assert_allclose(kept, GRID, atol=0.5 / 64)
    with pytest.raises(ValueError, match="2x2 image allows only 5 different FMix pixel counts"):
        mix_pairs(*black_and_white_pairs(1, 2, 2), GRID, "fmix")


def test_resizemix_pastes_the_whole_source_shrunk_into_a_box_of_area_one_minus_lam(rng):
    """Qin et al.: image 2, resized, covers 1 - lam of image 1 (to the pixel); the patch
    is image 2 at the box's size (here a 16 x 16 box: every second pixel)."""
    x1 = np.zeros((1, 32, 32, 3), np.uint8)
    x2 = rng.integers(1, 256, (1, 32, 32, 3), dtype=np.uint8)  # never 0, so the box shows
    mixed, kept = MIXING_METHODS["resizemix"].mix_numpy(x1, x2, [0.75], np.random.default_rng(4))
    inside = np.any(mixed[0] != 0, axis=-1)
    rows, cols = np.nonzero(inside)
    y0, x0 = rows.min(), cols.min()
    assert inside.sum() == 256 and kept[0] == 0.75
    np.testing.assert_array_equal(mixed[0, y0 : y0 + 16, x0 : x0 + 16], x2[0, ::2, ::2])
    # Any lam: the pasted area is 1 - lam up to the pixel, the effective lam exact.
    lams = rng.random(40)
    black, white = black_and_white_pairs(40, 9, 13)
    mixed, kept = MIXING_METHODS["resizemix"].mix_numpy(black, white, lams, rng)
    pasted = (mixed[..., 0] == 255).mean(axis=(1, 2))
    np.testing.assert_array_equal((mixed[..., 0] == 0).mean(axis=(1, 2)), kept)
    assert np.all(np.abs(pasted - (1 - lams)) * 9 * 13 <= 9)  # within one box row/column
    np.testing.assert_array_equal(kept, MIXING_METHODS["resizemix"].effective_lams(lams, 9, 13))


def test_resizemix_stimulus_grid_keeps_distinct_steps():
    x1, x2 = black_and_white_pairs(2, 8, 8)
    mixed, kept = mix_pairs(x1, x2, GRID, "resizemix", seed=1)
    share = (mixed[..., 0] == 0).mean(axis=(2, 3))
    np.testing.assert_array_equal(share, np.broadcast_to(kept, share.shape))
    assert np.all(np.diff(kept) > 0)


def _saliency_peaks(images):
    from datasets.mixing import spectral_residual_saliency

    grey = images.astype(float) @ np.array([0.299, 0.587, 0.114])
    flat = spectral_residual_saliency(grey).reshape(len(images), -1).argmax(axis=1)
    return np.stack([flat // images.shape[2], flat % images.shape[2]], axis=1)


def test_saliencymix_box_holds_the_most_salient_point_of_the_source(rng):
    """Uddin et al.: the pasted box of image 2 is centred on its most salient pixel, moved
    inside the image at the borders; its area, and so the effective lam, is CutMix's."""
    n, height, width = 60, 32, 32
    x1 = np.zeros((n, height, width, 3), np.uint8)
    x2 = rng.integers(1, 256, (n, height, width, 3), dtype=np.uint8)
    lams = rng.uniform(0.2, 0.95, n)
    mixed, kept = MIXING_METHODS["saliencymix"].mix_numpy(x1, x2, lams, rng)
    peaks = _saliency_peaks(x2)
    moved = 0
    for i in range(n):
        inside = np.any(mixed[i] != 0, axis=-1)
        rows, cols = np.nonzero(inside)
        y0, y1, x0, x1_ = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert inside.sum() == (y1 - y0) * (x1_ - x0)  # one box
        np.testing.assert_array_equal(mixed[i, y0:y1, x0:x1_], x2[i, y0:y1, x0:x1_])
        cy, cx = peaks[i]
        assert y0 <= cy < y1 and x0 <= cx < x1_, (i, peaks[i], (y0, y1, x0, x1_))
        h, w = y1 - y0, x1_ - x0
        centred = (y0 == cy - h // 2) and (x0 == cx - w // 2)
        at_border = y0 == 0 or y1 == height or x0 == 0 or x1_ == width
        assert centred or at_border
        moved += not centred
        assert 1 - inside.mean() == kept[i]
    assert 0 < moved < n  # both cases were seen
    np.testing.assert_array_equal(kept, MIXING_METHODS["cutmix"].effective_lams(lams, 32, 32))


def test_spectral_residual_finds_the_odd_one_out():
    """Hou & Zhang's saliency peaks on what differs from its background: a bright square
    on stripes, on a flat grey and on noise."""
    from datasets.mixing import spectral_residual_saliency

    backgrounds = [
        np.tile((np.arange(32) % 4 < 2) * 100.0, (32, 1)),
        np.full((32, 32), 100.0),
        np.random.default_rng(0).normal(100, 20, (32, 32)),
    ]
    for background, (cy, cx) in itertools.product(backgrounds, [(6, 8), (20, 25), (28, 3)]):
        image = background.copy()
        image[cy - 2 : cy + 2, cx - 2 : cx + 2] = 255.0
        saliency = spectral_residual_saliency(image[None])[0]
        py, px = np.unravel_index(saliency.argmax(), saliency.shape)
        assert abs(py - cy) <= 3 and abs(px - cx) <= 3, ((py, px), (cy, cx))


def test_saliency_on_the_device_path_equals_numpy(rng):
    torch = pytest.importorskip("torch")
    from datasets.mixing import spectral_residual_saliency, spectral_residual_saliency_torch

    grey = rng.random((5, 9, 7)) * 255
    np.testing.assert_allclose(
        spectral_residual_saliency_torch(torch.from_numpy(grey)).numpy(),
        spectral_residual_saliency(grey),
        rtol=1e-9,
        atol=1e-12,
    )


def test_manifold_mixup_mixes_hidden_states_and_makes_no_images(rng):
    """Verma et al.: training mixes hidden states; the entry is flagged so stimulus sets
    never offer it, and mix_hidden is the convex combination with the batch's partners."""
    torch = pytest.importorskip("torch")
    from datasets.mixing import image_mixing_choices, mix_hidden, mixing_choices

    method = get_method("manifold_mixup")
    assert method.space == "hidden" and not method.makes_images
    assert ("manifold_mixup", "manifold_mixup") in mixing_choices()
    assert "manifold_mixup" not in dict(image_mixing_choices())
    x = rng.integers(0, 256, (2, 4, 4, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match="makes no images"):
        mix_pairs(x, x, [0.5], "manifold_mixup")
    with pytest.raises(ValueError, match="makes no images"):
        effective_lams([0.5], "manifold_mixup", 4, 4)
    with pytest.raises(ValueError, match="makes no images"):
        method.mix_torch(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), [0.5, 0.5], rng)
    np.testing.assert_array_equal(method.effective_lams(np.array([0.3, 0.8]), 32, 32), [0.3, 0.8])

    h = torch.randn(6, 8, 4, 4)
    index = torch.tensor([5, 4, 3, 2, 1, 0])
    mixed = mix_hidden(h, index, 0.3)
    torch.testing.assert_close(mixed, 0.3 * h + 0.7 * h[index])
    per_row = np.linspace(0, 1, 6)
    mixed = mix_hidden(h, index, per_row)
    for i, lam in enumerate(per_row):
        torch.testing.assert_close(mixed[i], lam * h[i] + (1 - lam) * h[5 - i])
    assert mix_hidden(h.bfloat16(), index, 0.5).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="lam must lie in"):
        mix_hidden(h, index, 1.5)


@pytest.mark.parametrize("name", IMAGE_MIXING_METHODS)
def test_torch_paths_never_read_the_device_back(name):
    """Each method's training path (and mix_hidden) runs on PyTorch's meta device, whose
    tensors hold no data: reading one back (.item(), .cpu(), a numpy copy) raises there,
    so the path never waits for the GPU between steps. Its effective lams are the CPU
    path's."""
    torch = pytest.importorskip("torch")
    from datasets.mixing import mix_hidden

    method = MIXING_METHODS[name]
    lams = np.linspace(0.05, 0.95, 8)
    x = torch.empty(8, 3, 9, 7, device="meta")
    mixed, kept = method.mix_torch(x, x.flip(0), lams, np.random.default_rng(0))
    assert mixed.device.type == "meta" and mixed.shape == x.shape
    cpu = torch.zeros(8, 3, 9, 7)
    _, kept_cpu = method.mix_torch(cpu, cpu, lams, np.random.default_rng(0))
    np.testing.assert_array_equal(kept, kept_cpu)
    hidden = torch.empty(8, 16, 4, 4, device="meta")
    assert mix_hidden(hidden, torch.arange(8, device="meta"), 0.3).device.type == "meta"
    with pytest.raises(RuntimeError):
        x.sum().item()  # what the meta device refuses
