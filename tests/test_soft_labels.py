"""Top-2 Clamp on hand-computed cases (K = 10, gamma = 0.1)."""

import numpy as np
import pytest

from elicitation.soft_labels import top2_clamp


def test_sum_below_one_spreads_remainder_over_possible_classes_without_mass():
    label = top2_clamp(10, 0, 0.6, 1, 0.2, impossible=[2, 3])
    expected = [0.6, 0.2, 0, 0] + [0.2 / 6] * 6
    np.testing.assert_allclose(label, expected)


def test_sum_exactly_one_adds_gamma_then_renormalises():
    label = top2_clamp(10, 0, 0.75, 1, 0.25, impossible=range(2, 9))
    expected = np.array([0.75, 0.25, 0, 0, 0, 0, 0, 0, 0, 0.1]) / 1.1
    np.testing.assert_allclose(label, expected)


def test_sum_above_one_normalises_first():
    label = top2_clamp(10, 0, 0.9, 1, 0.3)
    expected = np.array([0.75, 0.25] + [0.1 / 8] * 8) / 1.1
    np.testing.assert_allclose(label, expected)


def test_all_other_classes_impossible_keeps_mass_on_the_chosen():
    label = top2_clamp(10, 3, 0.6, 5, 0.2, impossible=[0, 1, 2, 4, 6, 7, 8, 9])
    expected = np.zeros(10)
    expected[3], expected[5] = 0.75, 0.25
    np.testing.assert_allclose(label, expected)
    alone = top2_clamp(10, 3, 1.0, impossible=[k for k in range(10) if k != 3])
    np.testing.assert_allclose(alone, np.eye(10)[3])


def test_single_class_certain_gets_gamma_spread():
    label = top2_clamp(10, 9, 1.0, gamma=0.2)
    np.testing.assert_allclose(label, np.array([0.2 / 9] * 9 + [1.0]) / 1.2)
    assert label.sum() == pytest.approx(1.0)


def test_hmix_published_example():
    # mixed_0.25_Ship_8717_Truck_8922.png, annotator 07ab9n0v00w6wfd: Truck 100,
    # every class but Airplane and Automobile impossible.
    label = top2_clamp(10, 9, 1.0, impossible=[2, 3, 4, 5, 6, 7, 8])
    np.testing.assert_allclose(label, [1 / 22, 1 / 22, 0, 0, 0, 0, 0, 0, 0, 10 / 11])


def test_zero_probability_is_refused():
    with pytest.raises(ValueError):
        top2_clamp(10, 0, 0.0)
