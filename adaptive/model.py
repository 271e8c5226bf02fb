"""Grid posterior over each class pair's psychometric function. Plain numpy, no Django.

Per unordered class pair the perceived share of class 1 follows the psychometric
function share(lam) = sigmoid(k (lam - m)); m is the point of subjective equality
(the midpoint) and k the slope. The posterior over (m, k) lives on a grid (m on
0..1, log k evenly spaced) and every judgment multiplies in its likelihood
(Kontsevich & Tyler 1999, the Psi method; Watson 2017, QUEST+). Every answer is
reduced to one of a few discrete outcomes, so that each interface's likelihood is
a table (candidate, outcome, grid cell) computed once:

- 2AFC at lam: outcome 1 when class 1 is judged dominant; Bernoulli with lapse.
- Infer at lam: the perceived share, clipped to 0..1 by the slider, on 21 bins of
  width 0.05; Gaussian noise around share(lam) integrated over the bin, plus lapse.
- Construct (start value s) and Select-Shuffled: the chosen lam on the 0.1 grid;
  Gaussian noise around m + start_bias (s - 0.5) integrated over the grid cell,
  plus lapse (a uniform pick of one of the 11 lams).

Noise levels come from ``adaptive.hmix_fit.fit_noise`` (a plain dict).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit
from scipy.stats import norm

INTERFACES = ("afc", "infer", "construct", "select_shuffled")
INFER_BINS = 21  # perceived share reported to 0.05
MIDPOINT_LAMS = np.round(np.linspace(0.0, 1.0, 11), 1)  # the 0.1 grid of Construct / Select
DEFAULT_INFER_LAMS = np.round(np.arange(0.05, 0.951, 0.05), 2)
DEFAULT_CONSTRUCT_STARTS = (0.1, 0.9)  # the H-Mix start values

# Used where no fitted noise is given; the fitted H-Mix values are close to these.
DEFAULT_NOISE: dict = {
    "version": 1,
    "afc": {"lapse": 0.04},
    "infer": {"sd": 0.2, "lapse": 0.05, "person_sd": 0.05},
    "construct": {"sd": 0.12, "lapse": 0.03, "start_bias": 0.0, "person_sd": 0.05},
    "select_shuffled": {"sd": 0.12, "lapse": 0.03, "person_sd": 0.05},
    "prior": {"m_mean": 0.5, "m_sd": 0.15},
}


def share(lam, m, k):
    """The psychometric function sigmoid(k (lam - m)); broadcasts over numpy arrays."""
    return expit(np.multiply(k, np.subtract(lam, m)))


@dataclass(frozen=True)
class Grid:
    """The (m, k) grid, flattened: ``m`` and ``k`` have shape (G,), G = n_m * n_k."""

    m_values: np.ndarray
    k_values: np.ndarray

    @property
    def m(self) -> np.ndarray:
        return np.repeat(self.m_values, len(self.k_values))

    @property
    def k(self) -> np.ndarray:
        return np.tile(self.k_values, len(self.m_values))

    @property
    def size(self) -> int:
        return len(self.m_values) * len(self.k_values)

    def prior(
        self,
        m_mean: float = 0.5,
        m_sd: float = 0.15,
        log_k_mean: float | None = None,
        log_k_sd: float | None = None,
    ) -> np.ndarray:
        """Prior probabilities (G,): Gaussian on m; flat on log k, or Gaussian on log k
        when ``log_k_mean`` and ``log_k_sd`` are given (``adaptive.simulate.fit_prior``).

        A flat log k lets a few answers that fit a steep curve pin m down far too
        tightly (a steep curve turns every Infer answer into a near-exact midpoint).
        """
        weights = norm.pdf(self.m, m_mean, m_sd)
        if log_k_mean is not None and log_k_sd is not None:
            weights = weights * norm.pdf(np.log(self.k), log_k_mean, log_k_sd)
        return weights / weights.sum()


def make_grid(n_m: int = 101, k_min: float = 1.0, k_max: float = 60.0, n_k: int = 16) -> Grid:
    """m evenly on 0..1 (step 0.01 by default), k geometrically spaced (even in log k)."""
    return Grid(np.linspace(0.0, 1.0, n_m), np.geomspace(k_min, k_max, n_k))


def _bin_probs(mean: np.ndarray, sd: float, edges: np.ndarray) -> np.ndarray:
    """P(bin) for Gaussian(mean, sd) with outer bins open (clipping): (..., n_bins)."""
    cdf = norm.cdf((edges[None, :] - np.asarray(mean)[..., None]) / sd)
    cdf[..., 0], cdf[..., -1] = 0.0, 1.0
    return np.diff(cdf, axis=-1)


def afc_table(grid: Grid, lams, lapse: float) -> np.ndarray:
    """(J, 2, G): P(answer | lam_j, m, k); answer 1 = class 1 judged dominant."""
    p1 = lapse / 2 + (1 - lapse) * share(np.asarray(lams, float)[:, None], grid.m, grid.k)
    return np.stack([1 - p1, p1], axis=1)


def infer_table(grid: Grid, lams, sd: float, lapse: float) -> np.ndarray:
    """(J, 21, G): P(perceived share in bin o | lam_j, m, k)."""
    inner = (np.arange(INFER_BINS - 1) + 0.5) / (INFER_BINS - 1)
    edges = np.concatenate([[-np.inf], inner, [np.inf]])
    mean = share(np.asarray(lams, float)[:, None], grid.m, grid.k)  # (J, G)
    probs = _bin_probs(mean, sd, edges)  # (J, G, O)
    return (1 - lapse) * probs.transpose(0, 2, 1) + lapse / INFER_BINS


def midpoint_table(
    grid: Grid, starts, sd: float, lapse: float, start_bias: float = 0.0
) -> np.ndarray:
    """(S, 11, G): P(chosen lam on the 0.1 grid | start s, m), noise integrated over the cell."""
    edges = np.concatenate([[-np.inf], MIDPOINT_LAMS[:-1] + 0.05, [np.inf]])
    starts = np.asarray(starts, float)
    mean = grid.m[None, :] + start_bias * (starts[:, None] - 0.5)  # (S, G)
    probs = _bin_probs(mean, sd, edges)
    return (1 - lapse) * probs.transpose(0, 2, 1) + lapse / len(MIDPOINT_LAMS)


@dataclass
class InterfaceModel:
    """One interface's likelihood table over its candidates (lams, or Construct start values).

    ``table`` (C, O, G) holds P(outcome | candidate, grid cell); ``log_table`` its log and
    ``cond_entropy`` (C, G) the entropy of the outcome in each cell, for expected
    information gain.
    """

    interface: str
    candidates: np.ndarray
    table: np.ndarray

    def __post_init__(self) -> None:
        self.log_table = np.log(self.table)
        self.cond_entropy = -(self.table * self.log_table).sum(axis=1)
        self._flat = np.ascontiguousarray(self.table.reshape(-1, self.table.shape[2]))

    def candidate_index(self, value: float | None) -> int:
        """Index of the candidate lam / start value; ValueError when it is not a candidate."""
        if self.interface == "select_shuffled":
            return 0
        hits = np.flatnonzero(np.isclose(self.candidates, float(value), atol=1e-6))
        if not len(hits):
            raise ValueError(f"{value!r} is not a candidate of this {self.interface} model")
        return int(hits[0])

    def outcome_index(self, answer: float) -> int:
        """The discrete outcome of an answer: 2AFC 0/1, Infer share bin, chosen lam's grid cell."""
        answer = float(answer)
        if self.interface == "afc":
            return int(answer >= 0.5)
        if self.interface == "infer":
            return int(np.clip(np.rint(answer * (INFER_BINS - 1)), 0, INFER_BINS - 1))
        return int(np.clip(np.rint(answer * 10), 0, 10))

    def outcome_indices(self, answers: np.ndarray) -> np.ndarray:
        """``outcome_index`` of many answers at once: (N,) floats -> (N,) ints."""
        answers = np.asarray(answers, dtype=float)
        if self.interface == "afc":
            return (answers >= 0.5).astype(int)
        if self.interface == "infer":
            return np.clip(np.rint(answers * (INFER_BINS - 1)), 0, INFER_BINS - 1).astype(int)
        return np.clip(np.rint(answers * 10), 0, 10).astype(int)

    def loglik(self, value: float | None, answer: float) -> np.ndarray:
        """log P(answer | value, grid cell), shape (G,)."""
        return self.log_table[self.candidate_index(value), self.outcome_index(answer)]

    def expected_information_gain(self, probs: np.ndarray) -> np.ndarray:
        """Mutual information (nats) between the next outcome and (m, k), per candidate (C,).

        EIG = H(predicted outcome) - E_posterior[H(outcome | m, k)] (Kontsevich & Tyler 1999).
        """
        n_c, n_o, _ = self.table.shape
        pred = (self._flat @ probs).reshape(n_c, n_o)
        entropy = -(pred * np.log(np.maximum(pred, 1e-300))).sum(axis=1)
        return entropy - self.cond_entropy @ probs

    def midpoint_information_gain(
        self, probs: np.ndarray, n_m: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mutual information (nats) between the next outcome and the midpoint m alone, (C,).

        The slope k is marginalised out: I(outcome; m) = H(predicted outcome) -
        E_m[H(outcome | m)], P(outcome | m) = sum_k P(outcome | m, k) p(k | m). The goal
        (every pair's midpoint within a tolerance) measures m, so information about k
        alone is wasted on it. ``n_m``: grid points on m (the grid is m-major).
        Returns (gain (C,), marginal posterior of m (n_m,)).
        """
        n_c, n_o, n_g = self.table.shape
        if getattr(self, "_by_m", None) is None or self._by_m.shape[0] != n_m:
            # (M, C*O, K), contiguous, so the sum over k is one batched matmul per choice.
            self._by_m = np.ascontiguousarray(
                self.table.reshape(n_c * n_o, n_m, n_g // n_m).transpose(1, 0, 2)
            )
        pm = probs.reshape(n_m, n_g // n_m)
        joint = np.matmul(self._by_m, pm[:, :, None])[:, :, 0]  # (M, C*O): P(o, m | c)
        joint = joint.T.reshape(n_c, n_o, n_m)
        marginal = pm.sum(axis=1)
        pred = joint.sum(axis=2)
        entropy = -(pred * np.log(np.maximum(pred, 1e-300))).sum(axis=1)
        cond = joint / np.maximum(marginal, 1e-300)
        cond_entropy = -(joint * np.log(np.maximum(cond, 1e-300))).sum(axis=(1, 2))
        return entropy - cond_entropy, marginal


def build_model(
    interface: str, grid: Grid, noise: dict | None = None, candidates=None
) -> InterfaceModel:
    """The likelihood table of one interface under ``noise`` (``fit_noise``'s dict).

    ``candidates``: lams for ``afc`` / ``infer`` (default 0.05..0.95 step 0.05), start
    values for ``construct`` (default 0.1 and 0.9); ignored for ``select_shuffled``.
    Raises ValueError for an unknown interface.
    """
    noise = noise or DEFAULT_NOISE
    if interface == "afc":
        cands = np.asarray(DEFAULT_INFER_LAMS if candidates is None else candidates, float)
        return InterfaceModel(interface, cands, afc_table(grid, cands, noise["afc"]["lapse"]))
    if interface == "infer":
        cands = np.asarray(DEFAULT_INFER_LAMS if candidates is None else candidates, float)
        n = noise["infer"]
        return InterfaceModel(interface, cands, infer_table(grid, cands, n["sd"], n["lapse"]))
    if interface == "construct":
        cands = np.asarray(DEFAULT_CONSTRUCT_STARTS if candidates is None else candidates, float)
        n = noise["construct"]
        table = midpoint_table(grid, cands, n["sd"], n["lapse"], n.get("start_bias", 0.0))
        return InterfaceModel(interface, cands, table)
    if interface == "select_shuffled":
        n = noise["select_shuffled"]
        return InterfaceModel(
            interface, np.array([np.nan]), midpoint_table(grid, [0.5], n["sd"], n["lapse"])
        )
    raise ValueError(f"unknown interface {interface!r}; expected one of {INTERFACES}")


class PairPosteriors:
    """Grid posteriors for n_pairs pairs at once: ``log_post`` (P, G), ``probs`` (P, G).

    Updates touch one pair's row only (incremental). A judgment may carry a weight w
    (a participant's reliability): its log-likelihood is multiplied by w (a tempered,
    or power, likelihood).
    """

    def __init__(self, n_pairs: int, grid: Grid, prior: np.ndarray | None = None) -> None:
        self.grid = grid
        prior = grid.prior() if prior is None else np.asarray(prior, float)
        self.log_post = np.tile(np.log(prior / prior.sum()), (n_pairs, 1))
        self.probs = np.tile(prior / prior.sum(), (n_pairs, 1))
        self.n_judgments = np.zeros(n_pairs, dtype=int)
        self._m, self._k = grid.m, grid.k

    def update(self, pair: int, loglik: np.ndarray, weight: float = 1.0) -> None:
        """Multiply one judgment's likelihood (log, shape (G,)) into pair ``pair``."""
        row = self.log_post[pair]
        row += weight * loglik
        row -= row.max()
        p = np.exp(row)
        self.probs[pair] = p / p.sum()
        self.n_judgments[pair] += 1

    def midpoint(self, pair: int) -> tuple[float, float]:
        """Posterior mean and sd of the point of subjective equality m."""
        p = self.probs[pair]
        mean = float(p @ self._m)
        return mean, float(np.sqrt(max(p @ (self._m - mean) ** 2, 0.0)))

    def midpoints(self) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd of m for every pair, each (P,)."""
        mean = self.probs @ self._m
        var = self.probs @ self._m**2 - mean**2
        return mean, np.sqrt(np.maximum(var, 0.0))

    def slope(self, pair: int) -> float:
        """Posterior mean of k."""
        return float(self.probs[pair] @ self._k)

    def curve(self, pair: int, lams=None, level: float = 0.9) -> tuple[np.ndarray, ...]:
        """Posterior mean of share(lam) and its central ``level`` band on ``lams``.

        Returns (lams, mean, lower, upper), each (L,); lams default to 0..1 step 0.05.
        """
        lams = np.linspace(0, 1, 21) if lams is None else np.asarray(lams, float)
        p = self.probs[pair]
        values = share(lams[:, None], self._m, self._k)  # (L, G)
        mean = values @ p
        order = np.argsort(values, axis=1)
        cum = np.cumsum(p[order], axis=1)
        sorted_values = np.take_along_axis(values, order, axis=1)
        tail = (1 - level) / 2
        lo_idx = (cum < tail).sum(axis=1)
        hi_idx = np.minimum((cum < 1 - tail).sum(axis=1), len(p) - 1)
        rows = np.arange(len(lams))
        return lams, mean, sorted_values[rows, lo_idx], sorted_values[rows, hi_idx]

    def mean_curve(self, lams) -> np.ndarray:
        """Posterior mean of share(lam) for every pair, (P, L)."""
        values = share(np.asarray(lams, float)[:, None], self._m, self._k)  # (L, G)
        return self.probs @ values.T
