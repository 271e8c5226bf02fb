"""The adaptive elicitation core (issue 18): posterior, chooser, agreement, simulator."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import norm

from adaptive.agreement import interval_alpha, participant_reliability, retest_agreement
from adaptive.chooser import Chooser, MidpointStaircase
from adaptive.hmix_fit import Observation, fit_noise, load_hmix
from adaptive.model import (
    DEFAULT_NOISE,
    Grid,
    PairPosteriors,
    build_model,
    make_grid,
    midpoint_table,
)
from adaptive.simulate import Population, fit_prior, infer_person_sd, posteriors_from

NOISE = {
    "afc": {"lapse": 0.04},
    "infer": {"sd": 0.2, "lapse": 0.1},
    "construct": {"sd": 0.12, "lapse": 0.05, "start_bias": 0.05},
    "select_shuffled": {"sd": 0.1, "lapse": 0.02},
    "prior": {"m_mean": 0.5, "m_sd": 0.2},
}


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _direct_likelihood(kind: str, value, answer: float, m: float, k: float) -> float:
    """One answer's likelihood written out by hand (DESIGN section 8)."""
    if kind == "afc":
        p1 = 0.04 / 2 + 0.96 * _sigmoid(k * (value - m))
        return p1 if answer else 1 - p1
    if kind == "infer":
        mu, sd, b = _sigmoid(k * (value - m)), 0.2, round(answer * 20)
        lo = -math.inf if b == 0 else (b - 0.5) / 20
        hi = math.inf if b == 20 else (b + 0.5) / 20
        return 0.9 * (norm.cdf(hi, mu, sd) - norm.cdf(lo, mu, sd)) + 0.1 / 21
    # construct from start value `value`, answer on the 0.1 grid
    mu, sd, b = m + 0.05 * (value - 0.5), 0.12, round(answer * 10)
    lo = -math.inf if b == 0 else (b - 0.5) / 10
    hi = math.inf if b == 10 else (b + 0.5) / 10
    return 0.95 * (norm.cdf(hi, mu, sd) - norm.cdf(lo, mu, sd)) + 0.05 / 11


def test_posterior_matches_a_direct_computation():
    grid = Grid(np.linspace(0, 1, 11), np.array([2.0, 8.0, 20.0]))
    prior = grid.prior(0.5, 0.2)
    answers = [
        ("afc", 0.4, 1.0),
        ("afc", 0.6, 1.0),
        ("afc", 0.3, 0.0),
        ("infer", 0.25, 0.31),
        ("infer", 0.75, 0.97),
        ("construct", 0.9, 0.5),
        ("construct", 0.1, 0.4),
    ]
    models = {
        "afc": build_model("afc", grid, NOISE, [0.3, 0.4, 0.6]),
        "infer": build_model("infer", grid, NOISE, [0.25, 0.75]),
        "construct": build_model("construct", grid, NOISE, [0.1, 0.9]),
    }
    post = PairPosteriors(2, grid, prior)
    for kind, value, answer in answers:
        post.update(0, models[kind].loglik(value, answer))

    direct = np.array(
        [
            norm.pdf(m, 0.5, 0.2)
            * np.prod([_direct_likelihood(kind, v, a, m, k) for kind, v, a in answers])
            for m in grid.m_values
            for k in grid.k_values
        ]
    )
    direct /= direct.sum()
    np.testing.assert_allclose(post.probs[0], direct, rtol=1e-9, atol=1e-15)
    mean, sd = post.midpoint(0)
    assert mean == pytest.approx(float(direct @ grid.m))
    assert sd == pytest.approx(math.sqrt(float(direct @ (grid.m - mean) ** 2)))
    # The other pair saw nothing: still the prior.
    np.testing.assert_allclose(post.probs[1], prior / prior.sum())
    assert post.n_judgments.tolist() == [7, 0]


