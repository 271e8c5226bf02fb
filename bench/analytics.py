"""Dashboards and aggregates at a million judgments (issue 21, goal 3).

Loads an Infer study with 1,000,000 judgments (10,000 participants of 100 trials, the
last two of each a repeat, over 1,000 stimuli) into a throw-away PostgreSQL database
with one INSERT ... SELECT over generate_series, then times, in-process through
Django's test client as an Analyst, the study's dashboard page and its aggregate
endpoints. Next to each it times the bare SQL aggregate that yields the same numbers
(plain psycopg2, no Django) and prints the ratio endpoint / bare SQL. Each endpoint's
first request (cold: after one admin page, the process's own first request, timed
apart) is printed apart from the median of --repeat more (warm), with the load
average; the last line times the dashboard's curves and who-to-trust sections
alone.

    .venv/bin/python bench/analytics.py [--rows 1000000] [--repeat 3] [--reuse]
    BENCH_PG=postgres://postgres@127.0.0.1:5432 (default) selects the server.
"""

import argparse
import os
import statistics
import time

import _pg
from _pg import SERVER, recreate_database

DB_NAME = "hillmix_bench_analytics"
PER_SESSION = 100
PAIRS = 200  # x 5 single lams = 1,000 stimuli


def django_setup() -> None:
    _pg.django_setup(DB_NAME)


def load(rows: int) -> int:
    """An Infer study with `rows` judgments made in SQL; returns the study's pk."""
    from django.core.management import call_command
    from django.db import connection

    from datasets.models import Stimulus
    from datasets.services import create_stimulus_set, import_dataset
    from elicitation.models import Participant, Session, Study
    from elicitation.services import build_conditions

    call_command("migrate", verbosity=0)
    dataset = import_dataset(name="digits", kind="demo")
    stimulus_set = create_stimulus_set(name="s", dataset=dataset, kind="single", n_pairs=PAIRS)
    study = Study.objects.create(
        slug="bench",
        title="Bench",
        interface="infer",
        stimulus_set=stimulus_set,
        consent_text="-",
        status="live",
        ask_confidence=True,
    )
    conditions = build_conditions(study, 4)
    n_sessions = (rows + PER_SESSION - 1) // PER_SESSION
    participants = Participant.objects.bulk_create(
        (Participant() for _ in range(n_sessions)), batch_size=5000
    )
    Session.objects.bulk_create(
        (
            Session(
                study=study,
                participant=p,
                condition=conditions[i % len(conditions)],
                trial_order=[],
                state="complete",
                excluded=i % 50 == 0,
            )
            for i, p in enumerate(participants)
        ),
        batch_size=5000,
    )
    first_session = Session.objects.filter(study=study).order_by("pk").first().pk
    stimuli = list(
        Stimulus.objects.filter(pair__stimulus_set=stimulus_set)
        .order_by("pk")
        .values_list("pk", "pair_id")
    )
    with connection.cursor() as cur:
        cur.execute("SELECT setseed(0.21)")
        # A trial's stimulus is (session * 7 + trial) mod n; the two repeats at the end
        # show the session's first two stimuli again.
        cur.execute(
            """
            INSERT INTO elicitation_judgment
              (session_id, study_id, trial_index, interface, pair_id, stimulus_id, is_repeat,
               response, lam, confidence, rt_ms, idempotency_key, created_at)
            SELECT %(first)s + g / %(per)s, %(study)s, g %% %(per)s, 'infer',
                   (%(pairs)s::bigint[])[1 + k], (%(stimuli)s::bigint[])[1 + k],
                   g %% %(per)s >= %(per)s - 2, '{}'::jsonb, random(), random(),
                   300 + 3000 * random(), gen_random_uuid(), now()
            FROM (
                SELECT g, ((g / %(per)s) * 7
                           + CASE WHEN g %% %(per)s >= %(per)s - 2
                                  THEN g %% %(per)s - (%(per)s - 2) ELSE g %% %(per)s END)
                          %% %(n)s AS k
                FROM generate_series(0, %(rows)s - 1) AS g
            ) AS t
            """,
            {
                "first": first_session,
                "per": PER_SESSION,
                "study": study.pk,
                "pairs": [p for _, p in stimuli],
                "stimuli": [s for s, _ in stimuli],
                "n": len(stimuli),
                "rows": rows,
            },
        )
        cur.execute("ANALYZE")
    return study.pk


