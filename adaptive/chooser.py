"""The next trial by expected information gain, and the adaptive Construct staircase. No Django.

``Chooser`` keeps, for one interface, a score table (pairs x candidates) of the expected
information gain (mutual information between the next answer and (m, k); Kontsevich &
Tyler 1999; Watson 2017, QUEST+). A judgment changes one pair's posterior, so only that
pair's row is re-scored (lazily, at the next choice); choosing is then a masked argmax
over the table, which keeps a choice well under a millisecond for 1,000 pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .model import InterfaceModel, PairPosteriors, share


@dataclass(frozen=True)
class Trial:
    """A chosen trial: ``value`` is the lam (2AFC / Infer), the start value (Construct) or None."""

    pair: int
    value: float | None
    is_repeat: bool = False
    eig: float = 0.0


@dataclass
class Session:
    """One participant's constraints and what they have been shown so far."""

    seen: np.ndarray  # (P,) how often each pair was shown (repeats not counted)
    budget: int
    n_repeats: int = 0
    repeat_spacing: int = 10
    history: list[Trial] = field(default_factory=list)
    repeated: set[int] = field(default_factory=set)  # history indices already repeated

    @property
    def remaining(self) -> int:
        return self.budget - len(self.history)


class Chooser:
    """Chooses each session's next trial by expected information gain under constraints.

    ``max_per_pair``: each participant sees a pair at most this often (repeats aside);
    ``budget``: trials per session, of which ``n_repeats`` repeat an earlier trial at least
    ``repeat_spacing`` trials later (test-retest), spread evenly through the session.
    A trial served but not yet answered discounts its pair's score by ``pending_discount``
    so concurrent sessions spread over pairs.
    """

    def __init__(
        self,
        posteriors: PairPosteriors,
        model: InterfaceModel,
        *,
        max_per_pair: int = 3,
        budget: int = 60,
        n_repeats: int = 0,
        repeat_spacing: int = 10,
        pending_discount: float = 0.5,
        objective: str = "curve",
        tolerance: float = 0.05,
    ) -> None:
        self.posteriors, self.model = posteriors, model
        self.max_per_pair, self.budget = max_per_pair, budget
        self.n_repeats, self.repeat_spacing = n_repeats, repeat_spacing
        self.pending_discount = pending_discount
        if objective not in ("curve", "midpoint"):
            raise ValueError(f"unknown objective {objective!r}; expected 'curve' or 'midpoint'")
        self.objective, self.tolerance = objective, tolerance
        n_pairs = posteriors.probs.shape[0]
        self.scores = np.empty((n_pairs, len(model.candidates)))
        self.pending = np.zeros(n_pairs, dtype=int)
        self._dirty: set[int] = set()
        for p in range(n_pairs):
            self.scores[p] = self._score(p)

    def _score(self, pair: int) -> np.ndarray:
        """One pair's row of the score table, (C,).

        ``curve``: expected information gain about (m, k). ``midpoint``: the goal is every
        pair's midpoint within ``tolerance``, so the pair most likely to miss it comes
        first (posterior P(|m - mean| > tolerance)), and within a pair the lam with the
        largest information about m alone; on the simulated H-Mix bench this needs about
        half the judgments the curve objective needs (bench/adaptive.py).
        """
        probs = self.posteriors.probs[pair]
        if self.objective == "curve":
            return self.model.expected_information_gain(probs)
        m = self.posteriors.grid.m_values
        gain, marginal = self.model.midpoint_information_gain(probs, len(m))
        miss = float(marginal[np.abs(m - marginal @ m) > self.tolerance].sum())
        # The miss probability orders pairs; the gain (scaled below 1e-3) orders lams in a pair.
        return miss + 1e-3 * gain / max(float(gain.max()), 1e-12)

    def new_session(self) -> Session:
        return Session(
            np.zeros(len(self.scores), dtype=int),
            self.budget,
            self.n_repeats,
            self.repeat_spacing,
        )

    def observe(self, pair: int, value: float | None, answer: float, weight: float = 1.0) -> None:
        """Add one judgment to pair ``pair``'s posterior; ValueError for a non-candidate value."""
        self.posteriors.update(pair, self.model.loglik(value, answer), weight)
        if self.pending[pair] > 0:
            self.pending[pair] -= 1
        self._dirty.add(pair)

    def _rescore(self) -> None:
        for p in self._dirty:
            self.scores[p] = self._score(p)
        self._dirty.clear()

    def _repeat_due(self, session: Session) -> Trial | None:
        done = sum(t.is_repeat for t in session.history)
        if done >= session.n_repeats:
            return None
        position = len(session.history) + 1
        # Keep pace with an even spread; once the end is near, repeat whatever is left.
        due = done < session.n_repeats * position / session.budget
        if not due and session.remaining > session.n_repeats - done:
            return None
        last = len(session.history) - session.repeat_spacing
        for i, t in enumerate(session.history[: max(last + 1, 0)]):
            if not t.is_repeat and i not in session.repeated:
                session.repeated.add(i)
                return Trial(t.pair, t.value, True, 0.0)
        return None

    def choose(self, session: Session, available: np.ndarray | None = None) -> Trial | None:
        """The next trial for ``session`` and records it as served; None when none is allowed.

        ``available`` (P, C) bool marks the stimuli that may be shown (e.g. that exist).
        """
        if session.remaining <= 0:
            return None
        trial = self._repeat_due(session)
        if trial is None:
            self._rescore()
            eff = self.scores * self.pending_discount ** self.pending[:, None]
            eff[session.seen >= self.max_per_pair] = -np.inf
            if available is not None:
                eff[~available] = -np.inf
            flat = int(np.argmax(eff))
            p, c = divmod(flat, eff.shape[1])
            if not np.isfinite(eff[p, c]):
                return None
            value = (
                None
                if self.model.interface == "select_shuffled"
                else float(self.model.candidates[c])
            )
            trial = Trial(p, value, False, float(self.scores[p, c]))
            session.seen[p] += 1
        session.history.append(trial)
        self.pending[trial.pair] += 1
        return trial