def test_midpoint_likelihood_integrates_noise_over_the_grid_cell():
    grid = Grid(np.array([0.52]), np.array([5.0]))
    table = midpoint_table(grid, [0.5], sd=0.1, lapse=0.0)  # (1, 11, 1)
    assert table[0, 5, 0] == pytest.approx(norm.cdf(0.3) - norm.cdf(-0.7))
    # The end cells take the tails (the slider stops at 0 and 1).
    assert table[0, 10, 0] == pytest.approx(1 - norm.cdf((0.95 - 0.52) / 0.1))
    assert table[0, :, 0].sum() == pytest.approx(1.0)


def test_curve_band_contains_the_mean_and_narrows_with_data():
    grid = make_grid()
    model = build_model("infer", grid, NOISE)
    post = PairPosteriors(1, grid)
    lams, mean, lo, hi = post.curve(0)
    width_before = (hi - lo).mean()
    rng = np.random.default_rng(1)
    for _ in range(200):
        lam = float(rng.choice(model.candidates))
        post.update(0, model.loglik(lam, float(np.clip(_sigmoid(10 * (lam - 0.4)), 0, 1))))
    lams, mean, lo, hi = post.curve(0)
    assert np.all(lo <= mean + 1e-12) and np.all(mean <= hi + 1e-12)
    assert (hi - lo).mean() < width_before / 3
    assert post.midpoint(0)[0] == pytest.approx(0.4, abs=0.03)


def _afc_answers(post, model, pair, m, k, n, rng):
    for _ in range(n):
        lam = float(rng.choice(model.candidates))
        post.update(pair, model.loglik(lam, float(rng.random() < _sigmoid(k * (lam - m)))))


def test_chooser_prefers_informative_lams_over_known_ones():
    grid = make_grid()
    model = build_model("afc", grid, NOISE)
    rng = np.random.default_rng(0)
    post = PairPosteriors(2, grid)
    _afc_answers(post, model, 0, 0.3, 12.0, 400, rng)  # pair 0 is pinned down
    chooser = Chooser(post, model, max_per_pair=5, budget=10)
    eig = chooser.scores
    assert eig[1].max() > 3 * eig[0].max()
    trial = chooser.choose(chooser.new_session())
    assert trial.pair == 1
    # Within a pair whose slope is known, the gain peaks near the uncertain midpoint.
    narrow = Grid(np.linspace(0, 1, 101), np.array([12.0]))
    one = PairPosteriors(1, narrow, narrow.prior(0.6, 0.05))
    gains = build_model("afc", narrow, NOISE).expected_information_gain(one.probs[0])
    lams = build_model("afc", narrow, NOISE).candidates
    assert abs(lams[int(np.argmax(gains))] - 0.6) <= 0.05
    assert gains[np.isclose(lams, 0.6)][0] > 3 * gains[np.isclose(lams, 0.05)][0]


def test_midpoint_information_gain_matches_a_direct_computation():
    grid = Grid(np.linspace(0, 1, 6), np.array([3.0, 10.0]))
    model = build_model("afc", grid, NOISE, [0.3, 0.5, 0.7])
    probs = np.random.default_rng(1).random(grid.size)
    probs /= probs.sum()
    gain, marginal = model.midpoint_information_gain(probs, len(grid.m_values))
    pm = probs.reshape(6, 2)
    assert np.allclose(marginal, pm.sum(axis=1))
    for c, lam in enumerate([0.3, 0.5, 0.7]):
        # P(answer 1 | m) with the slope marginalised out, then I(answer; m) by hand.
        p1 = np.array(
            [
                sum(
                    pm[i, j] / pm[i].sum() * (0.02 + 0.96 * _sigmoid(k * (lam - m)))
                    for j, k in enumerate(grid.k_values)
                )
                for i, m in enumerate(grid.m_values)
            ]
        )
        pred = float(marginal @ p1)
        h = -(pred * math.log(pred) + (1 - pred) * math.log(1 - pred))
        cond = -(p1 * np.log(p1) + (1 - p1) * np.log(1 - p1))
        assert gain[c] == pytest.approx(h - marginal @ cond, rel=1e-9)


