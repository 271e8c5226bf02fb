"""Label policies and evaluation metrics on hand-computed cases."""

import numpy as np
import pytest
import torch

from training import metrics, policies
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


def test_human_fit_posterior_is_the_grid_posterior_mean():
    """human_fit_posterior: per pair, the posterior mean of (k, m) under adaptive.model's
    likelihoods, against a direct sum over the grid; pairs without their own evidence
    keep human_fit's all-pairs curve."""
    from adaptive import model

    rng = np.random.default_rng(3)
    lams = [0.1, 0.25, 0.5, 0.75, 0.9]
    def answers(lam: float) -> list[float]:
        truth = model.share(1 - lam, 0.35, 10.0)  # class 0's share at class 1's weight lam
        return list(1 - np.clip(truth + rng.normal(0, 0.1, 8), 0, 1))

    # Given as (1, 0): the fitter orients them to the lower class.
    points = [PointJudgments(1, 0, lam, perceived=answers(lam)) for lam in lams]
    midpoints = [(0, 1, 0.3), (0, 1, 0.4), (1, 0, 0.6)]
    curves = policies.fit_human_curves_posterior(points, midpoints, min_judgments=5)
    grid = model.make_grid()
    infer = model.build_model("infer", grid, candidates=lams)
    pick = model.build_model("select_shuffled", grid)
    log_post = np.log(grid.prior())
    for p in points:
        for perceived in p.perceived:
            log_post += infer.loglik(round(1 - p.lam, 6), 1 - perceived)
    for lam in (0.3, 0.4, 0.4):
        log_post += pick.loglik(None, lam)
    probs = np.exp(log_post - log_post.max())
    probs /= probs.sum()
    k, m = curves.curves[(0, 1)]
    assert k == pytest.approx(float(probs @ grid.k), rel=1e-9)
    assert m == pytest.approx(float(probs @ grid.m), rel=1e-9)
    assert m == pytest.approx(0.37, abs=0.05)  # near the true 0.35 and the picks
    # The fallback and the pairs without evidence are human_fit's.
    assert curves.fallback == fit_human_curves(points, midpoints, min_judgments=5).fallback
    assert (2, 3) not in curves.curves
    assert get_policy("human_fit_posterior").fit_curves(points, midpoints).curves.keys() == {(0, 1)}
    with pytest.raises(ValueError, match="fits no curves"):
        get_policy("mixup").fit_curves(points, midpoints)


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
    seen = []
    result = train_model(
        TrainConfig(epochs=2, batch_size=16, online_alpha=1.0),
        data,
        label_map=get_policy("mixup").label_map(3),
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
    assert sorted(with_map) == ["human_fit", "human_fit_posterior", "mixup", "uniform"]
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

    class Recording(type(mixup_map)):
        def torch(self, c1, c2, lam):
            given.append(lam)
            return super().torch(c1, c2, lam)

    label_map = Recording(mixup_map.any_lam, mixup_map.any_lam_torch, 3)
    cfg = TrainConfig(epochs=1, batch_size=16, online_alpha=1.0, online_mixing="cutmix")
    result = train_model(cfg, data, label_map=label_map)
    assert result.images_seen == 64 and len(given) == 4
    # Effective CutMix lams of an 8x8 image: whole-pixel box areas out of 64.
    assert all(abs(lam * 64 - round(lam * 64)) < 1e-9 for lam in given)
    with pytest.raises(ValueError, match="unknown mixing policy"):
        train_model(
            TrainConfig(epochs=1, online_alpha=1.0, online_mixing="nonsense"), data, label_map
        )


# --- torch label maps: the same labels on the training device --------------------------


def test_torch_label_maps_agree_with_numpy():
    """Every policy that labels any lam gives the same (B, K) labels through its torch
    path as through numpy, for scalar lams, per-row lams, equal classes and both class
    orders (human_fit's curves are oriented by class index)."""
    rng = np.random.default_rng(11)
    points = [
        PointJudgments(int(a), int(b), float(x), perceived=[float(x) ** 2])
        for a, b, x in zip(
            rng.integers(0, K, 40), rng.integers(0, K, 40), rng.random(40), strict=True
        )
    ]
    curves = fit_human_curves(points, [(2, 1, 0.35)] * 6, min_judgments=3)
    c1, c2 = rng.integers(0, K, 64), rng.integers(0, K, 64)
    c2[:5] = c1[:5]
    lams = rng.random(64)
    for name in ("mixup", "uniform", "human_fit"):
        label_map = get_policy(name).label_map(K, curves)
        t1, t2 = torch.as_tensor(c1), torch.as_tensor(c2)
        for lam_np, lam_t in ((0.3, 0.3), (lams, torch.as_tensor(lams))):
            expected = label_map(c1, c2, lam_np)
            got = label_map.torch(t1, t2, lam_t)
            assert got.dtype == torch.float32 and got.shape == (64, K)
            np.testing.assert_allclose(got.numpy(), expected, atol=1e-6, err_msg=name)
    assert get_policy("relabel").label_map(K) is None


# --- the recipe: augmentation and schedules ------------------------------------------


def test_crop_flip_on_hand_computed_cases():
    from training.loop import crop_flip, random_crop_flip

    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.uint8).reshape(2, 1, 3, 3) + 1
    same = crop_flip(x, torch.tensor([1, 1]), torch.tensor([1, 1]), torch.tensor([False] * 2), 1)
    assert torch.equal(same, x)  # offset = padding, no flip: the image itself
    flipped = crop_flip(x, torch.tensor([1, 1]), torch.tensor([1, 1]), torch.tensor([True] * 2), 1)
    assert torch.equal(flipped, x.flip(-1))
    # Top-left crop of the padded image: the image moves down and right by one pixel,
    # zeros come in at the top and left.
    moved = crop_flip(x, torch.tensor([0, 2]), torch.tensor([0, 1]), torch.tensor([False, True]), 1)
    np.testing.assert_array_equal(moved[0, 0].numpy(), [[0, 0, 0], [0, 1, 2], [0, 4, 5]])
    # Image 2: crop rows 2..4 (one row up, zeros at the bottom), then mirrored.
    np.testing.assert_array_equal(moved[1, 0].numpy(), [[15, 14, 13], [18, 17, 16], [0, 0, 0]])
    torch.manual_seed(0)
    batch = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(batch, padding=4)
    assert out.shape == batch.shape and out.dtype == torch.uint8
    padded = np.pad(batch.numpy(), ((0, 0), (0, 0), (4, 4), (4, 4)))
    for i in range(64):  # each output is some crop of its padded image, maybe mirrored
        crops = [
            padded[i, :, t : t + 8, s : s + 8][..., ::f]
            for t in range(9)
            for s in range(9)
            for f in (1, -1)
        ]
        assert any(np.array_equal(out[i].numpy(), c) for c in crops)
    assert not torch.equal(out, batch)


