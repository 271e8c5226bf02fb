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