def test_midpoint_objective_serves_the_pair_likely_to_miss_the_tolerance():
    grid = make_grid(n_m=101, n_k=8)
    model = build_model("infer", grid, NOISE)
    post = PairPosteriors(2, grid)
    m, k = grid.m, grid.k
    # Pair 0: midpoint known exactly, slope unknown (information about k only).
    known = np.where(np.isclose(m, 0.5), 1.0, 1e-12)
    # Pair 1: slope known, midpoint uncertain around 0.35.
    unsure = norm.pdf(m, 0.35, 0.08) * np.where(np.isclose(k, grid.k_values[4]), 1.0, 1e-12)
    for row, w in enumerate((known, unsure)):
        post.probs[row] = w / w.sum()
        post.log_post[row] = np.log(post.probs[row])
    gains = [model.midpoint_information_gain(post.probs[p], 101)[0] for p in (0, 1)]
    assert gains[0].max() < 1e-6 < gains[1].max()
    # The curve objective values pair 0's slope information; the midpoint objective does not.
    assert model.expected_information_gain(post.probs[0]).max() > 0.01
    chooser = Chooser(post, model, max_per_pair=1, budget=5, objective="midpoint")
    trial = chooser.choose(chooser.new_session())
    assert trial.pair == 1
    assert abs(trial.value - 0.35) <= 0.15
    with pytest.raises(ValueError):
        Chooser(post, model, objective="slope")


def test_chooser_keeps_the_session_constraints():
    grid = make_grid(n_m=51, n_k=8)
    model = build_model("infer", grid, NOISE)
    post = PairPosteriors(4, grid)
    chooser = Chooser(post, model, max_per_pair=2, budget=10, n_repeats=2, repeat_spacing=3)
    session = chooser.new_session()
    served = []
    while (trial := chooser.choose(session)) is not None:
        served.append(trial)
        chooser.observe(trial.pair, trial.value, 0.5)
    assert len(served) == 10
    fresh = [t for t in served if not t.is_repeat]
    assert max(sum(t.pair == p for t in fresh) for p in range(4)) <= 2
    repeats = [i for i, t in enumerate(served) if t.is_repeat]
    assert len(repeats) == 2
    for i in repeats:
        first = next(
            j
            for j, t in enumerate(served)
            if not t.is_repeat and (t.pair, t.value) == (served[i].pair, served[i].value)
        )
        assert i - first >= 3
    # Only available stimuli are chosen, and a non-candidate lam is refused.
    available = np.zeros((4, len(model.candidates)), dtype=bool)
    available[2, 3] = True
    trial = chooser.choose(chooser.new_session(), available)
    assert (trial.pair, trial.value) == (2, float(model.candidates[3]))
    with pytest.raises(ValueError):
        chooser.observe(0, 0.123, 0.5)


def test_staircase_stops_once_the_midpoint_is_known_to_005():
    grid = make_grid()
    post = PairPosteriors(1, grid, grid.prior(0.5, 0.15))
    stair = MidpointStaircase.for_pair(post, 0, person_sd=0.05, max_steps=200)
    rng = np.random.default_rng(3)
    truth, k = 0.62, 15.0
    while not stair.done:
        lam = stair.next_lam()
        stair.update(lam, rng.random() < 0.02 + 0.96 * _sigmoid(k * (lam - truth)))
    lo, hi = stair.interval()
    assert (hi - lo) / 2 <= 0.05
    assert stair.steps < 200
    assert stair.estimate[0] == pytest.approx(truth, abs=0.06)


def test_krippendorff_alpha_on_the_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", the 4 observers x
    # 12 units example with missing values: interval alpha = 0.849.
    data = [
        "1 2 3 3 2 1 4 1 2 * * *",
        "1 2 3 3 2 2 4 1 2 5 * 3",
        "* 3 3 3 2 3 4 2 2 5 1 *",
        "1 2 3 3 2 4 4 1 2 5 1 *",
    ]
    ratings = [
        (f"obs{r}", f"unit{u:02d}", float(v))
        for r, row in enumerate(data)
        for u, v in enumerate(row.split())
        if v != "*"
    ]
    assert interval_alpha(ratings) == pytest.approx(0.849, abs=5e-4)


