"""Label policies and evaluation metrics on hand-computed cases."""

import numpy as np
import pytest
import torch

from training import metrics
from training.config import TrainConfig, TrainData
from training.loop import train_model
from training.policies import (
    LABEL_POLICIES,
    POLICIES,
    PointJudgments,
    fit_human_curves,
    fit_logistic,
    get_policy,
    label_points,
    perceived_from_midpoint,
    policy_choices,
)
from training.selectors import heldout_split

K = 4


def point(**kw):
    return PointJudgments(class1=0, class2=2, lam=0.3, **kw)


def label(policy, p, **kw):
    return label_points(policy, [p], K, np.random.default_rng(0), **kw)[0]


def test_simple_policies():
    assert label_points("onehot", [point()], K, np.random.default_rng(0)).shape == (0, K)
    np.testing.assert_allclose(label("uniform", point()), [0.25] * 4)
    np.testing.assert_allclose(label("mixup", point()), [0.3, 0, 0.7, 0])
    rows = label_points("random", [point()] * 50, K, np.random.default_rng(1))
    assert rows.shape == (50, K) and (rows >= 0).all()
    np.testing.assert_allclose(rows.sum(axis=1), 1.0)
    again = label_points("random", [point()] * 50, K, np.random.default_rng(1))
    np.testing.assert_array_equal(rows, again)


def test_relabel_policies():
    p = point(perceived=[0.8, 0.4], confidences=[1.0, 0.5])
    np.testing.assert_allclose(label("relabel", p), [0.6, 0, 0.4, 0])
    # H-Mix "Weighted Re-Label": mean of lam x confidence = (0.8 + 0.2) / 2.
    np.testing.assert_allclose(label("relabel_weighted", p), [0.5, 0, 0.5, 0])
    # w = mean confidence 0.75: 0.75 * relabel + 0.25 * uniform.
    np.testing.assert_allclose(
        label("relabel_uncertain", p), 0.75 * np.array([0.6, 0, 0.4, 0]) + 0.25 * 0.25
    )
    with pytest.raises(ValueError, match="needs judgments"):
        label("relabel", point())


def test_soft_categorical_averages_annotators():
    p = point(soft_labels=[np.array([1.0, 0, 0, 0]), np.array([0.5, 0.5, 0, 0])])
    np.testing.assert_allclose(label("soft_categorical", p), [0.75, 0.25, 0, 0])
    with pytest.raises(ValueError, match="soft-label judgments"):
        label("soft_categorical", point())


def test_perceived_from_midpoint_is_piecewise_linear():
    assert perceived_from_midpoint(0.25, 0.5) == pytest.approx(0.25)
    assert perceived_from_midpoint(0.4, 0.4) == pytest.approx(0.5)
    assert perceived_from_midpoint(0.2, 0.4) == pytest.approx(0.25)
    assert perceived_from_midpoint(0.7, 0.4) == pytest.approx(0.75)
    assert perceived_from_midpoint(1.0, 0.4) == pytest.approx(1.0)


def test_logistic_fit_recovers_curve():
    lams = np.linspace(0, 1, 21)
    k, m = fit_logistic(lams, 1 / (1 + np.exp(-12 * (lams - 0.4))))
    assert k == pytest.approx(12, rel=1e-3) and m == pytest.approx(0.4, abs=1e-4)


def test_human_fit_per_pair_midpoints_and_fallback():
    lams = [0.1, 0.25, 0.5, 0.75, 0.9]
    points = [
        PointJudgments(0, 1, lam, perceived=[float(1 / (1 + np.exp(-8 * (lam - 0.6))))] * 2)
        for lam in lams
    ]
    # Pair (2, 3) has midpoints only, given as (3, 2) so they must be flipped.
    midpoints = [(3, 2, 0.7)] * 6
    curves = fit_human_curves(points, midpoints, min_judgments=5)
    k, m = curves.curves[(0, 1)]
    assert k == pytest.approx(8, rel=1e-2) and m == pytest.approx(0.6, abs=1e-3)
    assert curves.share(2, 3, 0.3) == pytest.approx(0.5)  # lam 0.7 of class 3 = 0.3 of class 2
    assert curves.share(3, 2, 0.7) == pytest.approx(0.5)
    assert curves.share(0, 1, 0.6) == pytest.approx(0.5, abs=1e-3)
    assert curves.share(1, 0, 0.4) == pytest.approx(0.5, abs=1e-3)
    # Pair (0, 3) has no judgments: the all-pairs curve.
    assert (0, 3) not in curves.curves
    assert curves.share(0, 3, curves.fallback[1]) == pytest.approx(0.5)
    labels = label_points(
        "human_fit", [PointJudgments(2, 3, 0.3)], K, np.random.default_rng(0), curves=curves
    )
    np.testing.assert_allclose(labels[0], [0, 0, 0.5, 0.5], atol=1e-9)


def test_accuracy_and_soft_cross_entropy():
    probs = np.array([[0.5, 0.5], [0.9, 0.1]])
    assert metrics.accuracy(probs, np.array([0, 0])) == 1.0  # a tie goes to class 0
    assert metrics.accuracy(probs, np.array([1, 0])) == 0.5
    soft = np.array([[1.0, 0.0], [0.0, 1.0]])
    expected = (np.log(2) + -np.log(0.1)) / 2
    assert metrics.soft_cross_entropy(probs, soft) == pytest.approx(expected)


