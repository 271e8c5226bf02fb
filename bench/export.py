"""Export throughput and memory: one million judgments as CSV.

Loads 1,000,000 judgments into a throw-away PostgreSQL database, then measures,
each in a fresh process, (a) the platform's streaming CSV export through the REST
endpoint (/api/judgments/export/, the real view through Django's test client), (b) its
JSON export and (c) PostgreSQL's COPY of the same joined rows (the export's very
SELECT, CSV, psycopg2's copy_expert into /dev/null), run before and after the exports
so that a load that drifts during the run weighs on both. Prints rows per second, the
process's CPU time (all its threads) and peak memory (RSS) of each, and each export's
throughput as a ratio to COPY's (the mean time of the two COPY runs). The memory growth
is counted from after a first, abandoned export of the same request, so that it holds
what one export adds rather than the modules the first request imports. Where the
server runs on this machine (its backend's /proc readable), it also prints the CPU time
the database process spends on each COPY (bare, the CSV export's, the JSON export's:
each run five times, interleaved, the least kept) and their ratios: on two shared cores
the export's throughput is bound by that figure, which load does not blur as it does
the wall times.

    .venv/bin/python bench/export.py [--rows 1000000] [--reuse]
    BENCH_PG=postgres://postgres@127.0.0.1:5432 (default) selects the server,
    BENCH_EXPORT_DB=hillmix_bench_export (default) the database it loads.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import _pg
from _pg import SERVER, recreate_database

# BENCH_EXPORT_DB: another database name, so that runs of different sizes can coexist.
DB_NAME = os.environ.get("BENCH_EXPORT_DB", "hillmix_bench_export")


def django_setup() -> None:
    _pg.django_setup(DB_NAME)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User and system CPU time of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load(rows: int) -> None:
    """A Construct study with 1,000-trial sessions, judgments made in SQL."""
    django_setup()
    from django.core.management import call_command
    from django.db import connection

    from datasets.services import create_stimulus_set, import_dataset
    from elicitation.models import Participant, Session, Study
    from elicitation.services import build_conditions

    call_command("migrate", verbosity=0)
    dataset = import_dataset(name="digits", kind="demo")
    stimulus_set = create_stimulus_set(name="g", dataset=dataset, kind="grid", n_pairs=20)
    study = Study.objects.create(
        slug="bench",
        title="Bench",
        interface="construct",
        stimulus_set=stimulus_set,
        consent_text="-",
        status="live",
    )
    condition = build_conditions(study, 1)[0]
    per_session = 1000
    n_sessions = (rows + per_session - 1) // per_session
    participants = Participant.objects.bulk_create(Participant() for _ in range(n_sessions))
    Session.objects.bulk_create(
        Session(study=study, participant=p, condition=condition, trial_order=[], state="complete")
        for p in participants
    )
    first_session = Session.objects.order_by("pk").first().pk
    pair_ids = list(stimulus_set.pairs.values_list("pk", flat=True))
    with connection.cursor() as cur:
        cur.execute(
            """
            INSERT INTO elicitation_judgment
              (session_id, study_id, trial_index, interface, pair_id, stimulus_id, is_repeat,
               response, lam, confidence, rt_ms, idempotency_key, created_at)
            SELECT %s + g / %s, %s, g %% %s, 'construct', (%s::bigint[])[1 + g %% %s], NULL,
                   false,
                   jsonb_build_object('start_lam', 0.1, 'final_lam', (g %% 11) / 10.0,
                                      'history', jsonb_build_array(0.1, 0.2)),
                   (g %% 11) / 10.0, 0.7, 1000 + g %% 5000, gen_random_uuid(), now()
            FROM generate_series(0, %s - 1) AS g
            """,
            [first_session, per_session, study.pk, per_session, pair_ids, len(pair_ids), rows],
        )
        cur.execute("ANALYZE")


def measure_platform(fmt: str) -> dict:
    django_setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.test import Client

    from hillmix_site.roles import ANALYST

    user, _ = get_user_model().objects.get_or_create(username="bench", is_staff=True)
    user.groups.add(Group.objects.get(name=ANALYST))  # exporting needs the permission
    client = Client()
    client.force_login(user)
    query = {"study": "bench", "as": fmt}
    warm_up = client.get("/api/judgments/export/", query)
    next(iter(warm_up.streaming_content))
    warm_up.close()  # a client gone after the first block: the COPY is cancelled
    start_rss = peak_rss_mb()
    start_cpu = cpu_seconds()
    start = time.perf_counter()
    response = client.get("/api/judgments/export/", query)
    lines = 0
    with open(os.devnull, "wb") as sink:
        for chunk in response.streaming_content:
            lines += chunk.count(b"\n")
            sink.write(chunk)
    seconds = time.perf_counter() - start
    return {
        "rows": lines - (1 if fmt == "csv" else 2),  # the header; JSON's brackets
        "seconds": seconds,
        "cpu_seconds": cpu_seconds() - start_cpu,
        "start_rss_mb": start_rss,
        "peak_rss_mb": peak_rss_mb(),
    }


def measure_copy() -> dict:
    import psycopg2

    django_setup()
    from django.db import connection

    from elicitation.models import Judgment
    from elicitation.reports import export_queryset

    # The very SELECT the platform's export runs, handed to COPY.
    queryset = export_queryset(Judgment.objects.filter(study__slug="bench"))
    sql, params = queryset.query.sql_with_params()
    select = connection.ops.compose_sql(sql, params)
    conn = psycopg2.connect(f"{SERVER}/{DB_NAME}")
    start_rss = peak_rss_mb()
    start_cpu = cpu_seconds()
    start = time.perf_counter()
    with conn.cursor() as cur, open(os.devnull, "wb") as sink:
        cur.copy_expert(f"COPY ({select}) TO STDOUT WITH CSV HEADER", sink)
        rows = cur.rowcount
    seconds = time.perf_counter() - start
    conn.close()
    return {
        "rows": rows,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds() - start_cpu,
        "start_rss_mb": start_rss,
        "peak_rss_mb": peak_rss_mb(),
    }


def measure_server(reps: int = 5) -> dict | None:
    """The database process's CPU seconds for COPY of the bare SELECT and of the CSV and
    JSON exports' SELECTs (the least of `reps` interleaved runs, into /dev/null on this
    side), or None where the server's process is not readable here."""
    import psycopg2

    django_setup()
    from django.db import connection

    from elicitation import exports
    from elicitation.models import Judgment
    from elicitation.reports import EXPORT_COLUMNS, EXPORT_JSON_COLUMNS, export_queryset

    queryset = export_queryset(Judgment.objects.filter(study__slug="bench"))
    sql, params, kinds, _ = exports._copy_plan(queryset)
    header = [name for name, _ in EXPORT_COLUMNS]
    statements = {"bare": f"COPY ({sql}) TO STDOUT (FORMAT csv)"}
    for fmt in exports.FORMATS:
        select = exports.copy_select(fmt, header, kinds, sql, EXPORT_JSON_COLUMNS)
        options = "FORMAT csv" if fmt == "csv" else exports.JSON_COPY_OPTIONS
        statements[fmt] = f"COPY ({select}) TO STDOUT ({options})"
    statements = {k: connection.ops.compose_sql(v, params) for k, v in statements.items()}
    conn = psycopg2.connect(f"{SERVER}/{DB_NAME}")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(exports.COPY_SETTINGS)
        cur.execute("SELECT pg_backend_pid()")
        stat = f"/proc/{cur.fetchone()[0]}/stat"
    if not os.access(stat, os.R_OK):
        return None

    def backend_cpu() -> float:
        fields = open(stat).read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    seconds: dict[str, list[float]] = {name: [] for name in statements}
    with open(os.devnull, "wb") as sink:
        for _ in range(reps):
            for name, statement in statements.items():
                start = backend_cpu()
                with conn.cursor() as cur:
                    cur.copy_expert(statement, sink)
                seconds[name].append(backend_cpu() - start)
    conn.close()
    return {name: min(values) for name, values in seconds.items()}