# The bare SQL behind each endpoint's numbers: the same GROUP BYs over the same rows
# (live sessions only, excluded participants left out: reports.counted), fetched with
# psycopg2 and nothing else.
COUNTED = """
    SELECT j.* FROM elicitation_judgment j JOIN elicitation_session s ON s.id = j.session_id
    WHERE j.study_id = %(study)s AND s.kind = 'live' AND NOT s.excluded
"""
BARE = {
    "confidence-by-lam": f"""
        SELECT round(t::numeric, 6), avg(c), stddev_pop(c), count(*) FROM (
            SELECT max(st.lam) t, avg(j.confidence) c FROM ({COUNTED}) j
            JOIN datasets_stimulus st ON st.id = j.stimulus_id
            WHERE j.confidence IS NOT NULL GROUP BY j.stimulus_id) x GROUP BY 1 ORDER BY 1
    """,
    # Grouped by pair first, the class names joined to the groups (as the endpoint does:
    # the fastest plain SQL we know for these numbers).
    "class-pairs": f"""
        SELECT LEAST(p.class1, p.class2), GREATEST(p.class1, p.class2), sum(g.n),
               sum(g.n * CASE WHEN p.class1 <= p.class2 THEN g.m ELSE 1 - g.m END)
                   / sum(g.n)
        FROM (SELECT j.pair_id, count(*) n, avg(j.lam) m, var_pop(j.lam) v
              FROM ({COUNTED}) j WHERE j.lam IS NOT NULL GROUP BY j.pair_id) g
        JOIN datasets_pair p ON p.id = g.pair_id GROUP BY 1, 2 ORDER BY 1, 2
    """,
    # Every per-stimulus figure's numbers in one pass (perceived mean and variance,
    # weighted relabel, mean confidence), what the summary and the dashboard read.
    "stimulus-groups": f"""
        SELECT st.name, st.lam, g.* FROM (
            SELECT j.stimulus_id, min(j.id), count(j.lam), avg(j.lam), var_pop(j.lam),
                   avg(j.lam * j.confidence), count(j.confidence), avg(j.confidence)
            FROM ({COUNTED}) j WHERE j.stimulus_id IS NOT NULL GROUP BY j.stimulus_id) g
        JOIN datasets_stimulus st ON st.id = g.stimulus_id
    """,
    # Every judgment's values per stimulus (?values=true).
    "stimuli": f"""
        SELECT st.name, st.lam, array_agg(j.lam ORDER BY j.id),
               array_agg(j.confidence ORDER BY j.id), avg(j.lam), stddev_pop(j.lam),
               avg(j.lam * j.confidence)
        FROM ({COUNTED}) j JOIN datasets_stimulus st ON st.id = j.stimulus_id
        WHERE j.lam IS NOT NULL GROUP BY st.id ORDER BY min(j.id)
    """,
    # The dashboard's quality table shows its first page: 200 sessions.
    "quality": """
        SELECT session_id, count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY rt_ms)
        FROM elicitation_judgment WHERE study_id = %(study)s AND session_id IN (
            SELECT id FROM elicitation_session WHERE study_id = %(study)s
            ORDER BY started_at, id LIMIT 200)
        GROUP BY session_id
    """,
    "progress": """
        SELECT condition_id, state, count(*) FROM elicitation_session
        WHERE study_id = %(study)s GROUP BY 1, 2
    """,
}
# What the dashboard page shows of an Infer study: progress, the per-stimulus figures
# (perceived and confidence by lam, the paper's pooled confidence: one GROUP BY), the
# class pairs and a page of the quality table. Its curves and who-to-trust sections
# (elicitation.reliability) have no bare SQL counterpart yet: "trust section" times
# their reads and computation alone.
DASHBOARD = ["progress", "stimulus-groups", "class-pairs", "quality"]