def test_krippendorff_alpha_hand_computed():
    # Two raters, units (1,1), (2,2), (3,4): D_o = 2/6, D_e = 82/30.
    ratings = [("a", "u1", 1), ("b", "u1", 1), ("a", "u2", 2), ("b", "u2", 2)]
    ratings += [("a", "u3", 3), ("b", "u3", 4)]
    assert interval_alpha(ratings) == pytest.approx(1 - (2 / 6) / (82 / 30))
    with pytest.raises(ValueError):
        interval_alpha([("a", "u1", 1.0), ("a", "u2", 2.0)])


def test_reliability_downweights_a_noisy_participant():
    rng = np.random.default_rng(0)
    truth = rng.random(40)
    judgments = []
    for person, sd in (("p1", 0.03), ("p2", 0.03), ("p3", 0.03), ("p4", 0.03), ("noisy", 0.3)):
        for u in range(40):
            judgments.append((person, f"u{u}", truth[u] + rng.normal(0, sd), False))
        for u in range(10):
            judgments.append((person, f"u{u}", truth[u] + rng.normal(0, sd), True))
    rel = participant_reliability(judgments)
    assert rel["noisy"]["weight"] < 0.5 < rel["p1"]["weight"]
    assert rel["noisy"]["error_sd"] > 3 * rel["p1"]["error_sd"]
    assert rel["p1"]["n_repeats"] == 10
    retest = retest_agreement([(0.1, 0.15), (0.5, 0.45), (0.9, 0.8)])
    assert retest["n"] == 3 and retest["r"] > 0.95
    assert retest["mean_abs_diff"] == pytest.approx(0.2 / 3)


def test_prior_gaussian_in_log_k_against_direct_computation():
    grid = make_grid(n_m=11, k_min=2.0, k_max=32.0, n_k=5)  # k = 2, 4, 8, 16, 32
    prior = grid.prior(0.5, 0.2, log_k_mean=math.log(4.0), log_k_sd=0.5).reshape(11, 5)
    direct = np.array(
        [
            [
                norm.pdf(m, 0.5, 0.2) * norm.pdf(math.log(k), math.log(4.0), 0.5)
                for k in grid.k_values
            ]
            for m in grid.m_values
        ]
    )
    np.testing.assert_allclose(prior, direct / direct.sum())
    # Without the log k terms it stays flat in log k, as before.
    flat = grid.prior(0.5, 0.2).reshape(11, 5)
    np.testing.assert_allclose(flat, flat[:, :1].repeat(5, axis=1))


def test_slope_prior_stops_a_few_answers_pinning_the_midpoint():
    """A flat log k prior lets answers that fit a steep curve narrow m far too much."""
    grid = make_grid()
    model = build_model("infer", grid, NOISE)
    flat = PairPosteriors(1, grid, grid.prior(0.5, 0.15))
    fitted = PairPosteriors(1, grid, grid.prior(0.5, 0.15, math.log(6.0), 0.6))
    for lam, answer in ((0.45, 0.1), (0.55, 0.95), (0.5, 0.7)):
        for post in (flat, fitted):
            post.update(0, model.loglik(lam, answer))
    assert fitted.midpoint(0)[1] > 1.2 * flat.midpoint(0)[1]
    assert fitted.slope(0) < flat.slope(0)


def _infer_observations(pop: Population, n_people: int, seed: int) -> list[Observation]:
    rng = np.random.default_rng(seed)
    obs = []
    for s in range(n_people):
        person = pop.participant(rng)
        for p in range(len(pop.pairs)):
            for lam in (0.1, 0.25, 0.5, 0.75, 0.9):
                answer = person.infer(p, lam)[0]
                obs.append(
                    Observation("infer", f"s{s}", pop.pairs[p], lam, answer, False, "", None)
                )
    return obs


