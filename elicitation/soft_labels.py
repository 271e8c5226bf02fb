"""Soft categorical labels (CIFAR-10S style). Pure numpy, no Django."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_GAMMA = 0.1


def top2_clamp(
    num_classes: int,
    first: int,
    p1: float,
    second: int | None = None,
    p2: float = 0.0,
    impossible: Sequence[int] = (),
    gamma: float = DEFAULT_GAMMA,
) -> np.ndarray:
    """The "Top-2 Clamp" soft label with redistribution (DESIGN section 2).

    p1, p2 are probabilities in [0, 1] on the most and second most probable classes.
    Below a total of 1, the remainder is spread evenly over the classes that are
    neither impossible nor already given mass; at 1 or more, the two are normalised,
    gamma is spread over those same classes and the whole normalised again. When no
    class is left to spread over, the chosen classes are normalised.
    """
    label = np.zeros(num_classes, dtype=np.float64)
    label[first] += p1
    if second is not None:
        label[second] += p2
    blocked = set(impossible) | {first} | ({second} if second is not None else set())
    others = [k for k in range(num_classes) if k not in blocked]
    total = label.sum()
    if total <= 0:
        raise ValueError("the chosen classes need a positive probability")
    if total < 1.0:
        if others:
            label[others] += (1.0 - total) / len(others)
        return label / label.sum()
    label /= total
    if others:
        label[others] += gamma / len(others)
    return label / label.sum()
