"""The aggregates computed with GROUP BY in PostgreSQL equal their definition, the Python
pass over every judgment (reports.*_in_python), to 1e-9, on generated data with repeats,
missing confidences, excluded participants and both pair orders (H-Mix's own data:
tests/test_hmix.py)."""

import math
import random
import uuid

import pytest
from django.db import connection

from elicitation import reports
from elicitation.models import Judgment, Participant, Session, Study

PAIRS = ["Cat", "Dog", "Frog", "Ship"]


def assert_same(ours, reference, path="result"):
    """Equal structure, key order and strings; floats equal to 1e-9 (NaN with NaN)."""
    if isinstance(reference, dict):
        assert list(ours) == list(reference), path
        for key in reference:
            assert_same(ours[key], reference[key], f"{path}/{key}")
    elif isinstance(reference, list | tuple):
        assert len(ours) == len(reference), path
        for i, (a, b) in enumerate(zip(ours, reference, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(reference, float):
        assert isinstance(ours, float), (path, ours, reference)
        assert (math.isnan(ours) and math.isnan(reference)) or abs(ours - reference) <= 1e-9, (
            path,
            ours,
            reference,
        )
    else:
        assert ours == reference, (path, ours, reference)


def fill(study: Study, sessions: int, per_session: int, seed: int) -> None:
    """Sessions of random judgments: grid lams or perceived lams, a quarter of the
    confidences missing in one session, repeats of earlier trials, one session excluded."""
    rng = random.Random(seed)
    condition = study.conditions.first()
    pairs = list(study.stimulus_set.pairs.all())
    stimuli = [s for p in pairs for s in p.stimuli.all()]
    grid = study.interface in ("construct", "select_shuffled")
    participants = Participant.objects.bulk_create(Participant() for _ in range(sessions))
    made = Session.objects.bulk_create(
        Session(
            study=study,
            participant=p,
            condition=condition,
            trial_order=[],
            state="complete",
            excluded=i == 0,
            quiz_attempts=i % 3,
        )
        for i, p in enumerate(participants)
    )
    judgments = []
    for s_index, session in enumerate(made):
        answered = []
        for trial in range(per_session):
            repeat = trial >= per_session - 2 and bool(answered)
            if repeat:
                pair, stimulus = rng.choice(answered)
            else:
                stimulus = None if grid else rng.choice(stimuli)
                pair = rng.choice(pairs) if grid else stimulus.pair
                answered.append((pair, stimulus))
            lam = rng.randrange(11) / 10 if grid else rng.random()
            confidence = None if s_index == 1 and trial % 4 == 0 else rng.random()
            judgments.append(
                Judgment(
                    session=session,
                    study=study,
                    trial_index=trial,
                    interface=study.interface,
                    pair=pair,
                    stimulus=stimulus,
                    is_repeat=repeat,
                    response={},
                    lam=lam,
                    confidence=confidence,
                    rt_ms=rng.choice([150.0, 900.0, 2000.0 + rng.random()]),
                    idempotency_key=uuid.uuid4(),
                )
            )
    Judgment.objects.bulk_create(judgments)


def compare_all(study: Study) -> None:
    for include in (False, True):
        for name in (
            "stimulus_aggregates",
            "confidence_by_true_lam",
            "perceived_by_true_lam",
            "class_pair_midpoint_table",
        ):
            ours = getattr(reports, name)(study, include)
            reference = getattr(reports, f"{name}_in_python")(study, include)
            assert_same(ours, reference, f"{study.slug}.{name}({include})")
        # The summary (no lists) from the shared per-stimulus GROUP BY.
        reference = reports.stimulus_aggregates_in_python(study, include)
        assert_same(
            reports.stimulus_aggregates(study, include, values=False),
            {name: reports._summary(entry) for name, entry in reference.items()},
            f"{study.slug}.stimulus_aggregates({include}, values=False)",
        )
        pooled = reports.confidence_by_pooled_lam(study, include)
        expected = {}
        for lam, confidence in reports.confidence_per_stimulus_in_python(study, include):
            expected.setdefault(round(min(lam, 1 - lam), 6), []).append(confidence)
        assert [row["x"] for row in pooled] == sorted(expected)
        for row in pooled:
            values = expected[row["x"]]
            mean = sum(values) / len(values)
            assert row["n"] == len(values) and abs(row["mean"] - mean) <= 1e-9
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            assert abs(row["std"] - std) <= 1e-9
        studies = Study.objects.filter(pk=study.pk)
        assert_same(
            reports.midpoint_distribution(studies, include),
            reports.midpoint_distribution_in_python(studies, include),
        )
    thresholds = reports.QualityThresholds(min_median_rt_ms=1000, max_repeat_disagreement=0.1)

    def rows(report):
        return [{**row, "session": row["session"].pk} for row in report]

    assert_same(
        rows(reports.quality_report(study, thresholds)),
        rows(reports.quality_report_in_python(study, thresholds)),
    )


def test_the_database_computes_the_aggregates(db):
    assert connection.vendor == "postgresql" and reports._in_database()


@pytest.mark.parametrize("interface", ["infer", "construct", "select_shuffled"])
def test_sql_aggregates_equal_the_python_definition(make_study, interface):
    study = make_study(interface, n_pairs=6)
    fill(study, sessions=12, per_session=25, seed=len(interface))
    assert Judgment.objects.filter(study=study).count() == 300
    compare_all(study)


def test_sql_aggregates_of_a_study_without_judgments(make_study):
    compare_all(make_study("infer", n_pairs=2))


def test_paper_view_pools_symmetric_lams(make_study, role_user, client):
    study = make_study("infer", n_pairs=6)
    fill(study, sessions=8, per_session=20, seed=3)
    per_stimulus = reports.confidence_per_stimulus_in_python(study)
    expected = {}
    for lam, confidence in per_stimulus:
        expected.setdefault(round(min(lam, 1 - lam), 6), []).append(confidence)
    client.force_login(role_user("a", "Analyst"))
    response = client.get(f"/api/studies/{study.slug}/aggregates/paper/")
    assert response.status_code == 200
    rows = response.json()["confidence_by_pooled_lam"]
    assert [r["x"] for r in rows] == sorted(expected) == [0.1, 0.25, 0.5]
    assert [r["lams"] for r in rows] == [[0.1, 0.9], [0.25, 0.75], [0.5]]
    for row in rows:
        values = expected[row["x"]]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))  # population
        assert row["n"] == len(values)
        assert row["mean"] == pytest.approx(mean, abs=1e-12)
        assert row["std"] == pytest.approx(std, abs=1e-12)
    assert response.json()["midpoints"] == {}
    bad = client.get(f"/api/studies/{study.slug}/aggregates/paper/", {"include_excluded": "x"})
    assert bad.status_code == 400