def child(step: str, rows: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--step", step, "--rows", str(rows)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.exit(f"step {step} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--step", choices=["load", "csv", "json", "copy", "server"])
    parser.add_argument("--reuse", action="store_true", help="keep the loaded database")
    args = parser.parse_args()
    if args.step == "load":
        load(args.rows)
        print(json.dumps({}))
        return
    if args.step == "server":
        print(json.dumps(measure_server()))
        return
    if args.step:
        print(json.dumps(measure_copy() if args.step == "copy" else measure_platform(args.step)))
        return

    if not args.reuse:
        recreate_database(DB_NAME)
        start = time.perf_counter()
        child("load", args.rows)
        print(f"loaded {args.rows:,} judgments in {time.perf_counter() - start:.0f} s")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    copy, ours, as_json, copy_after = (
        child(step, args.rows) for step in ("copy", "csv", "json", "copy")
    )
    for label, result in (
        ("PostgreSQL COPY of the same rows      ", copy),
        ("platform CSV export (REST, streaming) ", ours),
        ("platform JSON export (REST, streaming)", as_json),
        ("PostgreSQL COPY of the same rows again", copy_after),
    ):
        print(
            f"{label}: {result['rows']:>9,} rows in {result['seconds']:6.1f} s = "
            f"{result['rows'] / result['seconds']:>9,.0f} rows/s; CPU "
            f"{result['cpu_seconds']:5.2f} s; peak RSS {result['peak_rss_mb']:.0f} MB "
            f"({result['peak_rss_mb'] - result['start_rss_mb']:+.0f} MB during the export)"
        )
    copy_seconds = (copy["seconds"] + copy_after["seconds"]) / 2
    print(f"throughput ratio platform CSV / COPY: {copy_seconds / ours['seconds']:.2f}")
    print(f"throughput ratio platform JSON / COPY: {copy_seconds / as_json['seconds']:.2f}")
    server = child("server", args.rows)
    if server:
        print(
            "database CPU per COPY (least of 5): bare {bare:.2f} s, CSV export {csv:.2f} s,"
            " JSON export {json:.2f} s".format(**server)
        )
        print(
            f"database CPU ratio CSV / bare: {server['csv'] / server['bare']:.2f};"
            f" JSON / bare: {server['json'] / server['bare']:.2f}"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
