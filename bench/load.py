"""Load: simulated participants doing whole sessions against gunicorn + PostgreSQL.

Every participant (asyncio + httpx, each with its own cookies) enters with Prolific
ids, consents, reads the instructions and passes the quiz (one page, sent once; the
trial page comes with the first trial), answers all 32 (Construct, as long as an H-Mix
Construct session; each save's reply carries the next trial, as on the real page) and
sends feedback (the trial page's last screen).

Three phases, each next to a minimal Django view that writes one row on the same
server (the framework's floor), driven the same way:
  * as fast as the server allows, 50 and 200 participants at once: judgments per
    second, the ratio to the floor's writes per second, latencies and errors.
    With every client always waiting, latency is participants / throughput.
  * the same with only the trials measured (--trials-only 200): everyone has entered
    and passed the quiz first, unmeasured. Next to the whole-session figure it shows
    what the session's pages cost.
  * at a participant's pace: 200 participants arriving over 60 s and pausing
    --think-ms (0.5x to 1.5x) before each answer; H-Mix people took 10 to 20 s.
    Here the latencies are what a participant feels.
The floor runs before and after the participants (this shared machine's speed drifts;
the ratio uses the mean), after an unmeasured warm-up. Saturated phases also print the
CPU per judgment and per floor write of gunicorn, PostgreSQL and the generator.
The generator's cycle collector is off during a phase (see without_gc_pauses).

    .venv/bin/python bench/load.py [--participants 50 200] [--trials-only 200] [--paced 200]
        [--think-ms 5000] [--adaptive]
    BENCH_PG=postgres://postgres@127.0.0.1:5432 (default) selects the server.
"""

import argparse
import asyncio
import gc
import json
import os
import random
import re
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
from _pg import SERVER, recreate_database

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "hillmix_bench_load"
PORT = 8765
BASE = f"http://127.0.0.1:{PORT}"
SLUG = "load-construct"
# One TLS context for every client (the bench speaks plain HTTP): httpx builds one per
# client otherwise, ~40 ms of the load generator's CPU for each participant.
TLS = ssl.create_default_context()
TRIALS = 32  # 120 pairs over 4 conditions, 2 repeats
FIRST_TRIAL = re.compile(r'<script id="first-trial" type="application/json">(.*?)</script>')


def server_env() -> dict:
    return {
        **os.environ,
        "DATABASE_URL": f"{SERVER}/{DB_NAME}",
        "DEBUG": "false",
        "SECRET_KEY": "bench-" + "k" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
        "MEDIA_ROOT": "/tmp/hillmix-bench-load-media",
        "HILLMIX_BENCH_FLOOR": "1",
        "HILLMIX_SESSION_STARTS_PER_MINUTE": "1000000",
        "LOG_LEVEL": "WARNING",
        "SECURE_COOKIES": "false",  # plain HTTP on loopback
        "DJANGO_SETTINGS_MODULE": "hillmix_site.settings",
    }


def prepare(participants: int, adaptive: bool = False) -> None:
    """A fresh database with one live Construct study (adaptive: each trial chosen as it
    is served, the same 32 per session); run in a child process."""
    recreate_database(DB_NAME)
    design = (
        'design="adaptive", adaptive_budget=32, adaptive_max_per_pair=3, '
        "adaptive_repeat_spacing=10,"
        if adaptive
        else ""
    )
    script = f"""
import django
django.setup()
from django.core.management import call_command
from django.db import connection
call_command("migrate", verbosity=0)
from datasets.services import create_stimulus_set, import_dataset
from elicitation.models import Study
from elicitation.services import build_conditions
dataset = import_dataset(name="digits", kind="demo")
grid = create_stimulus_set(name="load-grid", dataset=dataset, kind="grid", n_pairs=120, seed=1)
study = Study.objects.create(
    slug="{SLUG}", title="Load", interface="construct", stimulus_set=grid, status="live",
    consent_text="-", consent_items=["yes", "yes"], instruction_pages=["read me"],
    quiz=[{{"question": "q", "options": ["a", "b"], "answer": 1}}],
    feedback_questions=["any?"], repeat_trials=2, condition_count=4, ask_confidence=True,
    completion_code="LOAD-DONE", {design})
build_conditions(study)
with connection.cursor() as cur:
    cur.execute("CREATE TABLE bench_floor (id bigserial primary key, body bytea, "
                "created timestamptz default now())")
"""
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=server_env(), check=True)


