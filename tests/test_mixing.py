import numpy as np
import pytest

from datasets.mixing import check_lams, cutmix, mix_pairs, mixup
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
    out = mix_pairs(x1, x2, lams)
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