def test_multistep_schedule_divides_the_lr_at_its_milestones():
    from training.loop import build_optimizer, build_scheduler

    model = torch.nn.Linear(2, 2)
    cfg = TrainConfig(lr=0.1, epochs=6, lr_schedule="multistep", lr_milestones=[2, 4], lr_gamma=0.1)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=3)
    seen = []
    for _ in range(18):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(seen, [0.1] * 6 + [0.01] * 6 + [0.001] * 6)
    assert optimizer.param_groups[0]["momentum"] == 0.9
    cosine = TrainConfig(lr=0.1, epochs=2, lr_schedule="cosine")
    optimizer = build_optimizer(model, cosine)
    scheduler = build_scheduler(optimizer, cosine, steps_per_epoch=2)
    lrs = []
    for _ in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(
        lrs, [0.1, 0.1 * (1 + np.cos(np.pi / 4)) / 2, 0.05, 0.1 * (1 + np.cos(3 * np.pi / 4)) / 2]
    )
    with pytest.raises(ValueError, match="unknown lr schedule"):
        build_scheduler(optimizer, TrainConfig(lr_schedule="warm"), 1)
    # The one-cycle schedule moves the lr, never the job's momentum.
    for momentum in (0.0, 0.5):
        onecycle = TrainConfig(lr=0.1, epochs=2, lr_schedule="onecycle", momentum=momentum)
        optimizer = build_optimizer(model, onecycle)
        scheduler = build_scheduler(optimizer, onecycle, steps_per_epoch=3)
        for _ in range(6):
            assert optimizer.param_groups[0]["momentum"] == momentum
            optimizer.step()
            scheduler.step()


