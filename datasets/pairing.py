"""Choosing and checking image pairs for stimuli. Pure numpy."""

from __future__ import annotations

import itertools

import numpy as np

from .naming import PairKey
from .sources import ImageArrays


def sample_balanced_pairs(arrays: ImageArrays, n_pairs: int, seed: int) -> list[PairKey]:
    """n_pairs random pairs of different classes, spread evenly over unordered class pairs.

    Class pairs are taken round-robin in a shuffled order, so counts per class pair
    differ by at most one; which class comes first is random; no pair repeats.
    """
    if n_pairs < 1:
        raise ValueError("the number of pairs must be at least 1")
    rng = np.random.default_rng(seed)
    present = np.unique(arrays.labels)
    if len(present) < 2:
        raise ValueError("random pairs need images of at least two classes")
    class_pairs = list(itertools.combinations(present.tolist(), 2))
    members = {c: np.flatnonzero(arrays.labels == c) for c in present.tolist()}
    capacity = sum(len(members[a]) * len(members[b]) for a, b in class_pairs)
    if n_pairs > capacity:
        raise ValueError(f"asked for {n_pairs} pairs; the dataset allows {capacity}")
    chosen: list[PairKey] = []
    seen: set[tuple[int, int]] = set()
    order = rng.permutation(len(class_pairs))
    while len(chosen) < n_pairs:
        for i in order:
            if len(chosen) == n_pairs:
                break
            a, b = class_pairs[i]
            if rng.random() < 0.5:
                a, b = b, a
            for _ in range(100):  # a fresh combination; tiny classes may need a few draws
                i1, i2 = int(rng.choice(members[a])), int(rng.choice(members[b]))
                key = (min(i1, i2), max(i1, i2))
                if key not in seen:
                    seen.add(key)
                    chosen.append(_key(arrays, i1, i2))
                    break
    return chosen


def _key(arrays: ImageArrays, i1: int, i2: int) -> PairKey:
    names = arrays.class_names
    return PairKey(
        names[arrays.labels[i1]], int(arrays.ids[i1]), names[arrays.labels[i2]], int(arrays.ids[i2])
    )


def locate_pairs(arrays: ImageArrays, pairs: list[PairKey]) -> np.ndarray:
    """(P, 2) row indices of each pair's images; ValueError naming every bad pair."""
    row_of_id = {int(i): row for row, i in enumerate(arrays.ids)}
    errors, rows = [], []
    for pair in pairs:
        problems = []
        for cls, image_id in ((pair.class1, pair.id1), (pair.class2, pair.id2)):
            if cls not in arrays.class_names:
                problems.append(f"unknown class {cls!r}")
            elif image_id not in row_of_id:
                problems.append(f"unknown id {image_id}")
            elif arrays.class_names[arrays.labels[row_of_id[image_id]]] != cls:
                actual = arrays.class_names[arrays.labels[row_of_id[image_id]]]
                problems.append(f"image {image_id} is a {actual}, not a {cls}")
        if not problems and pair.class1 == pair.class2:
            problems.append("both images are of the same class")
        if problems:
            errors.append(f"{pair.name}: {'; '.join(problems)}")
        else:
            rows.append((row_of_id[pair.id1], row_of_id[pair.id2]))
    if errors:
        raise ValueError("bad pairs: " + " | ".join(errors))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)
