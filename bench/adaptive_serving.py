"""Bench: an adaptive study with 1,000 pairs, through the services a trial page uses, on
PostgreSQL (issue 18: choosing a next trial p99 under 5 ms).

An adaptive Infer study of --pairs pairs (5 lams each, one condition; stimulus rows
without images, as only the choice and the save are timed) takes participants one after
another. A session's first trial is served as the trial page serves it
(services.serve_next_trial); every answer after that is saved as the save's view does
(record_judgment, then the reply's next trial: serve_next_trial and next_trial), and
the save chooses the next trial itself before its one statement
(services.adaptive.next_after_answer: the posteriors changed since the last re-read,
the chooser's masked argmax over pairs x lams with only changed pairs re-scored), which
stores the answer, adds it to its pair's posterior and appends the next trial.

Prints p50 / p99, wall time and the thread's CPU time (on a busy shared machine the
wall time includes waiting for a core), of: choosing the next trial (inside the save),
a session's first trial (serve_next_trial), and the save with its next trial; and the
statements per save.

    .venv/bin/python bench/adaptive_serving.py [--pairs 1000] [--trials 3000]
    BENCH_PG=postgres://postgres@127.0.0.1:5432 (default) selects the server; the
    database BENCH_ADAPTIVE_DB (default hillmix_bench_adaptive) is dropped and made
    afresh.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pg import recreate_database  # noqa: E402

DB_NAME = os.environ.get("BENCH_ADAPTIVE_DB", "hillmix_bench_adaptive")
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
    from django.db import connection

    from elicitation.live import live_session
    from elicitation.selectors import next_trial
    from elicitation.services import RecruiterIds, record_judgment, serve_next_trial, start_session
    from elicitation.services import adaptive as adaptive_services

    started = time.perf_counter()
    study = make_study(args.pairs)
    print(
        f"study with {args.pairs} pairs x {len(LAMS)} lams made in "
        f"{time.perf_counter() - started:.1f} s"
    )
    # The choice inside the save, timed where it runs.
    choose_ms, choose_cpu = [], []
    chooses = adaptive_services.next_after_answer

    def timed_choice(*args, **kwargs):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return chooses(*args, **kwargs)
        finally:
            choose_ms.append((time.perf_counter() - t0) * 1000)
            choose_cpu.append((time.thread_time() - c0) * 1000)

    adaptive_services.next_after_answer = timed_choice
    statements = [0]

    def count(execute, sql, params, many, context):
        statements[0] += 1
        return execute(sql, params, many, context)

    rng = np.random.default_rng(0)
    m = rng.normal(0.5, 0.08, args.pairs)
    first_ms, first_cpu, save_ms, save_cpu, save_statements = [], [], [], [], []
    person = 0
    while len(save_ms) < args.trials:
        person += 1
        session = start_session(study, RecruiterIds(f"bench-{person}"), quiz_answers=[])
        token = session.token
        live = live_session(token, study.slug)
        t0, c0 = time.perf_counter(), time.thread_time()
        serve_next_trial(live)
        trial = next_trial(live)
        first_ms.append((time.perf_counter() - t0) * 1000)
        first_cpu.append((time.thread_time() - c0) * 1000)
        while trial is not None and len(save_ms) < args.trials:
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
            statements[0] = 0
            with connection.execute_wrapper(count):
                t0, c0 = time.perf_counter(), time.thread_time()
                result = record_judgment(token, payload, study.slug)
                serve_next_trial(result.live)  # the reply's next trial, as the view does
                trial = next_trial(result.live)
                save_ms.append((time.perf_counter() - t0) * 1000)
                save_cpu.append((time.thread_time() - c0) * 1000)
            save_statements.append(statements[0])
            live = result.live
    skip = 20  # the first choices build the process's chooser and warm the caches

    def line(name: str, wall: list, cpu: list) -> str:
        w, c = np.array(wall[skip:]), np.array(cpu[skip:])
        return (
            f"{name}: {len(w)} timed; wall p50 {np.percentile(w, 50):.2f} ms, p99 "
            f"{np.percentile(w, 99):.2f} ms; CPU p50 {np.percentile(c, 50):.2f} ms, p99 "
            f"{np.percentile(c, 99):.2f} ms"
        )

    print(f"{args.pairs} pairs, {person} sessions")
    print(line("choose the next trial (in the save: next_after_answer)", choose_ms, choose_cpu))
    print(line("a session's first trial (serve_next_trial)", first_ms, first_cpu))
    print(
        line("save + next trial (record_judgment, serve_next_trial, next_trial)", save_ms, save_cpu)
    )
    per_save = Counter(save_statements[skip:])
    print(
        "statements per save + next trial: "
        + ", ".join(f"{n}: {k} saves" for n, k in sorted(per_save.items()))
        + f" (load average {os.getloadavg()[0]:.2f})"
    )


if __name__ == "__main__":
    main()
