"""Faults: double submits, Redis down, PostgreSQL restarted mid-session."""

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from django.db import connection, connections
from django.test import Client

from elicitation.models import Judgment, Session
from hillmix_site.celery import app as celery_app
from tests.browser import enter_study, finish_feedback
from tests.test_flow import construct_answer, to_trials


@pytest.mark.django_db(transaction=True)
def test_simultaneous_double_submit_stores_one_row(make_study):
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writes need PostgreSQL (set DATABASE_URL)")
    from elicitation.services import RecruiterIds, start_session

    study = make_study("construct", ask_confidence=True)
    session = to_trials(start_session(study, RecruiterIds("double")))
    browser = Client()
    # The browser holds the session's secret, as the one that started it does.
    browser.cookies[f"hillmix_{study.slug}"] = session.token
    payload = json.dumps(construct_answer(session))
    barrier = threading.Barrier(8)
    statuses = []

    def submit():
        barrier.wait()
        response = browser.post(
            f"/s/{study.slug}/judgments/", payload, content_type="application/json"
        )
        statuses.append(response.status_code)
        connections.close_all()

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 7 + [201]
    assert Judgment.objects.count() == 1
    assert Session.objects.get().position == 1


def test_redis_down_does_not_stop_judgments(make_study):
    """Nothing on the participant path needs the broker: point it at a dead port."""
    study = make_study("construct", ask_confidence=True, feedback_questions=[], quiz=[])
    previous = celery_app.conf.broker_url, celery_app.conf.task_always_eager
    celery_app.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens there
    celery_app.conf.task_always_eager = False
    try:
        browser = Client()
        browser.get(f"/s/{study.slug}/?PROLIFIC_PID=no-redis")
        browser.post(f"/s/{study.slug}/consent/", {"consent_0": "on", "consent_1": "on"})
        browser.post(f"/s/{study.slug}/instructions/")
        session = Session.objects.get()
        for _ in range(session.trial_count):
            session.refresh_from_db()
            response = browser.post(
                f"/s/{study.slug}/judgments/",
                json.dumps(construct_answer(session)),
                content_type="application/json",
            )
            assert response.status_code == 201
        page = browser.get(f"/s/{study.slug}/")
        assert b"DONE-123" in page.content
    finally:
        celery_app.conf.broker_url, celery_app.conf.task_always_eager = previous
    assert Judgment.objects.count() == session.trial_count


def _cluster() -> str | None:
    if (
        os.geteuid() != 0
        or not shutil.which("pg_ctlcluster")
        or not Path("/etc/postgresql").is_dir()
    ):
        return None
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir())
    return versions[-1] if versions else None


def pg_ctl(action: str) -> None:
    subprocess.run(
        [
            "pg_ctlcluster",
            "--skip-systemctl-redirect",
            _cluster(),
            "main",
            action,
            *(["-m", "fast"] if action == "stop" else []),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_postgres_restart_mid_session_loses_and_duplicates_nothing(page, live_server, make_study):
    if connection.vendor != "postgresql" or _cluster() is None:
        pytest.skip("needs the local PostgreSQL cluster and root to restart it")
    study = make_study("select_shuffled", ask_confidence=False, n_pairs=6)
    enter_study(page, live_server.url, study.slug, "restart-person")
    total = Session.objects.get().trial_count
    for i in range(total):
        page.wait_for_selector(f'.trial[data-index="{i}"] .choice')
        page.locator(".choice").nth(i % 11).click()
        if i == 1:
            pg_ctl("stop")
            try:
                page.click("#next")  # the save fails while the database is down...
                page.wait_for_selector("#connection:not([hidden])", timeout=20_000)
                time.sleep(2)
            finally:
                pg_ctl("start")  # ...and the page's retries get it through afterwards
        else:
            page.click("#next")
        page.wait_for_selector(f'.trial[data-index="{i}"]', state="detached", timeout=60_000)
    finish_feedback(page)
    connection.close()  # this thread's connection died with the restart
    session = Session.objects.get()
    judgments = list(Judgment.objects.filter(session=session).order_by("trial_index"))
    assert [j.trial_index for j in judgments] == list(range(total))
    for judgment, spec in zip(judgments, session.trial_order, strict=True):
        assert judgment.lam == spec["order"][judgment.trial_index % 11]