def test_mixup_cifar_preset_is_the_papers_setting():
    """Zhang et al. 2018, CIFAR-10: PreAct ResNet-18, 200 epochs, batch 128, SGD momentum
    0.9, lr 0.1 / 10 after epochs 100 and 150, weight decay 1e-4, crop and flip."""
    from training.config import RECIPES

    assert RECIPES["mixup_cifar"] == {
        "architecture": "preact_resnet18",
        "epochs": 200,
        "batch_size": 128,
        "learning_rate": 0.1,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 1e-4,
        "lr_schedule": "multistep",
        "lr_milestones": [100, 150],
        "lr_gamma": 0.1,
        "augment": True,
    }


# --- the measures ------------------------------------------------------------------


def test_top2_worst_class_and_total_variation():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.4, 0.4, 0.2]])
    labels = np.array([2, 2, 0, 1])
    # Row 1: 2 is third; row 2: second; row 3: tie 0/1 for second, 0 wins; row 4: second.
    assert metrics.top_k_accuracy(probs, labels, 2) == pytest.approx(0.75)
    assert metrics.top_k_accuracy(probs, labels, 1) == metrics.accuracy(probs, labels) == 0.0
    assert metrics.top_k_accuracy(probs, labels, 3) == 1.0
    labels = np.array([0, 1, 2, 1])
    # Class 0: 1/1, class 1: 1/2 (row 4's tie goes to class 0), class 2: 1/1.
    assert metrics.worst_class_accuracy(probs, labels) == pytest.approx(0.5)
    human = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.5, 0.5, 0]])
    # Per row: 0.5 * (0.5+0.3+0.2), 0.5 * (0.1+0.4+0.3), 0.5 * (0.2+0.2+0.4), 0.5 * 0.4.
    assert metrics.total_variation(probs, human) == pytest.approx((0.5 + 0.4 + 0.4 + 0.2) / 4)
    assert metrics.total_variation(human, human) == 0.0


def test_entropy_rank_correlation():
    uniform, sure = np.full(4, 0.25), np.array([1.0, 0, 0, 0])
    assert metrics.entropy(np.stack([uniform, sure])) == pytest.approx([np.log(4), 0.0])
    human = np.array([[1.0, 0, 0, 0], [0.7, 0.3, 0, 0], [0.5, 0.5, 0, 0], uniform])
    model = np.array([[0.9, 0.1, 0, 0], [0.8, 0.1, 0.1, 0], [0.4, 0.3, 0.3, 0], uniform])
    assert metrics.entropy_spearman(model, human) == pytest.approx(1.0)
    assert metrics.entropy_spearman(model[::-1], human) == pytest.approx(-1.0)
    # Ranks 1,2,3,4 against 2,1,3,4: rho = 1 - 6 * 2 / (4 * 15) = 0.8.
    swapped = model[[1, 0, 2, 3]]
    assert metrics.entropy_spearman(swapped, human) == pytest.approx(0.8)
    assert metrics.entropy_spearman(np.stack([uniform] * 4), human) is None
    measures = metrics.human_measures(model, human)
    assert set(measures) == {"ce_human", "tv_human", "entropy_spearman"}
    assert metrics.human_measures(model, None) == dict.fromkeys(measures)


