"""Bench: choosing the next trial of an adaptive study with 1,000 pairs, through the
services a trial page uses, on PostgreSQL (issue 18: p99 under 5 ms).

An adaptive Infer study of --pairs pairs (5 lams each, one condition; stimulus rows
without images, as only the choice is timed) takes participants one after another;
each trial is served (services.serve_next_trial: the session's row lock, the stored
posteriors changed since the last choice, the chooser's masked argmax over pairs x
lams with only changed pairs re-scored, the trial order's append) and answered
(record_judgment, whose transaction adds the answer to the pair's stored posterior).
Prints p50 / p99 of the choice and of the save, wall time and the thread's CPU time
(on a busy shared machine the wall time includes waiting for a core).

    .venv/bin/python bench/adaptive_serving.py [--pairs 1000] [--trials 3000]
    BENCH_PG=postgres://postgres@127.0.0.1:5432 (default) selects the server; the
    database hillmix_bench_adaptive is dropped and made afresh.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pg import recreate_database  # noqa: E402

DB_NAME = "hillmix_bench_adaptive"
LAMS = [0.1, 0.25, 0.5, 0.75, 0.9]


def make_study(n_pairs: int):
    from datasets.models import Pair, Stimulus, StimulusSet
    from datasets.services import import_dataset
    from elicitation.models import Study
    from elicitation.services import build_conditions

    dataset = import_dataset(name="digits", kind="demo")
    names = dataset.class_names
    stimulus_set = StimulusSet.objects.create(
        name="adaptive-bench", dataset=dataset, kind="single", lams=LAMS, status="succeeded"
    )
    pairs = Pair.objects.bulk_create(
        Pair(
            stimulus_set=stimulus_set,
            position=i,
            class1=names[i % len(names)],
            id1=i,
            class2=names[(i + 1) % len(names)],
            id2=i + n_pairs,
            name=f"pair_{i}",
        )
        for i in range(n_pairs)
    )
    Stimulus.objects.bulk_create(
        Stimulus(pair=pair, lam=lam, name=f"{pair.name}@{lam}") for pair in pairs for lam in LAMS
    )
    study = Study.objects.create(
        slug="adaptive-bench",
        title="Adaptive bench",
        interface="infer",
        stimulus_set=stimulus_set,
        status="live",
        consent_text="-",
        consent_items=["yes"],
        instruction_pages=["read me"],
        condition_count=1,
        repeat_trials=2,
        design="adaptive",
        adaptive_budget=60,
        adaptive_max_per_pair=3,
    )
    build_conditions(study)
    return study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=3000)
    args = parser.parse_args()
    os.environ["DATABASE_URL"] = recreate_database(DB_NAME)
    from _django import setup

    setup()
    from elicitation.live import live_session
    from elicitation.selectors import next_trial
    from elicitation.services import RecruiterIds, record_judgment, serve_next_trial, start_session

    started = time.perf_counter()
    study = make_study(args.pairs)
    print(
        f"study with {args.pairs} pairs x {len(LAMS)} lams made in "
        f"{time.perf_counter() - started:.1f} s"
    )
    rng = np.random.default_rng(0)
    m = rng.normal(0.5, 0.08, args.pairs)
    serve_ms, serve_cpu, save_ms = [], [], []
    person, token = 0, None
    while len(serve_ms) < args.trials:
        if token is None:
            person += 1
            session = start_session(study, RecruiterIds(f"bench-{person}"), quiz_answers=[])
            token = session.token
        live = live_session(token, study.slug)
        t0, c0 = time.perf_counter(), time.thread_time()
        serve_next_trial(live)
        serve_ms.append((time.perf_counter() - t0) * 1000)
        serve_cpu.append((time.thread_time() - c0) * 1000)
        trial = next_trial(live)
        if trial is None:
            token = None
            serve_ms.pop()
            serve_cpu.pop()
            continue
        spec = live.session.trial_order[trial["index"]]
        share = 1 / (1 + np.exp(-8 * (spec["value"] - m[spec["item"] // len(LAMS)])))
        slider = int(np.clip(round(100 * (1 - share + rng.normal(0, 0.15))), 0, 100))
        payload = {
            "session": live.session.reference,
            "trial_index": trial["index"],
            "idempotency_key": str(uuid.uuid4()),
            "rt_ms": 1000.0,
            "response": {
                "slider": slider,
                "confidence": 50,
                "slider_touched": True,
                "confidence_touched": True,
            },
        }
        t0 = time.perf_counter()
        record_judgment(token, payload, study.slug)
        save_ms.append((time.perf_counter() - t0) * 1000)
    skip = 20  # the first choices build the process's chooser and warm the caches
    s, c, v = (np.array(x[skip:]) for x in (serve_ms, serve_cpu, save_ms))
    print(
        f"choose the next trial (serve_next_trial), {args.pairs} pairs, {len(s)} choices, "
        f"{person} sessions: wall p50 {np.percentile(s, 50):.2f} ms, p99 "
        f"{np.percentile(s, 99):.2f} ms; CPU p50 {np.percentile(c, 50):.2f} ms, p99 "
        f"{np.percentile(c, 99):.2f} ms"
    )
    print(
        f"save with the posterior update (record_judgment): wall p50 "
        f"{np.percentile(v, 50):.2f} ms, p99 {np.percentile(v, 99):.2f} ms "
        f"(load average {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
