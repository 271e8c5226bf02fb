"""Serving adaptive trials to many sessions from stored posteriors. Plain numpy, no Django.

A web process keeps one ``StudyChooser`` per adaptive study: the ``Chooser``'s score
table over pairs and candidates, whose posteriors are replaced by the stored ones
(elicitation.models.PairPosterior) when their judgment count moves, so only the
changed pairs are re-scored. ``session_from_history`` rebuilds a participant's
constraints (how often each pair was shown, which trials were repeated) from the
trials served so far. ``ConstructStaircase`` is adaptive Construct's per-participant
staircase (QUEST+ style) on the start value.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np

from .chooser import Chooser, Session, Trial
from .model import DEFAULT_NOISE, MIDPOINT_LAMS, Grid, PairPosteriors, midpoint_table


class StudyChooser(Chooser):
    """A ``Chooser`` whose posteriors are kept in step with stored ones."""

    def set_posterior(self, pair: int, log_posterior: np.ndarray, n_judgments: int) -> None:
        """Replace pair ``pair``'s log posterior (G,) by a stored one counting
        ``n_judgments`` judgments; the judgments it gained settle as many pending trials,
        and the pair is re-scored at the next choice."""
        post = self.posteriors
        row = np.asarray(log_posterior, float)
        row = row - row.max()
        post.log_post[pair] = row
        probs = np.exp(row)
        post.probs[pair] = probs / probs.sum()
        gained = int(n_judgments) - int(post.n_judgments[pair])
        post.n_judgments[pair] = int(n_judgments)
        if gained > 0:
            self.pending[pair] = max(int(self.pending[pair]) - gained, 0)
        self._dirty.add(pair)


def session_from_history(
    chooser: Chooser, history: Iterable[tuple[int, float | None, bool, int | None]]
) -> Session:
    """A participant's constraints from the trials served so far, in order:
    (pair index, value, is_repeat, index of the trial it repeats or None)."""
    session = chooser.new_session()
    for pair, value, is_repeat, repeat_of in history:
        session.history.append(Trial(pair, value, bool(is_repeat)))
        if is_repeat:
            if repeat_of is not None:
                session.repeated.add(int(repeat_of))
        else:
            session.seen[pair] += 1
    return session


@functools.lru_cache(maxsize=32)
def _construct_table(
    m_values: tuple, starts: tuple, sd: float, lapse: float, bias: float
) -> tuple[np.ndarray, np.ndarray]:
    """The Construct likelihood (S, 11, M) on the midpoint alone and its entropy (S, M);
    shared by every staircase of a study."""
    grid = Grid(np.asarray(m_values), np.array([1.0]))
    table = midpoint_table(grid, np.asarray(starts), sd, lapse, bias)
    return table, -(table * np.log(table)).sum(axis=1)


@functools.lru_cache(maxsize=32)
def _spread_kernel(m_values: tuple, person_sd: float) -> np.ndarray:
    """(M, M) Gaussian kernel that widens a pair's midpoint posterior to one person's."""
    m = np.asarray(m_values)
    return np.exp(-0.5 * ((m[:, None] - m[None, :]) / person_sd) ** 2)


def _response_sd(entry: dict) -> float:
    """One person's response noise: the fitted sd without the person-to-person part."""
    return float(np.sqrt(max(entry["sd"] ** 2 - entry.get("person_sd", 0.0) ** 2, 1e-6)))


