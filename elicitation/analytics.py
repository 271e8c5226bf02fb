"""Aggregates of judgments, as in H-Mix's processed file. Pure numpy, no Django."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


def stimulus_aggregate(
    true_lam: float, perceived: Sequence[float], confidences: Sequence[float | None]
) -> dict:
    """One stimulus in the layout of processed_hmix_inferences.json.

    Std Dev is the population std; the diffs are true lam minus the (weighted) mean;
    Weighted Re-Label is the mean of perceived lam x confidence.
    """
    lams = np.asarray(perceived, dtype=np.float64)
    mean = float(lams.mean()) if len(lams) else float("nan")
    conf = [c for c in confidences if c is not None]
    weighted = (
        float(np.mean(lams * np.asarray(confidences, dtype=np.float64)))
        if len(conf) == len(lams) and len(lams)
        else None
    )
    return {
        "True Mixing Factor": true_lam,
        "Predicted Mixing Factor": lams.tolist(),
        "Predicted Confidence": list(confidences),
        "Std Dev": float(lams.std()) if len(lams) else float("nan"),
        "Re-Label Diff": true_lam - mean,
        "Weighted Re-Label": weighted,
        "Weighted Re-Label Diff": None if weighted is None else true_lam - weighted,
    }


@dataclass(frozen=True)
class MeanStd:
    x: float
    mean: float
    std: float
    n: int


def mean_std_by(xs: Iterable[float], ys: Iterable[float]) -> list[MeanStd]:
    """Group ys by x: mean and population std per x, sorted by x."""
    groups: dict[float, list[float]] = defaultdict(list)
    for x, y in zip(xs, ys, strict=True):
        if y is not None:
            groups[round(float(x), 6)].append(float(y))
    return [
        MeanStd(x, float(np.mean(v)), float(np.std(v)), len(v)) for x, v in sorted(groups.items())
    ]


def pool_groups(
    xs: Sequence[float],
    ns: Sequence[int],
    means: Sequence[float],
    variances: Sequence[float],
) -> list[MeanStd]:
    """Pool groups of values (n values each, their mean and population variance) by x
    rounded to 6 places, as mean_std_by would over the values themselves: per x the
    total n, mean = sum(n m) / N and population std = sqrt(sum(n (v + (m - mean)^2)) / N).
    Sorted by x; groups with n = 0 are skipped."""
    pools: dict[float, list[tuple[int, float, float]]] = defaultdict(list)
    for x, n, m, v in zip(xs, ns, means, variances, strict=True):
        if n:
            pools[round(float(x), 6)].append((int(n), float(m), float(v)))
    result = []
    for x, groups in sorted(pools.items()):
        n = np.array([g[0] for g in groups], dtype=np.float64)
        m = np.array([g[1] for g in groups])
        v = np.array([g[2] for g in groups])
        total = n.sum()
        mean = float((n * m).sum() / total)
        variance = float((n * (v + (m - mean) ** 2)).sum() / total)
        result.append(MeanStd(x, mean, math.sqrt(max(variance, 0.0)), int(total)))
    return result


def pool_symmetric(
    lams: Sequence[float], values: Sequence[float]
) -> list[tuple[float, list[float], MeanStd]]:
    """Pool values over symmetric lams, as the H-Mix paper reports confidence: lam and
    1 - lam together (0.1 with 0.9, 0.25 with 0.75, 0.5 alone). Returns, sorted by the
    smaller lam x, (x, the lams pooled, population mean/std/n of their values)."""
    groups: dict[float, list[float]] = defaultdict(list)
    members: dict[float, set[float]] = defaultdict(set)
    for lam, value in zip(lams, values, strict=True):
        x = round(min(float(lam), 1.0 - float(lam)), 6)
        groups[x].append(float(value))
        members[x].add(round(float(lam), 6))
    return [
        (x, sorted(members[x]), MeanStd(x, float(np.mean(v)), float(np.std(v)), len(v)))
        for x, v in sorted(groups.items())
    ]


def mean_interval(
    mean: float, std: float | None, n: int, level: float = 0.95
) -> tuple[float | None, float | None]:
    """Student's t confidence interval of a mean from n values with sample std `std`
    (ddof 1): mean -+ t_{(1+level)/2, n-1} * std / sqrt(n). (None, None) below two
    values; (mean, mean) when every value is the same (scipy answers NaN for a zero
    scale, which JSON cannot carry)."""
    if n < 2 or std is None:
        return None, None
    if std == 0:
        return float(mean), float(mean)
    low, high = stats.t.interval(level, n - 1, loc=mean, scale=std / np.sqrt(n))
    return float(low), float(high)


def midpoint_histogram(lams: Iterable[float], grid: Sequence[float]) -> list[dict]:
    """How often each grid lam was chosen as the 50/50 point."""
    counts = dict.fromkeys((round(g, 6) for g in grid), 0)
    for lam in lams:
        key = round(float(lam), 6)
        counts[key] = counts.get(key, 0) + 1
    return [{"lam": k, "count": v} for k, v in sorted(counts.items())]


def canonical_midpoint(class1: str, class2: str, lam: float) -> tuple[str, str, float]:
    """Express a midpoint as the weight of the alphabetically first class, so A_B and
    B_A pairs of the same two classes pool."""
    if class1 <= class2:
        return class1, class2, lam
    return class2, class1, 1.0 - lam


def class_pair_midpoints(rows: Iterable[tuple[str, str, float]]) -> list[dict]:
    """Per unordered class pair: n, mean and std of the midpoint (weight of class_a)."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for class1, class2, lam in rows:
        a, b, value = canonical_midpoint(class1, class2, lam)
        groups[(a, b)].append(value)
    return [
        {
            "class_a": a,
            "class_b": b,
            "n": len(v),
            "mean": float(np.mean(v)),
            "std": float(np.std(v)),
        }
        for (a, b), v in sorted(groups.items())
    ]


def repeat_disagreement(pairs: Iterable[tuple[float, float]]) -> float | None:
    """Mean absolute difference between a repeat answer and the first answer."""
    diffs = [abs(a - b) for a, b in pairs]
    return float(np.mean(diffs)) if diffs else None


def soft_label_stimulus(
    true_lam: float, class1: int, class2: int, labels: Sequence[Sequence[float]]
) -> dict:
    """What the annotators' soft labels of one mixed stimulus say, for the dashboard.

    labels: (n, K) soft labels (rows sum to 1) over the dataset's K classes; class1 and
    class2 index the pair's first and second class. Returns n, the mean label's mass on
    class 1, class 2 and the other classes, the mean label's entropy in bits (0: all
    agree on one class; log2 K: no idea), and its agreement with the mixup label
    (lam on class 1, 1 - lam on class 2): 1 minus the total variation distance, so 1
    when people see exactly the pixel blend and 0 when they put no mass where mixup does.
    Raises ValueError for no labels.
    """
    array = np.asarray(labels, dtype=np.float64)
    if array.ndim != 2 or not len(array):
        raise ValueError("soft labels must be a non-empty (n, K) array")
    mean = array.mean(axis=0)
    mixup = np.zeros_like(mean)
    mixup[class1] += true_lam
    mixup[class2] += 1.0 - true_lam
    positive = mean[mean > 0]
    return {
        "true_lam": float(true_lam),
        "n": len(array),
        "class1": float(mean[class1]),
        "class2": float(mean[class2]),
        "other": float(max(0.0, 1.0 - mean[class1] - mean[class2])),
        "entropy_bits": float(-(positive * np.log2(positive)).sum()),
        "agreement": float(1.0 - 0.5 * np.abs(mean - mixup).sum()),
    }