def start_server(workers: int, threads: int) -> subprocess.Popen:
    """gunicorn as deployed (gunicorn.conf.py, access log included, sent to /dev/null)."""
    env = {
        **server_env(),
        "WEB_BIND": f"127.0.0.1:{PORT}",
        "WEB_WORKERS": str(workers),
        "WEB_THREADS": str(threads),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "hillmix_site.wsgi", "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{BASE}/", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit("gunicorn did not start")


class Stats:
    def __init__(self) -> None:
        self.save_ms: list[float] = []
        self.next_ms: list[float] = []
        self.errors: list[str] = []
        self.judgments = 0


async def timed(stats_list: list[float], call):
    start = time.perf_counter()
    response = await call
    stats_list.append((time.perf_counter() - start) * 1000)
    return response


async def think(think_s: float) -> None:
    if think_s:  # people differ: 0.5x to 1.5x the mean think time
        await asyncio.sleep(think_s * random.uniform(0.5, 1.5))


def new_client() -> httpx.AsyncClient:
    # Redirects are followed, so every page a browser would load is loaded.
    return httpx.AsyncClient(base_url=BASE, verify=TLS, timeout=60, follow_redirects=True)


async def enter(web: httpx.AsyncClient, stats: Stats) -> dict | None:
    """Entry with Prolific ids, then consent, instructions and quiz, the screens of one
    page sent as one form; the first trial's body (the trial page arrives with it), or
    None after an error."""
    entry = {"PROLIFIC_PID": f"load-{uuid.uuid4().hex}", "STUDY_ID": "b", "SESSION_ID": "1"}
    page = await web.get(f"/s/{SLUG}/", params=entry)
    if page.status_code != 200 or 'id="quiz-submit"' not in page.text:
        stats.errors.append(f"consent page: {page.status_code}")
        return None
    form = {"csrfmiddlewaretoken": web.cookies["csrftoken"], "consent_0": "on", "consent_1": "on"}
    # The first trial: from sending the quiz's answers to the trial page that carries it.
    sent = web.post(f"/s/{SLUG}/consent/", data={**form, "q0": "1"})
    response = await timed(stats.next_ms, sent)
    if response.status_code != 200 or 'id="feedback-submit"' not in response.text:
        stats.errors.append(f"consent: {response.status_code}")  # feedback is its last screen
        return None
    return json.loads(FIRST_TRIAL.search(response.text).group(1))


async def answer_trials(web: httpx.AsyncClient, stats: Stats, body: dict, think_s: float) -> bool:
    """Answer every trial (Construct); False after an error."""
    # The cookies go as one fixed header, as a browser sends them. httpx's pure-Python
    # cookie jar costs this generator ~0.1 ms per request, work a participant's own
    # machine does in a study (the floor's requests carry no cookies). Saves set none.
    jar, web.cookies = web.cookies, {}
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar.jar)
    headers = {"X-CSRFToken": jar["csrftoken"], "Cookie": cookie}
    try:
        while not body["done"]:
            trial = body["trial"]
            start = trial["start_step"]  # the page knows grid steps, never lams
            final = start + 1 if start < len(trial["images"]) // 2 else start - 1
            answer = {
                "session": body["session"],
                "trial_index": trial["index"],
                "idempotency_key": str(uuid.uuid4()),
                "rt_ms": 1500,
                "confidence": 60,
                "response": {"start_step": start, "final_step": final, "steps": [start, final]},
            }
            await think(think_s)
            response = await timed(
                stats.save_ms, web.post(f"/s/{SLUG}/judgments/", json=answer, headers=headers)
            )
            if response.status_code != 201:
                stats.errors.append(f"save: {response.status_code} {response.text[:80]}")
                return False
            stats.judgments += 1
            body = response.json()
        return True
    finally:
        web.cookies = jar


async def leave(web: httpx.AsyncClient, stats: Stats) -> None:
    """The feedback (the trial page's last screen), then the completion page."""
    form = {"csrfmiddlewaretoken": web.cookies["csrftoken"], "f0": "fine"}
    response = await web.post(f"/s/{SLUG}/feedback/", data=form)
    if response.status_code != 200 or "LOAD-DONE" not in response.text:
        stats.errors.append(f"feedback: {response.status_code}")


async def recorded(stats: Stats, step: Coroutine) -> Any:
    """The step's result, or None with the transport error counted."""
    try:
        return await step
    except httpx.HTTPError as exc:
        stats.errors.append(type(exc).__name__)
        return None


