"""Adaptive Construct's start values (adaptive.serving.ConstructStaircase.next_start):
a participant never gets the same start on two consecutive trials of a pair, and the
starts still bracket their midpoint where the candidates allow. Plain numpy, no DB."""

from __future__ import annotations

import numpy as np
import pytest

from adaptive.model import DEFAULT_NOISE, PairPosteriors, make_grid
from adaptive.serving import ConstructStaircase

GRID = make_grid()
M = np.linspace(0, 1, 101)
STARTS = [round(0.1 * i, 1) for i in range(1, 10)]  # a 0.1 grid's starts inside 0..1


def _answer(stairs: ConstructStaircase, start: float, midpoint: float, rng) -> float:
    """One simulated Construct answer on the 0.1 grid around the person's midpoint."""
    final = midpoint + rng.normal(0, 0.1)
    stairs.update(start, float(np.clip(np.round(final * 10) / 10, 0, 1)))
    return final


def test_the_start_is_never_repeated_where_the_best_one_is_the_last():
    # A participant whose midpoint sits above every start: no start brackets the
    # estimate, and the start nearest to 0.3 below it stays the best once served.
    prior = np.exp(-0.5 * ((M - 0.97) / 0.05) ** 2)
    stairs = ConstructStaircase(prior, M, STARTS, DEFAULT_NOISE)
    starts = []
    for _ in range(6):
        starts.append(stairs.next_start())
        stairs.update(starts[-1], 1.0)
    assert all(a != pytest.approx(b) for a, b in zip(starts, starts[1:], strict=False)), starts
    assert all(s < stairs.estimate[0] for s in starts)


def test_consecutive_starts_differ_and_bracket_the_estimate():
    rng = np.random.default_rng(11)
    served = brackets = 0
    for _ in range(150):
        stairs = ConstructStaircase.for_pair(PairPosteriors(1, GRID), 0, STARTS, DEFAULT_NOISE)
        midpoint = rng.uniform(0.02, 0.98)
        last = None
        for _ in range(12):
            if stairs.done:
                break
            start = stairs.next_start()
            estimate = stairs.estimate[0]
            if last is not None:
                served += 1
                assert start != pytest.approx(last)
                # The other side of the estimate from the last start, wherever a start
                # is there.
                others = [s for s in STARTS if (s < estimate) != (last < estimate)]
                if others:
                    brackets += 1
                    assert (start < estimate) != (last < estimate)
            _answer(stairs, start, midpoint, rng)
            last = start
    assert served > 500 and brackets > 0.8 * served


def test_a_single_candidate_start_is_served_again():
    stairs = ConstructStaircase(np.ones_like(M), M, [0.5], DEFAULT_NOISE)
    stairs.update(0.5, 0.4)
    assert stairs.next_start() == 0.5


def test_two_starts_alternate():
    # The H-Mix start values: a participant gets 0.1 and 0.9 in turn.
    stairs = ConstructStaircase.for_pair(PairPosteriors(1, GRID), 0, [0.1, 0.9], DEFAULT_NOISE)
    rng = np.random.default_rng(3)
    starts = []
    for _ in range(6):
        starts.append(stairs.next_start())
        _answer(stairs, starts[-1], 0.95, rng)
    assert all(a != b for a, b in zip(starts, starts[1:], strict=False))