def test_dashboard_pages_the_quality_table(make_study, role_user, client, monkeypatch):
    from django.urls import reverse

    from elicitation import dashboard

    monkeypatch.setattr(dashboard, "QUALITY_PAGE_SIZE", 5)
    study = make_study("infer", n_pairs=6)
    fill(study, sessions=12, per_session=10, seed=5)
    client.force_login(role_user("r", "Researcher"))
    url = reverse("admin:elicitation_study_dashboard", args=[study.pk])
    everyone = reports.quality_report_in_python(study, reports.QualityThresholds())
    seen = []
    for page in (1, 2, 3):
        response = client.get(url, {"quality_page": page, "min_median_rt_ms": "1000"})
        assert response.status_code == 200
        rows = response.context["quality"]
        assert len(rows) == (5 if page < 3 else 2)
        seen += [row["session"].pk for row in rows]
        assert all(row["answers"] == 10 for row in rows)
        assert "quality_page=" in response.content.decode()
        # The page's rows equal the Python definition's rows for the same sessions.
        page_sessions = reports.quality_sessions(study)[(page - 1) * 5 : page * 5]
        thresholds = reports.QualityThresholds(min_median_rt_ms=1000)
        assert_same(
            [{**r, "session": r["session"].pk} for r in rows],
            [
                {**r, "session": r["session"].pk}
                for r in reports.quality_report_in_python(study, thresholds, page_sessions)
            ],
        )
    assert seen == [row["session"].pk for row in everyone]


