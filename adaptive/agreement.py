"""Who to trust: agreement, test-retest and per-participant reliability. No Django.

Krippendorff's alpha comes from the ``krippendorff`` package (Krippendorff 2011,
"Computing Krippendorff's alpha-reliability"), which follows that paper's coincidence
matrix computation and handles missing values (``interval_alpha``), and, for studies too
large for that matrix, from the paper's closed form for interval data over per-unit sums
(``interval_alpha_from_units``), which the tests hold to the package. The arrays
functions take parallel (N,) arrays of integer codes and values: no Python object per
answer.
"""

from __future__ import annotations

from collections import defaultdict

import krippendorff
import numpy as np


def interval_alpha(ratings: list[tuple[str, str, float]]) -> float:
    """Krippendorff's alpha for interval data from (rater, unit, value) triples.

    A rater's repeated answers to one unit are averaged first. ValueError when fewer
    than two raters or no unit with two ratings exist (alpha is undefined).
    """
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for rater, unit, value in ratings:
        cells[(rater, unit)].append(float(value))
    raters = sorted({r for r, _ in cells})
    units = sorted({u for _, u in cells})
    counts = defaultdict(int)
    for _, u in cells:
        counts[u] += 1
    if len(raters) < 2 or max(counts.values(), default=0) < 2:
        raise ValueError("alpha needs at least one unit rated by two raters")
    r_index = {r: i for i, r in enumerate(raters)}
    u_index = {u: i for i, u in enumerate(units)}
    data = np.full((len(raters), len(units)), np.nan)
    for (r, u), values in cells.items():
        data[r_index[r], u_index[u]] = np.mean(values)
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="interval"))


def retest_agreement(pairs: list[tuple[float, float]]) -> dict:
    """Test-retest from (first answer, repeat answer) pairs.

    Returns n, pearson r (None with fewer than 3 pairs or no spread) and the mean
    absolute difference.
    """
    a = np.asarray(pairs, float).reshape(-1, 2)
    if len(a) == 0:
        return {"n": 0, "r": None, "mean_abs_diff": None}
    r = None
    if len(a) >= 3 and a[:, 0].std() > 0 and a[:, 1].std() > 0:
        r = float(np.corrcoef(a[:, 0], a[:, 1])[0, 1])
    return {"n": len(a), "r": r, "mean_abs_diff": float(np.abs(a[:, 0] - a[:, 1]).mean())}


def participant_reliability(
    judgments: list[tuple[str, str, float, bool]], prior_strength: float = 5.0
) -> dict[str, dict]:
    """Per-participant error sd and weight from repeats and distance to consensus.

    ``judgments``: (participant, unit, value, is_repeat) in the order they were given.
    ``participant_reliability_arrays`` on these as codes; returns {participant: {n,
    n_repeats, error_sd, weight}} for everyone with a repeat or a unit others rated.
    """
    codes: tuple[dict, dict] = ({}, {})
    cell_codes: dict = {}
    people = [codes[0].setdefault(p, len(codes[0])) for p, _, _, _ in judgments]
    units = [codes[1].setdefault(u, len(codes[1])) for _, u, _, _ in judgments]
    cells = [cell_codes.setdefault(pu, len(cell_codes)) for pu in zip(people, units, strict=True)]
    rel = participant_reliability_arrays(
        np.array(people, dtype=np.int64),
        np.array(units, dtype=np.int64),
        np.array(cells, dtype=np.int64),
        np.array([v for _, _, v, _ in judgments], dtype=float),
        np.array([r for _, _, _, r in judgments], dtype=bool),
        prior_strength,
    )
    names = list(codes[0])
    return {
        names[p]: {
            "n": int(rel["n"][i]),
            "n_repeats": int(rel["n_repeats"][i]),
            "error_sd": float(rel["error_sd"][i]),
            "weight": float(rel["weight"][i]),
        }
        for i, p in enumerate(rel["participant"])
    }


