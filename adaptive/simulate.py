"""Simulated participants fitted to H-Mix: a generative model that answers any interface. No Django.

Each pair has a true psychometric curve (m, k) (the posterior mean from all H-Mix
judgments of that pair); each participant has a midpoint offset shared by all pairs,
z * person_sd[interface] with one z ~ N(0, 1) per person (the same person is
offset in the same direction in every interface, by that interface's fitted spread);
each answer adds the interface's response noise (the fitted sd with the person spread
removed) and, with the lapse rate, is a uniform guess. Seeded through the numpy
Generator passed in.

The midpoint spread differs by interface in H-Mix: Construct's per-person midpoints
spread by about 0.07, while Infer's answers move people's curves by about 0.016 (the
per-person midpoint shift that best explains each person's Infer answers, less what
response noise alone would give; ``infer_person_sd``).
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


def infer_person_sd(
    observations: list[Observation], pairs: list[tuple[str, str]], m, k, sd: float
) -> float:
    """Per-person midpoint spread in Infer answers beyond response noise (units of lam).

    Per subject the least-squares shift d of their midpoint that explains their answers'
    residuals from the pair curves (linearised: residual ~ -k s (1 - s) d, s = share),
    with sampling variance sd^2 / sum(g^2); the spread is sqrt(var(d) - mean sampling
    variance), 0 when noise explains it all. H-Mix: about 0.016.
    """
    index = {p: i for i, p in enumerate(pairs)}
    by_subject: dict[str, list] = {}
    for o in observations:
        if o.interface == "infer":
            by_subject.setdefault(o.subject, []).append((index[o.pair], o.value, o.answer))
    if len(by_subject) < 2:
        return 0.0
    shifts, variances = [], []
    for rows in by_subject.values():
        p, lam, a = (np.array(c, float) for c in zip(*rows, strict=True))
        p = p.astype(int)
        s = share(lam, m[p], k[p])
        g = -k[p] * s * (1 - s)
        shifts.append(float(g @ (a - s) / (g @ g)))
        variances.append(sd**2 / float(g @ g))
    return float(np.sqrt(max(np.var(shifts) - np.mean(variances), 0.0)))


def fit_prior(observations: list[Observation], noise: dict, grid: Grid, widen: float = 2.0) -> dict:
    """An empirical prior over (m, log k) from H-Mix's per-pair curves: a JSON-storable dict.

    Each pair's posterior mean of m and of log k from all ``observations`` (flat log k);
    their means across pairs, and their spreads widened by ``widen`` (a weak prior; the
    m spread is at least 0.05, the log k spread at least 0.1). Keys m_mean, m_sd,
    log_k_mean, log_k_sd: ``grid.prior(**fit_prior(...))``.
    """
    pairs = sorted({o.pair for o in observations})
    post = posteriors_from(observations, pairs, noise, grid)
    m, _ = post.midpoints()
    log_k = post.probs @ np.log(grid.k)
    return {
        "m_mean": round(float(m.mean()), 4),
        "m_sd": round(float(max(m.std(), 0.05) * widen), 4),
        "log_k_mean": round(float(log_k.mean()), 4),
        "log_k_sd": round(float(max(log_k.std(), 0.1) * widen), 4),
    }


@dataclass
class Population:
    """True per-pair curves (``m``, ``k``: (P,)) and the noise model of the participants.

    ``person_sd``: per interface, the sd of a person's midpoint offset (units of lam);
    None gives every interface the largest fitted ``person_sd`` of ``noise``.
    """

    pairs: list[tuple[str, str]]
    m: np.ndarray
    k: np.ndarray
    noise: dict
    person_sd: dict | None = None

    @classmethod
    def fit(
        cls, observations: list[Observation], noise: dict, grid: Grid | None = None
    ) -> Population:
        """Per-pair curves from all ``observations`` (posterior means); ``noise`` from fit_noise.

        Person spread: Construct's and Select-Shuffled's fitted ``person_sd``; Infer's from
        ``infer_person_sd``; 2AFC (no H-Mix data) takes Infer's (both judge one mix).
        """
        grid = grid or make_grid()
        pairs = sorted({o.pair for o in observations})
        post = posteriors_from(observations, pairs, noise, grid)
        m, _ = post.midpoints()
        k = np.array([post.slope(i) for i in range(len(pairs))])
        infer_sd = infer_person_sd(observations, pairs, m, k, noise["infer"]["sd"])
        person_sd = {
            "afc": infer_sd,
            "infer": infer_sd,
            "construct": float(noise["construct"].get("person_sd", 0.0)),
            "select_shuffled": float(noise["select_shuffled"].get("person_sd", 0.0)),
        }
        return cls(pairs, m, k, noise, person_sd)

    def curve(self, lams) -> np.ndarray:
        """True share(lam) per pair, (P, L)."""
        return share(np.asarray(lams, float)[None, :], self.m[:, None], self.k[:, None])

    def participant(self, rng: np.random.Generator) -> SimulatedParticipant:
        """A new simulated person: one N(0, 1) draw scaled by each interface's spread."""
        sd = max(n.get("person_sd", 0.0) for k, n in self.noise.items() if isinstance(n, dict))
        if self.person_sd is None:
            return SimulatedParticipant(self, float(rng.normal(0.0, sd)), rng)
        z = float(rng.normal(0.0, 1.0))
        offsets = {i: z * s for i, s in self.person_sd.items()}
        return SimulatedParticipant(self, z * max(self.person_sd.values()), rng, offsets)


def _response_sd(entry: dict) -> float:
    return float(np.sqrt(max(entry["sd"] ** 2 - entry.get("person_sd", 0.0) ** 2, 1e-6)))


@dataclass
class SimulatedParticipant:
    """One simulated person; ``offset`` shifts their midpoint on every pair.

    ``offsets``: the shift per interface where it differs (``Population.person_sd``);
    an interface not in it takes ``offset``.
    """

    population: Population
    offset: float
    rng: np.random.Generator
    offsets: dict | None = None

    def _offset(self, interface: str) -> float:
        return (self.offsets or {}).get(interface, self.offset)

    def _curve(self, pair: int, lam: float, interface: str = "infer") -> float:
        pop = self.population
        return float(share(lam, pop.m[pair] + self._offset(interface), pop.k[pair]))

    def afc(self, pair: int, lam: float) -> int:
        """1 when class 1 (the pair's first class) is judged dominant at lam."""
        lapse = self.population.noise["afc"]["lapse"]
        if self.rng.random() < lapse:
            return int(self.rng.random() < 0.5)
        return int(self.rng.random() < self._curve(pair, lam, "afc"))

    def infer(self, pair: int, lam: float) -> tuple[float, float]:
        """(perceived share of class 1 on the 0.01 slider, confidence 0..1)."""
        n = self.population.noise["infer"]
        mean = self._curve(pair, lam, "infer")
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
        centre = (
            self.population.m[pair]
            + self._offset("construct")
            + n.get("start_bias", 0.0) * (start - 0.5)
        )
        return self._midpoint(n, centre)

    def select_shuffled(self, pair: int) -> float:
        """The lam (0.1 grid) picked as the even mix among the shuffled strip."""
        n = self.population.noise["select_shuffled"]
        return self._midpoint(n, self.population.m[pair] + self._offset("select_shuffled"))

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
