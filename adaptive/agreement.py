"""Who to trust: agreement, test-retest and per-participant reliability. No Django.

Krippendorff's alpha comes from the ``krippendorff`` package (Krippendorff 2011,
"Computing Krippendorff's alpha-reliability"), which follows that paper's coincidence
matrix computation and handles missing values.
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

    ``judgments``: (participant, unit, value, is_repeat). A participant's error variance
    is estimated from (a) half the mean squared difference between an answer and its
    repeat and (b) the mean squared distance to the leave-one-out consensus (the mean
    of the other participants on that unit) less that consensus' own sampling variance;
    the estimate is shrunk towards the population's with ``prior_strength`` pseudo
    observations. The weight is the population variance over the participant's,
    clipped to 0.25..4 (inverse-variance weighting), usable as a judgment weight in the
    posterior. Returns {participant: {n, n_repeats, error_sd, weight}}.
    """
    by_unit: dict[str, list[tuple[str, float]]] = defaultdict(list)
    firsts: dict[tuple[str, str], float] = {}
    repeat_sq: dict[str, list[float]] = defaultdict(list)
    for person, unit, value, is_repeat in judgments:
        if is_repeat:
            if (person, unit) in firsts:
                repeat_sq[person].append((value - firsts[(person, unit)]) ** 2 / 2)
            continue
        firsts.setdefault((person, unit), value)
        by_unit[unit].append((person, float(value)))
    consensus_sq: dict[str, list[float]] = defaultdict(list)
    for answers in by_unit.values():
        if len(answers) < 3:
            continue
        values = np.array([v for _, v in answers])
        total, n = values.sum(), len(values)
        spread = values.var(ddof=1)
        for person, v in answers:
            loo = (total - v) / (n - 1)
            consensus_sq[person].append((v - loo) ** 2 - spread / (n - 1))
    people = set(consensus_sq) | set(repeat_sq)
    pooled = [x for p in people for x in consensus_sq[p] + repeat_sq[p]]
    pop_var = max(float(np.mean(pooled)), 1e-4) if pooled else 1e-2
    out = {}
    for p in sorted(people):
        xs = consensus_sq[p] + repeat_sq[p]
        var = (sum(xs) + prior_strength * pop_var) / (len(xs) + prior_strength)
        var = max(var, 1e-4)
        out[p] = {
            "n": len(consensus_sq[p]),
            "n_repeats": len(repeat_sq[p]),
            "error_sd": float(np.sqrt(var)),
            "weight": float(np.clip(pop_var / var, 0.25, 4.0)),
        }
    return out


def interval_alpha_arrays(raters, units, values) -> float:
    """Krippendorff's alpha for interval data from parallel arrays (N,) of rater codes,
    unit codes (integers) and values; the same number as ``interval_alpha`` (a rater's
    repeated answers to one unit averaged first), in closed form and O(N) memory, for
    studies too large for the coincidence matrix (units x values x values).

    With n pairable values (those in units rated at least twice), m_u values in unit u
    and SS the sums of squared deviations: D_o = (1/n) sum_u 2 m_u SS_u / (m_u - 1),
    D_e = 2 SS_total / (n - 1), alpha = 1 - D_o / D_e (Krippendorff 2011, the interval
    metric (c - k)^2 summed over the coincidence matrix). ValueError when no unit has
    two raters; nan when all pairable values are equal (no expected disagreement).
    """
    raters = np.asarray(raters, dtype=np.int64)
    units = np.asarray(units, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("alpha needs at least one unit rated by two raters")
    n_units = int(units.max()) + 1
    cells, inverse = np.unique(raters * n_units + units, return_inverse=True)
    cell_values = np.bincount(inverse, values) / np.bincount(inverse)
    cell_units = cells % n_units
    per_unit = np.bincount(cell_units, minlength=n_units)
    pairable = per_unit[cell_units] >= 2
    if not pairable.any():
        raise ValueError("alpha needs at least one unit rated by two raters")
    v, u = cell_values[pairable], cell_units[pairable]
    m = per_unit[u]
    unit_mean = np.bincount(u, v, minlength=n_units)[u] / m
    n = len(v)
    observed = float((2 * m / (m - 1) * (v - unit_mean) ** 2).sum()) / n
    expected = 2 * float(((v - v.mean()) ** 2).sum()) / (n - 1)
    return 1.0 - observed / expected if expected > 0 else float("nan")