def earlier_firsts(keys: np.ndarray, is_repeat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each repeat and the first answer it repeats. ``keys`` (N,): what a repeat repeats
    (e.g. a participant's unit) as dense codes 0..K-1 (memory O(K)), ``is_repeat``
    (N,) bool, both in save order. Returns (firsts, repeats), indices into the N
    answers: for every repeat whose key has a non-repeat answer saved before it, the
    earliest such answer (a repeat saved before any first answer repeats nothing), in
    the repeats' order."""
    keys = np.asarray(keys, dtype=np.int64)
    is_repeat = np.asarray(is_repeat, dtype=bool)
    first_rows = np.flatnonzero(~is_repeat)
    repeat_rows = np.flatnonzero(is_repeat)
    earliest = np.full(int(keys.max(initial=-1)) + 1, len(keys))
    np.minimum.at(earliest, keys[first_rows], first_rows)
    firsts = earliest[keys[repeat_rows]]
    found = firsts < repeat_rows
    return firsts[found], repeat_rows[found]


def participant_reliability_arrays(
    participants: np.ndarray,
    units: np.ndarray,
    cells: np.ndarray,
    values: np.ndarray,
    is_repeat: np.ndarray,
    prior_strength: float = 5.0,
) -> dict[str, np.ndarray]:
    """Per-participant error sd and weight from repeats and distance to consensus.

    Parallel arrays (N,) in save order: participant, unit and (participant, unit) codes
    (each dense, 0..K-1), values (float), is_repeat (bool). A participant's error variance is
    estimated from (a) half the squared difference between a repeat and the
    participant's first answer to that unit (``earlier_firsts``) and (b) the squared
    distance of each first answer to the leave-one-out consensus (the mean of the other
    first answers to that unit, units with at least 3) less that consensus' own sampling
    variance (the unit's sample variance over n - 1); the mean of these terms is shrunk
    towards the population's (the mean of everyone's terms, at least 1e-4; 1e-2 with no
    term) with ``prior_strength`` pseudo observations, and floored at 1e-4. The weight
    is the population variance over the participant's, clipped to 0.25..4
    (inverse-variance weighting), usable as a judgment weight in the posterior.

    Returns arrays (P,) over the participants with at least one term, in code order:
    "participant" (code), "n" (consensus terms), "n_repeats", "error_sd", "weight".
    """
    participants = np.asarray(participants, dtype=np.int64)
    units = np.asarray(units, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    is_repeat = np.asarray(is_repeat, dtype=bool)
    n_people = int(participants.max(initial=-1)) + 1
    n_units = int(units.max(initial=-1)) + 1
    # (a) repeats against the participant's first answer to the unit.
    firsts, repeats = earlier_firsts(cells, is_repeat)
    repeat_terms = (values[repeats] - values[firsts]) ** 2 / 2
    repeat_people = participants[repeats]
    # (b) first answers against the leave-one-out consensus of their unit.
    first = ~is_repeat
    u, v, who = units[first], values[first], participants[first]
    n = np.bincount(u, minlength=n_units).astype(float)
    total = np.bincount(u, v, minlength=n_units)
    mean = np.divide(total, n, out=np.zeros(n_units), where=n > 0)
    spread = np.bincount(u, (v - mean[u]) ** 2, minlength=n_units)
    spread = np.divide(spread, n - 1, out=np.zeros(n_units), where=n > 1)
    shared = n[u] >= 3
    u, v, who = u[shared], v[shared], who[shared]
    loo = (total[u] - v) / (n[u] - 1)
    consensus_terms = (v - loo) ** 2 - spread[u] / (n[u] - 1)
    n_consensus = np.bincount(who, minlength=n_people)
    n_repeats = np.bincount(repeat_people, minlength=n_people)
    sums = np.bincount(who, consensus_terms, minlength=n_people) + np.bincount(
        repeat_people, repeat_terms, minlength=n_people
    )
    terms = n_consensus + n_repeats
    pooled = int(terms.sum())
    if pooled:
        pop_var = max(float(consensus_terms.sum() + repeat_terms.sum()) / pooled, 1e-4)
    else:
        pop_var = 1e-2
    people = np.flatnonzero(terms > 0)
    var = (sums[people] + prior_strength * pop_var) / (terms[people] + prior_strength)
    var = np.maximum(var, 1e-4)
    return {
        "participant": people,
        "n": n_consensus[people],
        "n_repeats": n_repeats[people],
        "error_sd": np.sqrt(var),
        "weight": np.clip(pop_var / var, 0.25, 4.0),
    }


def interval_alpha_from_units(
    count: np.ndarray, total: np.ndarray, total_sq: np.ndarray
) -> float:
    """Krippendorff's alpha for interval data from per-unit sums: ``count`` (U,) the
    values m_u in unit u (one per rater), ``total`` (U,) their sum S1_u, ``total_sq``
    (U,) the sum of their squares S2_u; what a GROUP BY per unit yields.

    Krippendorff (2011), "Computing Krippendorff's alpha-reliability": with the interval
    metric (c - k)^2 summed over the coincidence matrix, only units with m_u >= 2 are
    pairable; with n = sum of their m_u, the observed disagreement is
    D_o = (1/n) sum_u 2 (m_u S2_u - S1_u^2) / (m_u - 1) and the expected one
    D_e = 2 (n S2 - S1^2) / (n (n - 1)) over all pairable values (S1, S2 their sums);
    alpha = 1 - D_o / D_e. Here n S2 - S1^2 is taken as n times the within-unit plus
    the between-unit sums of squares, which is the same number without the
    cancellation of two large sums. ValueError when no unit has two values (alpha is
    undefined); nan when all pairable values are equal (no expected disagreement).
    """
    count = np.asarray(count, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    total_sq = np.asarray(total_sq, dtype=np.float64)
    pairable = count >= 2
    if not pairable.any():
        raise ValueError("alpha needs at least one unit rated by two raters")
    m, s1, s2 = count[pairable], total[pairable], total_sq[pairable]
    within = s2 - s1 * s1 / m  # sum of squared deviations from the unit's mean, per unit
    n = float(m.sum())
    observed = float((2 * m / (m - 1) * within).sum()) / n
    unit_mean = s1 / m
    between = float((m * (unit_mean - s1.sum() / n) ** 2).sum())
    expected = 2 * (float(within.sum()) + between) / (n - 1)
    return 1.0 - observed / expected if expected > 0 else float("nan")


def rater_unit_sums(
    cells: np.ndarray, units: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The per-unit sums ``interval_alpha_from_units`` reads, from parallel arrays (N,):
    ``cells`` dense codes 0..C-1 of (rater, unit), ``units`` dense unit codes 0..U-1,
    ``values``. A rater's values for one unit are averaged first (one value per rater
    and unit). Returns (count, total, total_sq) (U,): raters per unit, the sum of their
    values and of their squares."""
    cells = np.asarray(cells, dtype=np.int64)
    units = np.asarray(units, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    n_units = int(units.max(initial=-1)) + 1
    cell_values = np.bincount(cells, values) / np.maximum(np.bincount(cells), 1)
    cell_units = np.full(len(cell_values), -1)
    cell_units[cells] = units  # a cell's answers all have its unit
    used = cell_units >= 0  # codes with no answer (not dense): no rater
    cell_units, cell_values = cell_units[used], cell_values[used]
    return (
        np.bincount(cell_units, minlength=n_units),
        np.bincount(cell_units, cell_values, minlength=n_units),
        np.bincount(cell_units, cell_values**2, minlength=n_units),
    )


def interval_alpha_arrays(raters, units, values) -> float:
    """Krippendorff's alpha for interval data from parallel arrays (N,) of rater codes,
    unit codes (non-negative integers) and values; the same number as ``interval_alpha``
    (a rater's repeated answers to one unit averaged first) in O(N) memory, for studies
    too large for the coincidence matrix (units x values x values): ``rater_unit_sums``
    into ``interval_alpha_from_units``. ValueError when no unit has two raters; nan
    when all pairable values are equal.
    """
    raters = np.asarray(raters, dtype=np.int64)
    units = np.asarray(units, dtype=np.int64)
    if len(units) == 0:
        raise ValueError("alpha needs at least one unit rated by two raters")
    _, unit_codes = np.unique(units, return_inverse=True)
    _, cells = np.unique(raters * (int(units.max()) + 1) + units, return_inverse=True)
    return interval_alpha_from_units(*rater_unit_sums(cells, unit_codes, values))
