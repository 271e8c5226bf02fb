"""Bench: judgments needed by a fixed H-Mix-like design vs the adaptive chooser (issue 18).

1. Simulated participants fitted to H-Mix (45 CIFAR-10 class pairs, Infer): judgments
   until every pair's midpoint is within 0.05 of the truth and the mean absolute curve
   error is under 0.05; fixed design (the Infer lams 0.1/0.25/0.5/0.75/0.9 over all
   pairs, shuffled, round after round) against the adaptive chooser; median and spread
   over seeds, and the ratio. The adaptive chooser uses the midpoint objective (the
   pair most likely to miss the tolerance first, the lam most informative about m) and
   may pick any lam 0.05..0.95 in 0.05 steps (a stimulus set's lams). Both designs
   share the prior (Gaussian on m and log k, fitted to H-Mix's pair curves: fit_prior)
   and the simulated people (each offset by their interface's person spread).
2. Replay of the real H-Mix Infer judgments: the chooser may pick only stimuli with
   unused real judgments and receives one of them; judgments until every pair's
   midpoint is within 0.02 of the all-data estimate, shuffled order vs adaptive order.
3. The time to choose a next trial for a study with 1,000 pairs (p50 / p99).

Usage: .venv/bin/python bench/adaptive.py [--seeds 20] [--data ../shared/data]
No Django: the numerical core only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

# Small matrix-vector products: one BLAS thread avoids threads fighting over 2 busy cores.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adaptive.chooser import Chooser  # noqa: E402
from adaptive.hmix_fit import fit_noise, load_hmix  # noqa: E402
from adaptive.model import PairPosteriors, build_model, make_grid, share  # noqa: E402
from adaptive.simulate import (  # noqa: E402
    HMIX_INFER_LAMS,
    Population,
    fit_prior,
    posteriors_from,
)

CURVE_LAMS = np.linspace(0, 1, 21)
MAX_JUDGMENTS = 40_000
SESSION = 60  # trials per simulated participant, as in H-Mix's Infer sessions


class Tracker:
    """Per-pair errors against a truth, updated for the one pair a judgment changed."""

    def __init__(self, post: PairPosteriors, m_true, curve_true=None, m_tol=0.05, c_tol=0.05):
        self.post, self.m_true, self.curve_true = post, np.asarray(m_true), curve_true
        self.m_tol, self.c_tol = m_tol, c_tol
        mean, _ = post.midpoints()
        self.m_err = np.abs(mean - self.m_true)
        if curve_true is not None:
            grid = post.grid
            self._curve_values = share(CURVE_LAMS[:, None], grid.m, grid.k)  # (L, G)
            self.c_err = np.abs(post.mean_curve(CURVE_LAMS) - curve_true).mean(axis=1)

    def update(self, pair: int) -> bool:
        self.m_err[pair] = abs(self.post.midpoint(pair)[0] - self.m_true[pair])
        ok = bool((self.m_err <= self.m_tol).all())
        if self.curve_true is not None:
            curve = self._curve_values @ self.post.probs[pair]
            self.c_err[pair] = np.abs(curve - self.curve_true[pair]).mean()
            ok = ok and self.c_err.mean() < self.c_tol
        return ok


def simulated_run(
    pop: Population,
    noise: dict,
    grid,
    model,
    prior,
    seed: int,
    adaptive: bool,
    objective: str = "midpoint",
):
    rng = np.random.default_rng(seed)
    n_pairs = len(pop.pairs)
    post = PairPosteriors(n_pairs, grid, prior)
    tracker = Tracker(post, pop.m, pop.curve(CURVE_LAMS))
    chooser = (
        Chooser(post, model, max_per_pair=3, budget=SESSION, objective=objective)
        if adaptive
        else None
    )
    stimuli = [(p, lam) for p in range(n_pairs) for lam in HMIX_INFER_LAMS]
    queue: list = []
    person = session = None
    for n in range(1, MAX_JUDGMENTS + 1):
        if (n - 1) % SESSION == 0:
            person = pop.participant(rng)
            session = chooser.new_session() if adaptive else None
        if adaptive:
            trial = chooser.choose(session)
            pair, lam = trial.pair, trial.value
        else:
            if not queue:
                queue = [stimuli[i] for i in rng.permutation(len(stimuli))]
            pair, lam = queue.pop()
        answer = person.infer(pair, lam)[0]
        if adaptive:
            chooser.observe(pair, lam, answer)
        else:
            post.update(pair, model.loglik(lam, answer))
        if tracker.update(pair):
            return n
    return MAX_JUDGMENTS


def replay_run(
    infer_obs,
    pairs,
    noise,
    grid,
    model,
    prior,
    target,
    seed: int,
    adaptive: bool,
    objective: str = "curve",
):
    rng = np.random.default_rng(seed)
    index = {p: i for i, p in enumerate(pairs)}
    cands = list(model.candidates)
    pools: dict[tuple[int, int], list[float]] = defaultdict(list)
    for o in infer_obs:
        pools[(index[o.pair], cands.index(min(cands, key=lambda c: abs(c - o.value))))].append(
            o.answer
        )
    for key in pools:
        rng.shuffle(pools[key])
    post = PairPosteriors(len(pairs), grid, prior)
    tracker = Tracker(post, target, m_tol=0.02)
    if adaptive:
        available = np.zeros((len(pairs), len(cands)), dtype=bool)
        for (p, c), answers in pools.items():
            available[p, c] = bool(answers)
        # Real data caps nothing per participant: one long session, no per-pair limit.
        chooser = Chooser(
            post,
            model,
            max_per_pair=10**9,
            budget=10**9,
            pending_discount=1.0,
            objective=objective,
            tolerance=0.02,
        )
        session = chooser.new_session()
    else:
        order = [k for k, answers in pools.items() for _ in answers]
        order = [order[i] for i in rng.permutation(len(order))]
    total = sum(len(a) for a in pools.values())
    for n in range(1, total + 1):
        if adaptive:
            trial = chooser.choose(session, available)
            p, c = trial.pair, cands.index(trial.value)
        else:
            p, c = order[n - 1]
        answer = pools[(p, c)].pop()
        if adaptive:
            available[p, c] = bool(pools[(p, c)])
            chooser.observe(p, cands[c], answer)
        else:
            post.update(p, model.loglik(cands[c], answer))
        if tracker.update(p):
            return n
    return total


def choice_timing(grid, model, noise, prior, n_pairs=1000, n_choices=3000, seed=0):
    """Per-choice time (choose + observe + lazy re-score of the changed pair), ms."""
    rng = np.random.default_rng(seed)
    post = PairPosteriors(n_pairs, grid, prior)
    # The midpoint objective: the costlier re-score of the two.
    chooser = Chooser(post, model, max_per_pair=3, budget=100, n_repeats=5, objective="midpoint")
    m = rng.normal(0.5, 0.08, n_pairs)
    times, cpu = [], []
    session = chooser.new_session()
    for i in range(n_choices):
        if session.remaining <= 0:
            session = chooser.new_session()
        t0, c0 = time.perf_counter(), time.thread_time()
        trial = chooser.choose(session)
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.thread_time() - c0) * 1000)
        lam = trial.value
        answer = float(
            np.clip(1 / (1 + np.exp(-8 * (lam - m[trial.pair]))) + rng.normal(0, 0.2), 0, 1)
        )
        chooser.observe(trial.pair, lam, answer)
        if i == 0:
            times.clear()  # first call: nothing warmed yet
            cpu.clear()
    # Wall time includes waiting for a core on a loaded machine; CPU time is the work itself.
    return np.percentile(times, [50, 99]), np.percentile(cpu, [50, 99])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--data",
        default=os.environ.get(
            "HILLMIX_SHARED_DATA", str(Path(__file__).parents[2] / "shared" / "data")
        ),
    )
    args = parser.parse_args()
    folder = Path(args.data) / "hmix"
    started = time.perf_counter()
    grid = make_grid()
    obs = load_hmix(folder)
    noise = fit_noise(obs)
    # Both designs share the prior: fitted to H-Mix's per-pair curves, m and log k.
    prior_fit = fit_prior(obs, noise, grid)
    prior = grid.prior(**prior_fit)
    pop = Population.fit(obs, noise, grid)
    model = build_model("infer", grid, noise)
    print(f"noise fitted to H-Mix: {noise}")
    print(f"prior fitted to H-Mix's pair curves: {prior_fit}; person midpoint sd {pop.person_sd}")
    print(
        f"{len(pop.pairs)} pairs; true midpoints {pop.m.min():.3f}..{pop.m.max():.3f}, "
        f"slopes {pop.k.min():.1f}..{pop.k.max():.1f}"
    )

    (p50, p99), (c50, c99) = choice_timing(grid, model, noise, prior)
    print(
        f"choose a next trial, 1,000 pairs: wall p50 {p50:.3f} ms, p99 {p99:.3f} ms; "
        f"CPU p50 {c50:.3f} ms, p99 {c99:.3f} ms (load average {os.getloadavg()[0]:.1f})"
    )

    fixed, adaptive = [], []
    for seed in range(args.seeds):
        fixed.append(simulated_run(pop, noise, grid, model, prior, seed, adaptive=False))
        adaptive.append(simulated_run(pop, noise, grid, model, prior, seed, adaptive=True))
        print(f"  seed {seed}: fixed {fixed[-1]}, adaptive {adaptive[-1]}", flush=True)
    f, a = np.array(fixed), np.array(adaptive)
    print(
        f"simulated, {args.seeds} seeds: judgments until every midpoint within 0.05 and mean "
        "curve error < 0.05"
    )
    for name, x in (("fixed", f), ("adaptive", a)):
        q1, q3 = np.percentile(x, [25, 75])
        print(
            f"  {name:9s} median {np.median(x):.0f}  IQR {q1:.0f}..{q3:.0f}  "
            f"range {x.min()}..{x.max()}"
        )
    print(f"  ratio fixed / adaptive (medians): {np.median(f) / np.median(a):.2f}")

    infer_obs = [o for o in obs if o.interface == "infer"]
    pairs = sorted({o.pair for o in infer_obs})
    replay_model = build_model("infer", grid, noise, HMIX_INFER_LAMS)
    full = posteriors_from(infer_obs, pairs, noise, grid)
    target, _ = full.midpoints()
    n_seeds = max(5, args.seeds // 4)
    shuffled = [
        replay_run(infer_obs, pairs, noise, grid, replay_model, prior, target, s, False)
        for s in range(n_seeds)
    ]
    chosen = [
        replay_run(infer_obs, pairs, noise, grid, replay_model, prior, target, s, True)
        for s in range(n_seeds)
    ]
    chosen_m = [
        replay_run(infer_obs, pairs, noise, grid, replay_model, prior, target, s, True, "midpoint")
        for s in range(n_seeds)
    ]
    print(
        f"replay of {len(infer_obs)} real Infer judgments, {n_seeds} seeds: judgments until "
        "every midpoint within 0.02 of the all-data estimate"
    )
    print(f"  shuffled order median {np.median(shuffled):.0f} ({min(shuffled)}..{max(shuffled)})")
    print(
        f"  adaptive order (curve objective) median {np.median(chosen):.0f} "
        f"({min(chosen)}..{max(chosen)})"
    )
    print(
        f"  adaptive order (midpoint objective) median {np.median(chosen_m):.0f} "
        f"({min(chosen_m)}..{max(chosen_m)})"
    )
    print(f"bench time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