def calibrated_toy():
    """80 samples at confidence 0.8 with 64 right; 20 at 0.6 with 12 right. Every run
    of 20 equally confident samples is itself calibrated (for the adaptive bins)."""
    probs = np.array([[0.8, 0.2]] * 80 + [[0.6, 0.4]] * 20)
    labels = np.array(([0] * 16 + [1] * 4) * 4 + [0] * 12 + [1] * 8)
    return probs, labels


def test_ece_and_rms_of_perfectly_calibrated_toy_are_zero():
    probs, labels = calibrated_toy()
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    assert metrics.rms_calibration_error(probs, labels, bin_size=20) == pytest.approx(
        0.0, abs=1e-12
    )


def test_overconfident_toy():
    probs = np.array([[0.99, 0.01]] * 100)
    labels = np.array([0] * 50 + [1] * 50)
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(0.49)
    assert metrics.rms_calibration_error(probs, labels) == pytest.approx(0.49)
    png = metrics.reliability_diagram(probs, labels)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_fgsm():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x = torch.rand(5, 3, 2, 2)
    y = torch.tensor([0, 1, 2, 0, 1])
    assert torch.equal(metrics.fgsm(model, x, y, eps=0.0), x)
    attacked = metrics.fgsm(model, x, y, eps=0.1)
    moved = (attacked - x).abs()
    assert torch.all(((moved - 0.1).abs() < 1e-6) | (attacked == 0) | (attacked == 1))
    loss = torch.nn.functional.cross_entropy
    assert loss(model(attacked), y) > loss(model(x), y)


def test_heldout_split_is_fixed_by_seed_and_disjoint():
    train, held = heldout_split(100, 0.2, seed=3)
    assert len(held) == 20 and len(train) == 80 and not set(train) & set(held)
    again = heldout_split(100, 0.2, seed=3)
    np.testing.assert_array_equal(held, again[1])


def test_online_mixup_training_runs_on_cpu():
    rng = np.random.default_rng(0)
    data = TrainData(
        rng.integers(0, 256, (64, 8, 8, 1), dtype=np.uint8),
        rng.integers(0, 3, 64),
        np.zeros((0, 8, 8, 1), np.uint8),
        np.zeros((0, 3)),
        num_classes=3,
    )
    eye = np.eye(3)
    seen = []
    result = train_model(
        TrainConfig(epochs=2, batch_size=16, online_alpha=1.0),
        data,
        label_map=lambda c1, c2, lam: lam * eye[c1] + (1 - lam) * eye[c2],
        on_progress=seen.append,
    )
    assert result.images_seen == 128 and result.device == "cpu" and seen


# --- the label-policy registry: one definition per policy -----------------------------


def test_policies_that_label_any_lam_label_stored_points_with_the_same_definition():
    """mixup, uniform and human_fit label stored points and online batches through one
    definition: label_points and the policy's label map agree on the same points."""
    rng = np.random.default_rng(5)
    points = [
        PointJudgments(int(a), int(b), float(x), perceived=[float(x) * 0.9])
        for a, b, x in zip(
            rng.integers(0, K, 30), rng.integers(0, K, 30), rng.random(30), strict=True
        )
    ]
    curves = fit_human_curves(points, [(0, 1, 0.4)] * 6, min_judgments=1)
    with_map = [name for name, p in LABEL_POLICIES.items() if p.label_map(K) is not None]
    assert sorted(with_map) == ["human_fit", "mixup", "uniform"]
    for name in with_map:
        stored = label_points(name, points, K, np.random.default_rng(0), curves)
        label_map = get_policy(name).label_map(K, curves)
        for p, row in zip(points, stored, strict=True):
            online = label_map(np.array([p.class1]), np.array([p.class2]), p.lam)
            np.testing.assert_array_equal(online[0], row)
    np.testing.assert_allclose(
        get_policy("mixup").label_map(K)(np.array([0, 1]), np.array([2, 1]), 0.3),
        [[0.3, 0, 0.7, 0], [0, 1, 0, 0]],
    )


def test_policy_names_are_checked_in_the_registry():
    assert POLICIES == tuple(LABEL_POLICIES)
    assert {c[0] for c in policy_choices()} == set(POLICIES)
    for bad in ("mixupp", "", None):
        with pytest.raises(ValueError, match="unknown policy"):
            get_policy(bad)
        with pytest.raises(ValueError, match="unknown policy"):
            label_points(bad, [], K, np.random.default_rng(0))
    with pytest.raises(ValueError, match="fitted curves"):
        label_points("human_fit", [point(perceived=[0.5])], K, np.random.default_rng(0))


def test_online_cutmix_training_uses_the_registry_torch_path():
    """Online mixing takes its method from the registry; labels get the effective lam."""
    rng = np.random.default_rng(0)
    data = TrainData(
        rng.integers(0, 256, (64, 8, 8, 1), dtype=np.uint8),
        rng.integers(0, 3, 64),
        np.zeros((0, 8, 8, 1), np.uint8),
        np.zeros((0, 3)),
        num_classes=3,
    )
    given = []
    mixup_map = get_policy("mixup").label_map(3)

    def label_map(c1, c2, lam):
        given.append(lam)
        return mixup_map(c1, c2, lam)

    cfg = TrainConfig(epochs=1, batch_size=16, online_alpha=1.0, online_mixing="cutmix")
    result = train_model(cfg, data, label_map=label_map)
    assert result.images_seen == 64 and len(given) == 4
    # Effective CutMix lams of an 8x8 image: whole-pixel box areas out of 64.
    assert all(abs(lam * 64 - round(lam * 64)) < 1e-9 for lam in given)
    with pytest.raises(ValueError, match="unknown mixing policy"):
        train_model(TrainConfig(epochs=1, online_alpha=1.0, online_mixing="fmix"), data, label_map)