def bare_seconds(names: list[str], study: int) -> float:
    import psycopg2

    conn = psycopg2.connect(f"{SERVER}/{DB_NAME}")
    start = time.perf_counter()
    with conn.cursor() as cur:
        for name in names:
            cur.execute(BARE[name], {"study": study})
            cur.fetchall()
    seconds = time.perf_counter() - start
    conn.close()
    return seconds


def endpoint_seconds(client, url: str) -> float:
    start = time.perf_counter()
    response = client.get(url)
    body = response.content
    seconds = time.perf_counter() - start
    assert response.status_code == 200 and body, (url, response.status_code)
    return seconds


def trust_seconds(study: int) -> tuple[float, float]:
    """The dashboard's curves and who-to-trust sections' reads and computation
    (elicitation.reliability over every counted answer), without the page around them:
    (wall seconds, this process's CPU seconds; the rest of the wall time is mostly the
    database's)."""
    from elicitation import reliability
    from elicitation.models import Study

    start, cpu = time.perf_counter(), time.process_time()
    study = Study.objects.get(pk=study)
    rows = reliability.answers(study)
    agreement = reliability.study_agreement(study, rows=rows)
    reliability.curves(study, rows=rows, agreement=agreement)
    return time.perf_counter() - start, time.process_time() - cpu


def load_average() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reuse", action="store_true", help="keep the loaded database")
    args = parser.parse_args()

    if not args.reuse:
        recreate_database(DB_NAME)
    django_setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client
    from django.urls import reverse

    from elicitation.models import Judgment, Study
    from hillmix_site.roles import ANALYST

    start = time.perf_counter()
    study = Study.objects.get(slug="bench").pk if args.reuse else load(args.rows)
    count = Judgment.objects.filter(study_id=study).count()
    print(f"study with {count:,} judgments ready in {time.perf_counter() - start:.0f} s")

    user, _ = get_user_model().objects.get_or_create(username="bench", is_staff=True)
    user.groups.add(Group.objects.get(name=ANALYST))
    client = Client()
    client.force_login(user)
    endpoints = [
        ("dashboard page", reverse("admin:elicitation_study_dashboard", args=[study]),
         DASHBOARD),
        ("confidence-by-lam", "/api/studies/bench/aggregates/confidence-by-lam/",
         ["confidence-by-lam"]),
        ("class-pairs", "/api/studies/bench/aggregates/class-pairs/", ["class-pairs"]),
        ("per-stimulus", "/api/studies/bench/aggregates/stimuli/", ["stimulus-groups"]),
        ("per-stim. values", "/api/studies/bench/aggregates/stimuli/?values=true",
         ["stimuli"]),
        ("paper view", "/api/studies/bench/aggregates/paper/", ["stimulus-groups"]),
    ]  # fmt: skip
    # The process's own first request (URLconf, view modules, the database connection)
    # is what a serving worker has long paid; timed apart, on the admin's index.
    first = endpoint_seconds(client, reverse("admin:index"))
    print(f"first request of the process (admin index): {first:.3f} s")
    # Cold: each endpoint's first request (its templates and lazy imports, the
    # database's first read of the tables); warm: the median of --repeat more.
    print(f"{'endpoint':<18} {'cold s':>7} {'warm s':>7} {'bare SQL s':>10} {'ratio':>6}  "
          f"(warm: median of {args.repeat}; load average 1/5/15 min)")  # fmt: skip
    for label, url, bare in endpoints:
        cold = endpoint_seconds(client, url)
        ours = statistics.median(endpoint_seconds(client, url) for _ in range(args.repeat))
        base = statistics.median(bare_seconds(bare, study) for _ in range(args.repeat))
        print(f"{label:<18} {cold:>7.3f} {ours:>7.3f} {base:>10.3f} {ours / base:>6.2f}  "
              f"{load_average()}")  # fmt: skip
    runs = [trust_seconds(study) for _ in range(args.repeat)]
    trust = statistics.median(wall for wall, _ in runs)
    cpu = statistics.median(cpu for _, cpu in runs)
    print(f"{'trust section':<18} {'':>7} {trust:>7.3f} {'-':>10} {'-':>6}  {load_average()}"
          f"  (Python CPU {cpu:.3f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
