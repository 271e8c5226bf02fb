"""Balanced assignment under concurrency: 50 participants start at once on PostgreSQL."""

import threading
from collections import Counter

import pytest
from django.db import connection, connections

from elicitation.models import Session
from elicitation.services import RecruiterIds, start_session


@pytest.mark.django_db(transaction=True)
def test_fifty_threads_spread_evenly_over_conditions(make_study):
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL (set DATABASE_URL); SQLite serialises writes")
    study = make_study("construct", n_pairs=6, conditions=3)
    barrier = threading.Barrier(50)
    errors = []

    def participant(i: int) -> None:
        try:
            barrier.wait()
            start_session(study, RecruiterIds(f"PID-{i}"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=participant, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    counts = Counter(Session.objects.values_list("condition_id", flat=True))
    assert sum(counts.values()) == 50
    assert max(counts.values()) - min(counts.values()) <= 1, counts


@pytest.mark.django_db(transaction=True)
def test_a_session_being_assigned_does_not_hold_up_answers(make_study):
    """Assignment locks the study row; a saved answer's foreign key to the study must
    not wait for that lock."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL (set DATABASE_URL)")
    from django.db import transaction

    from elicitation.services import lock_study, record_judgment
    from tests.test_flow import construct_answer, to_trials

    study = make_study("construct", ask_confidence=True)
    session = to_trials(start_session(study, RecruiterIds("answering")))
    locked, release = threading.Event(), threading.Event()

    def assigning() -> None:
        try:
            with transaction.atomic():
                lock_study(study)
                locked.set()
                release.wait(10)
        finally:
            connections.close_all()

    holder = threading.Thread(target=assigning)
    holder.start()
    try:
        assert locked.wait(10)
        with connection.cursor() as cursor:  # fail rather than wait for the lock
            cursor.execute("SET lock_timeout = '2s'")
        assert record_judgment(session.token, construct_answer(session)).created
    finally:
        release.set()
        holder.join()
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