def test_one_per_stimulus_group_by_feeds_every_per_stimulus_figure(make_study):
    """Inside shared_stimulus_groups (the dashboard) the perceived and confidence charts,
    the paper's pooled confidence and the summary share one scan of the judgments; the
    numbers are the same as read one by one."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    study = make_study("infer", n_pairs=6)
    fill(study, sessions=6, per_session=20, seed=7)
    alone = [
        reports.perceived_by_true_lam(study),
        reports.confidence_by_true_lam(study),
        reports.confidence_by_pooled_lam(study),
        reports.stimulus_aggregates(study, values=False),
    ]
    with CaptureQueriesContext(connection) as queries, reports.shared_stimulus_groups():
        shared = [
            reports.perceived_by_true_lam(study),
            reports.confidence_by_true_lam(study),
            reports.confidence_by_pooled_lam(study),
            reports.stimulus_aggregates(study, values=False),
        ]
        reports.perceived_by_true_lam(study, include_excluded=True)
    assert shared == alone
    scans = [q["sql"] for q in queries.captured_queries if "elicitation_judgment" in q["sql"]]
    assert len(scans) == 2  # one per exclusion rule
    # Outside the block every call reads afresh: a new judgment shows.
    with CaptureQueriesContext(connection) as queries:
        reports.perceived_by_true_lam(study)
        reports.confidence_by_true_lam(study)
    assert sum("elicitation_judgment" in q["sql"] for q in queries.captured_queries) == 2


def test_progress_in_sql_equals_the_python_definition(make_study):
    """Started, completed, abandoned, in progress and the median minutes per condition,
    counted sessions only, as the Python pass computes them."""
    from datetime import timedelta

    from django.utils import timezone

    study = make_study("infer", n_pairs=2, conditions=3)
    conditions = list(study.conditions.order_by("pk"))
    now = timezone.now()
    participants = Participant.objects.bulk_create(Participant() for _ in range(14))
    specs = [
        # (condition, state, kind, minutes idle, minutes to complete, withdrawn)
        (0, "complete", "live", 0, 10, False),
        (0, "complete", "live", 0, 13, False),
        (0, "complete", "live", 0, 20.25, False),
        (0, "complete", "live", 0, None, False),  # no completion time stored
        (0, "trials", "live", 5, None, False),  # in progress
        (0, "trials", "live", 600, None, False),  # abandoned
        (1, "complete", "live", 0, 7, False),
        (1, "complete", "live", 0, 8, False),
        (1, "trials", "live", 600, None, True),  # withdrawn: not counted
        (1, "complete", "pilot", 0, 1, False),  # pilot: not counted
        (1, "complete", "simulated", 0, 1, False),
        (1, "trials", "preview", 0, None, False),
    ]
    for participant, (c, state, kind, idle, minutes, withdrawn) in zip(
        participants, specs, strict=False
    ):
        session = Session.objects.create(
            study=study, participant=participant, condition=conditions[c], trial_order=[],
            state=state, kind=kind,
        )  # fmt: skip
        started = now - timedelta(hours=2)
        Session.objects.filter(pk=session.pk).update(
            started_at=started,
            last_seen_at=now - timedelta(minutes=idle),
            completed_at=None if minutes is None else started + timedelta(minutes=minutes),
            withdrawn_at=now if withdrawn else None,
        )
    ours = reports.study_progress(study)
    assert_same(ours, reports.study_progress_in_python(study))
    assert [(r["started"], r["completed"], r["in_progress"], r["abandoned"]) for r in ours] == [
        (6, 4, 1, 1),
        (2, 2, 0, 0),
        (0, 0, 0, 0),
    ]
    assert [r["median_minutes"] for r in ours] == [13.0, 7.5, None]


def test_per_stimulus_endpoint_summary_by_default_values_on_request(
    make_study, role_user, client
):
    study = make_study("infer", n_pairs=4)
    fill(study, sessions=6, per_session=15, seed=11)
    client.force_login(role_user("a", "Analyst"))
    url = f"/api/studies/{study.slug}/aggregates/stimuli/"
    summary = client.get(url).json()
    full = client.get(url, {"values": "true"}).json()
    assert list(summary) == list(full) and summary
    for name, entry in full.items():
        assert "Predicted Mixing Factor" not in summary[name]
        assert summary[name]["Judgments"] == len(entry["Predicted Mixing Factor"])
        assert summary[name]["Std Dev"] == pytest.approx(entry["Std Dev"], abs=1e-9)
    bad = client.get(url, {"values": "maybe"})
    assert bad.status_code == 400 and "values" in bad.json()