@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_reaches_the_closed_form_worst_case_of_a_linear_model(random_start):
    """Two-class linear model: CE's gradient in x is (p_y - 1)(w_y - w_other), whose sign
    never changes, so the L-inf worst case in the eps ball is x - eps * sign(w_y -
    w_other); 10 steps of 1/255 cross the 8/255-wide ball from any start."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    x = 0.2 + 0.6 * torch.rand(6, 3, 2, 2)  # away from 0 and 1: no clipping
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    w = model[1].weight.detach()
    direction = (w[y] - w[1 - y]).sign().reshape(6, 3, 2, 2)
    worst = x - (4 / 255) * direction
    generator = torch.Generator().manual_seed(3)
    attacked = metrics.pgd(model, x, y, random_start=random_start, generator=generator)
    torch.testing.assert_close(attacked, worst, atol=1e-6, rtol=0)
    assert (attacked - x).abs().max() <= 4 / 255 + 1e-7
    # Fewer steps than crossing the ball needs leave it short of the corner.
    short = metrics.pgd(model, x, y, steps=2, random_start=False)
    torch.testing.assert_close(short, x - (2 / 255) * direction, atol=1e-6, rtol=0)
    # Clipped to [0, 1] pixel space.
    edge = metrics.pgd(model, torch.zeros(6, 3, 2, 2), y, random_start=random_start)
    assert edge.min() >= 0 and edge.max() <= 4 / 255 + 1e-7


def test_seed_summary_and_paired_difference():
    from scipy import stats

    summary = metrics.seed_summary([1.0, 2.0, 3.0])
    t = 4.302652729911275  # t_{0.975, 2}
    assert summary["mean"] == 2.0 and summary["std"] == pytest.approx(1.0) and summary["n"] == 3
    assert summary["half_width"] == pytest.approx(t / np.sqrt(3))
    assert summary["ci_low"] == pytest.approx(2 - t / np.sqrt(3))
    one = metrics.seed_summary([0.5])
    assert one["std"] == 0.0 and one["ci_low"] is None and metrics.seed_summary([]) is None
    # Differences per seed 0.1, 0.2, 0.3 (seed 9 unpaired and ignored): mean 0.2, sd 0.1,
    # t = 0.2 / (0.1 / sqrt(3)) = 3.464 on 2 df.
    a = {0: 0.6, 1: 0.7, 2: 0.9, 9: 5.0}
    b = {0: 0.5, 1: 0.5, 2: 0.6}
    diff = metrics.paired_difference(a, b)
    assert diff["seeds"] == [0, 1, 2] and diff["mean"] == pytest.approx(0.2)
    assert diff["p_value"] == pytest.approx(2 * stats.t.sf(0.2 / (0.1 / np.sqrt(3)), 2))
    assert diff["p_value"] == pytest.approx(0.0742, abs=1e-4) and not diff["exceeds_noise"]
    steady = metrics.paired_difference({0: 0.7, 1: 0.8, 2: 0.9}, {0: 0.5, 1: 0.61, 2: 0.7})
    assert steady["exceeds_noise"] and steady["p_value"] < 0.05
    assert metrics.paired_difference({0: 1.0}, {0: 0.0}) is None
    same = metrics.paired_difference({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})
    assert same["p_value"] == 1.0 and not same["exceeds_noise"]


# --- the loop: on the device, CUDA settings runnable on CPU ------------------------------


def tiny_data(n=64, size=8, channels=1, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return TrainData(
        rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8),
        rng.integers(0, classes, n),
        np.zeros((0, size, size, channels), np.uint8),
        np.zeros((0, classes)),
        num_classes=classes,
    )


def test_training_step_never_copies_to_the_host(monkeypatch):
    """Online mixing, augmentation and labels stay on the device: no Tensor.cpu(),
    .numpy() or .tolist() during training, and the label map's numpy path is never
    used (only its torch one)."""
    from training.policies import OnlineLabelMap

    mixup = get_policy("mixup")

    def numpy_path(*args):
        raise AssertionError("numpy label map called during training")

    label_map = OnlineLabelMap(numpy_path, mixup.any_lam_torch, 3)

    def refuse(self, *args, **kwargs):
        raise AssertionError("a host copy during a training step")

    for method in ("cpu", "numpy", "tolist"):
        monkeypatch.setattr(torch.Tensor, method, refuse)
    for mixing in ("mixup", "cutmix"):
        cfg = TrainConfig(
            epochs=1, batch_size=16, online_alpha=1.0, online_mixing=mixing, augment=True
        )
        assert train_model(cfg, tiny_data(), label_map).images_seen == 64


def test_cuda_settings_and_compile_run_on_cpu_with_the_same_code():
    """bf16 autocast and channels_last (the CUDA defaults) turned on for CPU, with the
    standard recipe, a multistep schedule and torch.compile (the eager backend, to
    keep the test fast: the same compile call as on a GPU)."""
    cfg = TrainConfig(
        epochs=2,
        batch_size=16,
        amp=True,
        channels_last=True,
        augment=True,
        lr_schedule="multistep",
        lr_milestones=[1],
        online_alpha=1.0,
        compile=True,
        compile_backend="eager",
    )
    result = train_model(cfg, tiny_data(), get_policy("mixup").label_map(3))
    assert result.images_seen == 128 and result.device == "cpu"
    assert result.model[1].features[0].weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("architecture", ["small_cnn", "preact_resnet18"])
def test_manifold_mixup_mixes_hidden_states_at_a_block(architecture):
    """Verma et al. 2019: the model mixes h with h[index] at the chosen block; lam 1
    leaves the batch as it is, and mixing at the input (block 0) is input mixup."""
    from training.nets import HiddenMix, build_model

    torch.manual_seed(0)
    model = build_model(architecture, 3, 4, [0.5] * 3, [0.25] * 3).eval()
    x = torch.rand(6, 3, 8, 8)
    index = torch.tensor([5, 4, 3, 2, 1, 0])
    with torch.no_grad():
        plain = model(x)
        for block in model.mix_blocks:
            torch.testing.assert_close(model(x, HiddenMix(block, index, 1.0)), plain)
        swapped = model(x[index])
        torch.testing.assert_close(model(x, HiddenMix(1, index, 0.0)), swapped)
        at_input = model(x, HiddenMix(0, index, 0.3))
        torch.testing.assert_close(at_input, model(0.3 * x + 0.7 * x[index]))
        assert not torch.allclose(model(x, HiddenMix(1, index, 0.3)), at_input)
    expected_blocks = (0, 1, 2) if architecture == "preact_resnet18" else (0, 1)
    assert model.mix_blocks == expected_blocks
    given = []
    mixup_map = get_policy("mixup").label_map(3)

    class Recording(type(mixup_map)):
        def torch(self, c1, c2, lam):
            given.append(lam)
            return super().torch(c1, c2, lam)

    label_map = Recording(mixup_map.any_lam, mixup_map.any_lam_torch, 3)
    cfg = TrainConfig(
        architecture=architecture,
        epochs=1,
        batch_size=16,
        online_alpha=1.0,
        online_mixing="manifold_mixup",
    )
    data = tiny_data(n=16, channels=3)
    assert train_model(cfg, data, label_map).images_seen == 16
    assert len(given) == 1 and 0 <= given[0] <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_steps_never_wait_for_the_gpu():
    """On CUDA, the loop's per-step work (indexing, crop and flip, floats, the torch
    label map, the step itself) makes no synchronising call: torch's sync debug mode,
    switched on from the first step, reports at most the one synchronize at the end.
    (Uploads done once before the loop are allowed; the mixing methods' uploads of their
    host-drawn choices are the registry's and are not part of this check.)"""
    import warnings

    data = tiny_data(n=256, size=32, channels=3)
    label_map = get_policy("mixup").label_map(3)

    def from_first_step():
        torch.cuda.set_sync_debug_mode("warn")
        return False

    cfg = TrainConfig(epochs=2, batch_size=64, augment=True, device="cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = train_model(cfg, data, label_map, should_stop=from_first_step)
            c = torch.arange(8, device="cuda") % 3
            assert label_map.torch(c, c.flip(0), 0.3).shape == (8, 3)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= 1, [str(w.message) for w in syncs]
    assert result.device == "cuda" and result.images_seen == 512


def test_a_diverged_model_gets_null_figures_not_nan():
    """A model whose weights went NaN (a learning rate that diverges is within the
    job bounds) yields figures that are undefined: they must come back as None, since
    PostgreSQL's JSON refuses NaN and the seed's result could not be stored at all."""
    import json

    from training.config import EvalData
    from training.loop import evaluate

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    with torch.no_grad():
        model[1].weight.fill_(float("nan"))
    images = np.random.default_rng(0).integers(0, 256, (6, 2, 2, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    soft = np.full((6, 3), 1 / 3)
    results, _ = evaluate(model, EvalData(images, labels, soft), TrainConfig(device="cpu"))
    json.dumps(results, allow_nan=False)  # storable as PostgreSQL JSON
    for name in ("ce_human", "tv_human", "fgsm_ce", "pgd_ce", "ece", "rms_calibration_error"):
        assert results[name] is None, name
    assert results["accuracy"] is not None