@pytest.mark.parametrize("spread", [0.0, 0.06])
def test_infer_person_sd_recovers_the_simulated_spread(spread):
    pairs = [(f"a{i}", f"b{i}") for i in range(12)]
    m, k = np.linspace(0.4, 0.6, 12), np.full(12, 7.0)
    noise = {"infer": {"sd": 0.2, "lapse": 0.0}}
    pop = Population(pairs, m, k, noise, {"infer": spread})
    obs = _infer_observations(pop, 80, seed=3)
    assert infer_person_sd(obs, pairs, m, k, 0.2) == pytest.approx(spread, abs=0.02)


@pytest.fixture
def hmix_fit(shared_data):
    obs = load_hmix(shared_data / "hmix")
    return obs, fit_noise(obs)


@pytest.mark.shared_data
def test_fitted_noise_is_stable_and_storable(hmix_fit):
    obs, noise = hmix_fit
    assert json.loads(json.dumps(noise)) == noise
    assert fit_noise(obs) == noise
    subjects = sorted({o.subject for o in obs})
    halves = [fit_noise([o for o in obs if subjects.index(o.subject) % 2 == h]) for h in (0, 1)]
    for interface in ("infer", "construct", "select_shuffled"):
        for half in halves:
            assert half[interface]["sd"] == pytest.approx(noise[interface]["sd"], abs=0.04)
            assert half[interface]["lapse"] == pytest.approx(noise[interface]["lapse"], abs=0.05)
    assert 0.15 <= noise["infer"]["sd"] <= 0.35
    assert 0.05 <= noise["construct"]["sd"] <= 0.2


@pytest.mark.shared_data
def test_simulator_reproduces_hmix_summaries(hmix_fit):
    obs, noise = hmix_fit
    grid = make_grid()
    pop = Population.fit(obs, noise, grid)
    assert len(pop.pairs) == 45
    index = {p: i for i, p in enumerate(pop.pairs)}
    rng = np.random.default_rng(0)
    by_subject: dict = {}
    for interface in ("infer", "construct", "select_shuffled"):
        real = [o for o in obs if o.interface == interface]
        simulated = []
        for o in real:
            person = by_subject.setdefault(o.subject, pop.participant(rng))
            simulated.append(person.answer(interface, index[o.pair], o.value))
        real_a = np.array([o.answer for o in real])
        sim_a = np.array(simulated)
        if interface == "infer":
            for lam in (0.1, 0.25, 0.5, 0.75, 0.9):
                pick = np.array([o.value == lam for o in real])
                assert sim_a[pick].mean() == pytest.approx(real_a[pick].mean(), abs=0.05)
                assert sim_a[pick].std() == pytest.approx(real_a[pick].std(), abs=0.05)
        else:
            assert sim_a.mean() == pytest.approx(real_a.mean(), abs=0.03)
            assert sim_a.std() == pytest.approx(real_a.std(), abs=0.04)
    # The simulator's truth is what all real judgments say.
    post = posteriors_from(obs, pop.pairs, noise, grid)
    np.testing.assert_allclose(post.midpoints()[0], pop.m)
    assert DEFAULT_NOISE["infer"]["sd"] == pytest.approx(noise["infer"]["sd"], abs=0.1)


@pytest.mark.shared_data
def test_simulated_people_are_offset_by_each_interfaces_spread(hmix_fit):
    obs, noise = hmix_fit
    grid = make_grid()
    pop = Population.fit(obs, noise, grid)
    # H-Mix: Construct midpoints spread by person far more than Infer answers show.
    assert pop.person_sd["construct"] == noise["construct"]["person_sd"]
    assert pop.person_sd["infer"] < 0.04 < pop.person_sd["construct"]
    person = pop.participant(np.random.default_rng(1))
    ratio = person.offsets["infer"] / person.offsets["construct"]
    assert ratio == pytest.approx(pop.person_sd["infer"] / pop.person_sd["construct"])
    prior = fit_prior(obs, noise, grid)
    assert json.loads(json.dumps(prior)) == prior
    assert math.log(3) < prior["log_k_mean"] < math.log(15)
    assert prior["m_sd"] > noise["prior"]["m_sd"] * 0.5