async def participant(stats: Stats, think_s: float, arrive_s: float) -> None:
    """One whole session."""
    await asyncio.sleep(arrive_s)
    async with new_client() as web:
        body = await recorded(stats, enter(web, stats))
        if body is not None and await recorded(stats, answer_trials(web, stats, body, think_s)):
            await recorded(stats, leave(web, stats))


async def floor_client(requests: int, stats: Stats, think_s: float, arrive_s: float) -> None:
    await asyncio.sleep(arrive_s)
    async with httpx.AsyncClient(base_url=BASE, verify=TLS, timeout=60) as web:
        for _ in range(requests):
            try:
                await think(think_s)
                response = await timed(stats.save_ms, web.post("/bench/floor/", content=b"x"))
                if response.status_code != 201:
                    stats.errors.append(str(response.status_code))
                else:
                    stats.judgments += 1
            except httpx.HTTPError as exc:
                stats.errors.append(type(exc).__name__)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(server: subprocess.Popen) -> tuple[float, float, float]:
    """CPU used so far by gunicorn (the master and its workers), PostgreSQL's
    processes and this load generator, read from /proc."""
    gunicorn = postgres = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                name, rest = stat.read().rsplit(")", 1)
        except (FileNotFoundError, ProcessLookupError):
            continue
        # state, ppid, ... utime (12th), stime (13th), then the same for reaped
        # children: backends that exit mid-phase (connections live 60 s) and their CPU
        # move to the postmaster's
        fields = rest.split()
        used = sum(int(tick) for tick in fields[11:15]) / TICKS
        if server.pid in (int(pid), int(fields[1])):
            gunicorn += used
        elif name.endswith("(postgres"):
            postgres += used
    return gunicorn, postgres, time.process_time()


class Phase:
    """Throughput, latencies and CPU split of one set of clients."""

    def __init__(self, stats: Stats, seconds: float, cpu: tuple) -> None:
        self.stats, self.seconds = stats, seconds
        self.rate = stats.judgments / seconds
        self.cpu_ms = [1000 * used / max(1, stats.judgments) for used in cpu]


async def measured(server: subprocess.Popen, clients) -> Phase:
    stats = Stats()
    before, start = cpu_seconds(server), time.perf_counter()
    await asyncio.gather(*clients(stats))
    seconds, after = time.perf_counter() - start, cpu_seconds(server)
    return Phase(stats, seconds, [b - a for a, b in zip(before, after, strict=True)])


def floor_clients(
    n: int, requests: int, think_s: float = 0.0, arrival_s: float = 0.0
) -> Callable[[Stats], list]:
    def clients(stats: Stats) -> list:
        arrive = [random.uniform(0, arrival_s) for _ in range(n)]
        return [floor_client(requests, stats, think_s, t) for t in arrive]

    return clients


async def run(
    server: subprocess.Popen, n: int, think_s: float, arrival_s: float, floor_requests: int
) -> tuple[Phase, Phase, Phase]:
    """The floor, the participants, the floor again (this machine's speed drifts between
    phases; the ratio uses the mean of the two floor runs). Each client starts at a
    random moment of arrival_s."""

    def participants(stats: Stats) -> list:
        return [participant(stats, think_s, random.uniform(0, arrival_s)) for _ in range(n)]

    floor = floor_clients(n, floor_requests, think_s, arrival_s)
    before = await measured(server, floor)
    platform = await measured(server, participants)
    after = await measured(server, floor)
    return platform, before, after


async def run_trials_only(server: subprocess.Popen, n: int) -> tuple[Phase, Phase, Phase]:
    """Like run, saturated, but only the trials are measured: every participant first
    enters, consents and passes the quiz (unmeasured), and sends feedback after.
    Set against the whole-session figure, it shows what the session's pages cost."""
    setup = Stats()
    async with AsyncExitStack() as stack:
        webs = [await stack.enter_async_context(new_client()) for _ in range(n)]
        bodies = await asyncio.gather(*(recorded(setup, enter(web, setup)) for web in webs))
        entered = [(web, body) for web, body in zip(webs, bodies, strict=True) if body]

        def participants(stats: Stats) -> list:
            return [recorded(stats, answer_trials(web, stats, body, 0.0)) for web, body in entered]

        floor = floor_clients(n, TRIALS)
        before = await measured(server, floor)
        platform = await measured(server, participants)
        after = await measured(server, floor)
        await asyncio.gather(*(recorded(setup, leave(web, setup)) for web, _ in entered))
    platform.stats.errors += setup.errors  # entering and leaving must not fail either
    return platform, before, after


