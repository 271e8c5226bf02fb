import numpy as np
import pytest

from datasets.mixing import (
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


@pytest.mark.parametrize("name", list(MIXING_METHODS))
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
        get_method("fmix")
    with pytest.raises(ValueError, match="unknown mixing policy"):
        effective_lams([0.5], "fmix", 4, 4)
    with pytest.raises(ValueError, match="unknown mixing policy"):
        mix_pairs(x, x, [0.5], "fmix")


def test_mixup_table_path_gives_the_formula_bytes(rng):
    """The per-lam lookup table is only a faster evaluation of the same formula."""
    x1 = rng.integers(0, 256, (66, 5, 5, 3), dtype=np.uint8)
    x2 = rng.integers(0, 256, (66, 5, 5, 3), dtype=np.uint8)
    lams = np.tile(np.linspace(0, 1, 11), 6)
    weight = lams.reshape(-1, 1, 1, 1)
    direct = np.rint(weight * x1.astype(float) + (1 - weight) * x2.astype(float))
    np.testing.assert_array_equal(mixup(x1, x2, lams), direct.astype(np.uint8))
