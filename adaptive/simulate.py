"""Simulated participants fitted to H-Mix: a generative model that answers any interface. No Django.

Each pair has a true psychometric curve (m, k) (the posterior mean from all H-Mix
judgments of that pair); each participant has a midpoint offset d ~ N(0, person_sd)
shared by all pairs; each answer adds the interface's response noise (the fitted sd
with the person spread removed) and, with the lapse rate, is a uniform guess. Seeded
through the numpy Generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .hmix_fit import Observation
from .model import (
    DEFAULT_CONSTRUCT_STARTS,
    MIDPOINT_LAMS,
    Grid,
    PairPosteriors,
    build_model,
    make_grid,
    share,
)

HMIX_INFER_LAMS = (0.1, 0.25, 0.5, 0.75, 0.9)


def posteriors_from(
    observations: list[Observation], pairs: list[tuple[str, str]], noise: dict, grid: Grid
) -> PairPosteriors:
    """Pair posteriors updated with every observation (their interfaces' likelihoods)."""
    index = {p: i for i, p in enumerate(pairs)}
    prior = grid.prior(noise["prior"]["m_mean"], noise["prior"]["m_sd"])
    post = PairPosteriors(len(pairs), grid, prior)
    models = {
        "infer": build_model("infer", grid, noise, sorted({*HMIX_INFER_LAMS})),
        "construct": build_model("construct", grid, noise, DEFAULT_CONSTRUCT_STARTS),
        "select_shuffled": build_model("select_shuffled", grid, noise),
        "afc": build_model("afc", grid, noise, sorted({*HMIX_INFER_LAMS})),
    }
    for o in observations:
        post.update(index[o.pair], models[o.interface].loglik(o.value, o.answer))
    return post


@dataclass
class Population:
    """True per-pair curves (``m``, ``k``: (P,)) and the noise model of the participants."""

    pairs: list[tuple[str, str]]
    m: np.ndarray
    k: np.ndarray
    noise: dict

    @classmethod
    def fit(
        cls, observations: list[Observation], noise: dict, grid: Grid | None = None
    ) -> Population:
        """Per-pair curves from all ``observations`` (posterior means); ``noise`` from fit_noise."""
        grid = grid or make_grid()
        pairs = sorted({o.pair for o in observations})
        post = posteriors_from(observations, pairs, noise, grid)
        m, _ = post.midpoints()
        k = np.array([post.slope(i) for i in range(len(pairs))])
        return cls(pairs, m, k, noise)

    def curve(self, lams) -> np.ndarray:
        """True share(lam) per pair, (P, L)."""
        return share(np.asarray(lams, float)[None, :], self.m[:, None], self.k[:, None])

    def participant(self, rng: np.random.Generator) -> SimulatedParticipant:
        sd = max(n.get("person_sd", 0.0) for k, n in self.noise.items() if isinstance(n, dict))
        return SimulatedParticipant(self, float(rng.normal(0.0, sd)), rng)


def _response_sd(entry: dict) -> float:
    return float(np.sqrt(max(entry["sd"] ** 2 - entry.get("person_sd", 0.0) ** 2, 1e-6)))


@dataclass
class SimulatedParticipant:
    """One simulated person; ``offset`` shifts their midpoint on every pair."""

    population: Population
    offset: float
    rng: np.random.Generator

    def _curve(self, pair: int, lam: float) -> float:
        pop = self.population
        return float(share(lam, pop.m[pair] + self.offset, pop.k[pair]))

    def afc(self, pair: int, lam: float) -> int:
        """1 when class 1 (the pair's first class) is judged dominant at lam."""
        lapse = self.population.noise["afc"]["lapse"]
        if self.rng.random() < lapse:
            return int(self.rng.random() < 0.5)
        return int(self.rng.random() < self._curve(pair, lam))

    def infer(self, pair: int, lam: float) -> tuple[float, float]:
        """(perceived share of class 1 on the 0.01 slider, confidence 0..1)."""
        n = self.population.noise["infer"]
        mean = self._curve(pair, lam)
        if self.rng.random() < n["lapse"]:
            perceived = self.rng.random()
        else:
            perceived = mean + self.rng.normal(0.0, _response_sd(n))
        perceived = float(np.round(np.clip(perceived, 0.0, 1.0), 2))
        c = self.population.noise.get("confidence", {"intercept": 0.6, "slope": 0.3, "sd": 0.2})
        conf = c["intercept"] + c["slope"] * abs(perceived - 0.5) * 2
        conf += self.rng.normal(0.0, c["sd"])
        return perceived, float(np.round(np.clip(conf, 0.0, 1.0), 2))

    def _midpoint(self, n: dict, centre: float) -> float:
        if self.rng.random() < n["lapse"]:
            return float(self.rng.choice(MIDPOINT_LAMS))
        value = centre + self.rng.normal(0.0, _response_sd(n))
        return float(np.round(np.clip(value, 0.0, 1.0), 1))

    def construct(self, pair: int, start: float) -> float:
        """The lam (0.1 grid) at which the participant stops the slider, from ``start``."""
        n = self.population.noise["construct"]
        centre = self.population.m[pair] + self.offset + n.get("start_bias", 0.0) * (start - 0.5)
        return self._midpoint(n, centre)

    def select_shuffled(self, pair: int) -> float:
        """The lam (0.1 grid) picked as the even mix among the shuffled strip."""
        n = self.population.noise["select_shuffled"]
        return self._midpoint(n, self.population.m[pair] + self.offset)

    def answer(self, interface: str, pair: int, value: float | None) -> float:
        """Any interface's answer as the posterior's ``observe`` takes it."""
        if interface == "afc":
            return float(self.afc(pair, value))
        if interface == "infer":
            return self.infer(pair, value)[0]
        if interface == "construct":
            return self.construct(pair, value)
        if interface == "select_shuffled":
            return self.select_shuffled(pair)
        raise ValueError(f"unknown interface {interface!r}")