class ConstructStaircase:
    """Adaptive Construct for one participant and pair: a staircase on the start value
    (QUEST+ style; Watson 2017) over the participant's own midpoint.

    The participant's midpoint m has a posterior on ``m_values``: the prior is the pair's
    posterior on m (the slope marginalised out) widened by the person-to-person spread
    (``person_sd``); each Construct answer (the final lam on the 0.1 grid, from start s)
    multiplies in P(cell | m, s) = (1 - lapse) * N(m + start_bias (s - 0.5), sd) over the
    cell + lapse / 11, with sd one person's response noise (the fitted sd without the
    person part). The next start is the candidate with the largest expected information
    gain about m; where starts tie (within 1% of the best: the gain hardly depends on the
    start unless it is anchored), the start on the other side of the current estimate
    from the last start, nearest to 0.3 from the estimate, so the slider brackets the
    midpoint from both sides in turn. The last start is never served again next: a
    participant whose midpoint lies beyond every start would otherwise get the same
    start, and so a predictable slider, on each of the pair's trials.

    Known to +-``precision``: the central ``level`` (90%) credible interval of the
    participant's midpoint is at most 2 * precision wide. ``done`` then, and the pair is
    not shown to this participant again.
    """

    def __init__(
        self,
        prior: np.ndarray,
        m_values: np.ndarray,
        starts,
        noise: dict | None = None,
        *,
        precision: float = 0.05,
        level: float = 0.9,
    ) -> None:
        noise = noise or DEFAULT_NOISE
        entry = noise["construct"]
        self.m_values = np.asarray(m_values, float)
        self.probs = np.asarray(prior, float) / np.sum(prior)
        self.starts = np.asarray(starts, float)
        self.table, self.cond_entropy = _construct_table(  # (S, 11, M), (S, M)
            tuple(self.m_values),
            tuple(self.starts),
            _response_sd(entry),
            float(entry["lapse"]),
            float(entry.get("start_bias", 0.0)),
        )
        self.precision, self.level = precision, level
        self.last_start: float | None = None
        self.steps = 0

    @classmethod
    def for_pair(
        cls, posteriors: PairPosteriors, pair: int, starts, noise: dict | None = None, **kwargs
    ) -> ConstructStaircase:
        """The staircase of a participant new to ``pair``: its posterior on m widened."""
        noise = noise or DEFAULT_NOISE
        grid = posteriors.grid
        m = grid.m_values
        marginal = posteriors.probs[pair].reshape(len(m), -1).sum(axis=1)
        person_sd = noise["construct"].get("person_sd", 0.0)
        if person_sd > 0:
            marginal = _spread_kernel(tuple(m), float(person_sd)) @ marginal
        return cls(marginal, m, starts, noise, **kwargs)

    def _start_index(self, start: float) -> int:
        hits = np.flatnonzero(np.isclose(self.starts, float(start), atol=1e-6))
        if not len(hits):
            raise ValueError(f"start {start!r} is not a staircase candidate")
        return int(hits[0])

    def update(self, start: float, final_lam: float) -> None:
        """One Construct answer: started at ``start``, stopped at ``final_lam``.
        ValueError for a start that is not a candidate."""
        s = self._start_index(start)
        cell = int(np.clip(np.rint(float(final_lam) * 10), 0, len(MIDPOINT_LAMS) - 1))
        p = self.probs * self.table[s, cell]
        self.probs = p / p.sum()
        self.last_start = float(start)
        self.steps += 1

    def gains(self) -> np.ndarray:
        """Expected information gain (nats) about the participant's midpoint per start."""
        pred = self.table @ self.probs  # (S, 11)
        entropy = -(pred * np.log(np.maximum(pred, 1e-300))).sum(axis=1)
        return entropy - self.cond_entropy @ self.probs

    def next_start(self) -> float:
        """The next start value (see the class docstring): never the last start, so a
        participant cannot predict where the slider starts on the pair's next trial.

        Among the starts other than the last one, those within 1% of their best gain;
        of these the ones on the other side of the estimate from the last start (all of
        them where none is), then the one nearest to 0.3 from the estimate. With a single
        candidate start, that start."""
        gains = self.gains()
        allowed = np.ones(len(self.starts), bool)
        if self.last_start is not None and len(self.starts) > 1:
            allowed[np.isclose(self.starts, self.last_start, atol=1e-6)] = False
        best_gain = gains[allowed].max()
        tied = np.flatnonzero(allowed & (gains >= best_gain - 0.01 * abs(best_gain)))
        estimate = self.estimate[0]
        if self.last_start is not None:
            below = self.last_start >= estimate  # go to the other side of the estimate
            side = [i for i in tied if (self.starts[i] < estimate) == below]
            tied = np.array(side) if side else tied
        best = tied[np.argmin(np.abs(np.abs(self.starts[tied] - estimate) - 0.3))]
        return float(self.starts[best])

    def interval(self) -> tuple[float, float]:
        """The central ``level`` credible interval of the participant's midpoint."""
        cum = np.cumsum(self.probs)
        tail = (1 - self.level) / 2
        return (
            float(np.interp(tail, cum, self.m_values)),
            float(np.interp(1 - tail, cum, self.m_values)),
        )

    @property
    def estimate(self) -> tuple[float, float]:
        """Posterior mean and sd of the participant's midpoint."""
        mean = float(self.probs @ self.m_values)
        return mean, float(np.sqrt(max(self.probs @ (self.m_values - mean) ** 2, 0.0)))

    @property
    def done(self) -> bool:
        lo, hi = self.interval()
        return (hi - lo) / 2 <= self.precision


def known_midpoints(
    posteriors: PairPosteriors,
    answers: dict[int, list[tuple[float, float]]],
    starts,
    noise: dict | None = None,
    *,
    precision: float = 0.05,
) -> set[int]:
    """The pairs among ``answers`` (pair -> the participant's (start, final lam) answers)
    whose staircase is ``done``: the participant's midpoint known to +-``precision``, as
    ``ConstructStaircase`` defines it; all pairs at once (one matrix product)."""
    pairs = sorted(answers)
    if not pairs:
        return set()
    probe = ConstructStaircase.for_pair(posteriors, pairs[0], starts, noise, precision=precision)
    m = probe.m_values
    marginals = posteriors.probs[pairs].reshape(len(pairs), len(m), -1).sum(axis=2)
    person_sd = (noise or DEFAULT_NOISE)["construct"].get("person_sd", 0.0)
    if person_sd > 0:
        marginals = marginals @ _spread_kernel(tuple(m), float(person_sd)).T
    index = {round(float(s), 4): i for i, s in enumerate(probe.starts)}
    last = len(MIDPOINT_LAMS) - 1
    done = set()
    for row, pair in zip(marginals, pairs, strict=True):
        for start, final in answers[pair]:
            s = index.get(round(float(start), 4))
            if s is None:
                s = probe._start_index(start)  # a start off the 4-decimal grid: ValueError
            row = row * probe.table[s, min(max(round(float(final) * 10), 0), last)]
        cum = np.cumsum(row / row.sum())
        tail = (1 - probe.level) / 2
        lo, hi = np.interp(tail, cum, m), np.interp(1 - tail, cum, m)
        if (hi - lo) / 2 <= precision:
            done.add(pair)
    return done