class MidpointStaircase:
    """Adaptive Construct for one participant and pair: a QUEST+ staircase on their midpoint.

    Each step shows the mix at lam and asks which class dominates (Bernoulli with lapse,
    slope ``k`` fixed at the pair's posterior mean); the next lam maximises the expected
    information gain about the participant's midpoint (Watson 2017, QUEST+). ``done``
    once the central 90% credible interval is at most +-``precision`` wide, or after
    ``max_steps`` steps.
    """

    def __init__(
        self,
        prior: np.ndarray,
        m_values: np.ndarray,
        k: float,
        *,
        lapse: float = 0.04,
        lams=None,
        precision: float = 0.05,
        max_steps: int = 30,
    ) -> None:
        self.m_values = np.asarray(m_values, float)
        self.probs = np.asarray(prior, float) / np.sum(prior)
        self.lams = np.round(np.arange(0.0, 1.0001, 0.05), 2) if lams is None else np.asarray(lams)
        p1 = lapse / 2 + (1 - lapse) * share(self.lams[:, None], self.m_values, k)
        self.table = np.stack([1 - p1, p1], axis=1)  # (L, 2, M)
        self.cond_entropy = -(self.table * np.log(self.table)).sum(axis=1)
        self.precision, self.max_steps, self.steps = precision, max_steps, 0

    @classmethod
    def for_pair(
        cls, posteriors: PairPosteriors, pair: int, person_sd: float = 0.05, **kwargs
    ) -> MidpointStaircase:
        """Prior: the pair's posterior on m, widened by the person-to-person spread."""
        grid = posteriors.grid
        marginal = posteriors.probs[pair].reshape(len(grid.m_values), -1).sum(axis=1)
        m = grid.m_values
        if person_sd > 0:
            kernel = np.exp(-0.5 * ((m[:, None] - m[None, :]) / person_sd) ** 2)
            marginal = kernel @ marginal
        return cls(marginal, m, posteriors.slope(pair), **kwargs)

    def next_lam(self) -> float:
        """The lam with the largest expected information gain about the midpoint."""
        pred = self.table @ self.probs  # (L, 2)
        eig = -(pred * np.log(pred)).sum(axis=1) - self.cond_entropy @ self.probs
        return float(self.lams[int(np.argmax(eig))])

    def update(self, lam: float, class1_dominant: bool) -> None:
        """One step's answer; ValueError for a lam that is not a candidate."""
        hits = np.flatnonzero(np.isclose(self.lams, lam, atol=1e-6))
        if not len(hits):
            raise ValueError(f"lam {lam!r} is not a staircase candidate")
        p = self.probs * self.table[hits[0], int(bool(class1_dominant))]
        self.probs = p / p.sum()
        self.steps += 1

    def interval(self, level: float = 0.9) -> tuple[float, float]:
        cum = np.cumsum(self.probs)
        tail = (1 - level) / 2
        return float(np.interp(tail, cum, self.m_values)), float(
            np.interp(1 - tail, cum, self.m_values)
        )

    @property
    def estimate(self) -> tuple[float, float]:
        """Posterior mean and sd of this participant's midpoint."""
        mean = float(self.probs @ self.m_values)
        return mean, float(np.sqrt(self.probs @ (self.m_values - mean) ** 2))

    @property
    def done(self) -> bool:
        lo, hi = self.interval()
        return self.steps >= self.max_steps or (hi - lo) / 2 <= self.precision