def without_gc_pauses(phase: Coroutine) -> tuple:
    """Run a phase with the generator's cycle collector off: one process plays every
    participant, so each of its pauses (tens of ms) would be added to every request in
    flight, which no participant's own browser would do."""
    gc.collect()
    gc.disable()
    try:
        return asyncio.run(phase)
    finally:
        gc.enable()


def report(
    n: int,
    platform: Phase,
    before: Phase,
    after: Phase,
    saturated: bool,
    what: str = "whole sessions",
) -> None:
    stats = platform.stats
    floor_rate = (before.rate + after.rate) / 2
    floor_ms = before.stats.save_ms + after.stats.save_ms
    floor_errors = len(before.stats.errors) + len(after.stats.errors)
    first = f" (first: {stats.errors[0]})" if stats.errors else ""
    print(
        f"  {n} participants, {what}: {stats.judgments} judgments in "
        f"{platform.seconds:.1f} s, errors {len(stats.errors)}{first}"
    )
    print(
        f"    judgments/s {platform.rate:7.1f}   save (+ next trial) p50 "
        f"{pct(stats.save_ms, 0.5):6.1f} ms  p99 {pct(stats.save_ms, 0.99):6.1f} ms   "
        f"first trial (consent + quiz sent to trial page) p50 {pct(stats.next_ms, 0.5):6.1f} ms  "
        f"p99 {pct(stats.next_ms, 0.99):6.1f} ms"
    )
    print(
        f"    floor (one-row view): {floor_rate:7.1f} writes/s (before {before.rate:.1f}, "
        f"after {after.rate:.1f})  p50 {pct(floor_ms, 0.5):6.1f} ms  "
        f"p99 {pct(floor_ms, 0.99):6.1f} ms  errors {floor_errors}"
    )
    if not saturated:  # the pace sets the throughput, and idle time the CPU
        return
    split = "gunicorn {:.2f}, PostgreSQL {:.2f}, load generator {:.2f}"
    print(f"    CPU ms per judgment: {split.format(*platform.cpu_ms)}")
    floor_cpu = [(a + b) / 2 for a, b in zip(before.cpu_ms, after.cpu_ms, strict=True)]
    print(f"    CPU ms per floor write: {split.format(*floor_cpu)}")
    print(f"    throughput ratio platform / floor: {platform.rate / floor_rate:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--participants", type=int, nargs="*", default=[50, 200])
    parser.add_argument("--trials-only", type=int, nargs="*", default=[200])
    parser.add_argument("--paced", type=int, nargs="*", default=[200])
    parser.add_argument("--think-ms", type=float, default=5000.0, help="paced phase")
    parser.add_argument("--arrival-s", type=float, default=60.0, help="paced phase")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument(
        "--adaptive", action="store_true", help="an adaptive study (services.adaptive)"
    )
    args = parser.parse_args()
    prepare(max(args.participants + args.paced), args.adaptive)
    server = start_server(args.workers, args.threads)
    try:
        print(
            f"gunicorn gthread {args.workers} workers x {args.threads} threads, "
            f"PostgreSQL, {os.cpu_count()} cores (the load generator runs on them too)"
            + (", adaptive study" if args.adaptive else "")
        )
        # Unmeasured: every worker imports its lazy modules, opens its database
        # connection and loads the study before the first measured phase.
        without_gc_pauses(run(server, 32, 0.0, 0.0, TRIALS))
        if args.participants:
            print("\nAs fast as the server allows:")
        for n in args.participants:
            # floor clients write as many rows as participants give answers
            report(n, *without_gc_pauses(run(server, n, 0.0, 0.0, TRIALS)), saturated=True)
        for n in args.trials_only:
            print("\nTrials only, as fast as the server allows (sessions started unmeasured):")
            phases = without_gc_pauses(run_trials_only(server, n))
            report(n, *phases, saturated=True, what="trials only")
        for n in args.paced:
            print(
                f"\nAt a participant's pace: arrivals over {args.arrival_s:.0f} s, "
                f"{args.think_ms / 1000:.1f} s (0.5x-1.5x) before each answer:"
            )
            # the floor at the same pace, before and after; 4 rows per client each
            # time keep the run short
            phases = without_gc_pauses(run(server, n, args.think_ms / 1000, args.arrival_s, 4))
            report(n, *phases, saturated=False)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
