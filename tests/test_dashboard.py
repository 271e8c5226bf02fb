"""The admin dashboard: progress, plots, quality flags, exclusion, closing."""

from django.urls import reverse

from elicitation.models import Session, Study
from elicitation.services import RecruiterIds, record_judgment, start_session
from tests.test_flow import construct_answer, to_trials


def answer_all(session, rt_ms=2000.0):
    while True:
        session.refresh_from_db()
        if session.position >= session.trial_count:
            return session
        record_judgment(session.token, construct_answer(session, rt_ms=rt_ms))


def test_dashboard_shows_progress_plots_and_flags(make_study, staff):
    study = make_study("construct", ask_confidence=True, feedback_questions=[])
    careful = answer_all(to_trials(start_session(study, RecruiterIds("careful"))))
    hasty = answer_all(to_trials(start_session(study, RecruiterIds("hasty"))), rt_ms=200.0)
    start_session(study, RecruiterIds("just-started"))
    page = staff.get(reverse("admin:elicitation_study_dashboard", args=[study.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html and "Chosen midpoints" in html
    rows = {r["participant"]: r for r in page.context["quality"]}
    assert rows[hasty.participant.public_id]["flags"] == ["median response 200 ms"]
    assert rows[careful.participant.public_id]["flags"] == []
    totals = page.context["totals"]
    assert (totals["started"], totals["completed"], totals["in_progress"]) == (3, 2, 1)
    # Thresholds come from the page's form.
    page = staff.get(
        reverse("admin:elicitation_study_dashboard", args=[study.pk]), {"min_median_rt_ms": "100"}
    )
    assert all(not r["flags"] for r in page.context["quality"])
    overview = staff.get(reverse("admin:elicitation_study_overview"))
    assert overview.status_code == 200 and study.title.encode() in overview.content


def test_exclusion_removes_judgments_from_aggregates_and_exports(make_study, staff):
    study = make_study("construct", ask_confidence=True, feedback_questions=[])
    one = answer_all(to_trials(start_session(study, RecruiterIds("one"))))
    answer_all(to_trials(start_session(study, RecruiterIds("two"))))
    url = reverse("admin:elicitation_session_exclusion", args=[study.pk, one.pk])
    assert staff.post(url).status_code == 302
    assert Session.objects.get(pk=one.pk).excluded
    midpoints = staff.get("/api/aggregates/midpoints/", {"study": study.slug}).json()
    assert midpoints["construct"]["n"] == one.trial_count
    export = b"".join(staff.get(f"/api/studies/{study.slug}/export/").streaming_content)
    assert export.count(b"\n") == 1 + one.trial_count
    everything = staff.get(f"/api/studies/{study.slug}/export/", {"include_excluded": "1"})
    assert b"".join(everything.streaming_content).count(b"\n") == 1 + 2 * one.trial_count
    staff.post(url)
    assert not Session.objects.get(pk=one.pk).excluded


def test_close_study_from_dashboard(make_study, staff, client):
    study = make_study("construct")
    staff.post(reverse("admin:elicitation_study_close", args=[study.pk]))
    assert Study.objects.get(pk=study.pk).status == "closed"


def test_admin_list_actions_close_and_reopen_a_study_participants_already_saw(
    make_study, django_user_model
):
    from django.test import Client

    study = make_study("construct")
    staff = Client()
    staff.force_login(django_user_model.objects.create_superuser("admin", password="pw"))
    participant = Client()
    assert participant.get(reverse("elicitation:study", args=[study.slug])).status_code == 200
    changelist = reverse("admin:elicitation_study_changelist")
    staff.post(changelist, {"action": "close_study", "_selected_action": [study.pk]})
    closed = participant.get(reverse("elicitation:study", args=[study.slug]))
    assert closed.status_code == 403 and b"closed" in closed.content
    staff.post(changelist, {"action": "open_study", "_selected_action": [study.pk]})
    assert participant.get(reverse("elicitation:study", args=[study.slug])).status_code == 200


def test_dashboard_needs_staff(make_study, client, django_user_model):
    study = make_study("infer", n_pairs=2)
    url = reverse("admin:elicitation_study_dashboard", args=[study.pk])
    assert client.get(url).status_code == 302
    client.force_login(django_user_model.objects.create_user("p", password="pw"))
    assert client.get(url).status_code == 302
    assert client.post(reverse("admin:elicitation_study_close", args=[study.pk])).status_code == 302
    assert Study.objects.get(pk=study.pk).status == "live"


def test_infer_dashboard_plots(make_study, staff):
    import uuid

    study = make_study("infer", n_pairs=2)
    session = to_trials(start_session(study, RecruiterIds()))
    record_judgment(
        session.token,
        {
            "session": session.reference,
            "trial_index": 0,
            "idempotency_key": str(uuid.uuid4()),
            "rt_ms": 900,
            "response": {
                "slider": 40,
                "confidence": 70,
                "slider_touched": True,
                "confidence_touched": True,
            },
        },
    )
    page = staff.get(reverse("admin:elicitation_study_dashboard", args=[study.pk]))
    html = page.content.decode()
    assert "Perceived vs true lam" in html and "Confidence vs true lam" in html


def test_charts_are_plain_svg_without_styles_or_scripts():
    """The dashboard's charts are SVG written from the aggregated numbers: well-formed,
    styled by presentation attributes only (no style attribute or block, no script),
    with their text escaped."""
    import xml.etree.ElementTree as ET

    from elicitation import plots

    lams = [i / 20 for i in range(21)]
    charts = [
        plots.mean_std_plot(
            [{"x": 0.1, "mean": 0.2, "std": 0.05}, {"x": 0.9, "mean": 0.8, "std": None}],
            "perceived lam", "Perceived <vs> true & lam", diagonal=True,
        ),
        plots.midpoint_histogram([{"lam": 0.5, "count": 3}, {"lam": 0.6, "count": 0}], "M"),
        plots.soft_label_bars(
            [{"true_lam": 0.3, "class1": 0.3, "class2": 0.6, "other": 0.1}], "Soft"
        ),
        plots.soft_label_entropy([{"true_lam": 0.3, "entropy_bits": 1.2}], "Entropy"),
        plots.psychometric_points(
            [{"class_a": "cat", "class_b": "<dog>", "k": 5.0, "pse": 0.4,
              "points": [{"lam": 0.2, "share": 0.1}, {"lam": 0.8, "share": 0.9}]},
             {"class_a": "a", "class_b": "b", "k": None, "pse": None, "points": []}],
            "2AFC",
        ),  # fmt: skip
        plots.pair_curves(
            [{"pair": "cat / dog", "n": 3, "midpoint": 0.5, "midpoint_sd": 0.1, "lams": lams,
              "mean": lams, "lower": [0.0] * 21, "upper": [1.0] * 21}],
            "Curves",
        ),  # fmt: skip
    ]
    for chart in charts:
        root = ET.fromstring(chart)  # well-formed
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert "style" not in chart and "<script" not in chart
    assert "Perceived &lt;vs&gt; true &amp; lam" in charts[0]
    assert "&lt;dog&gt;" in charts[4] and charts[4].count("<polyline") == 1  # one fit
    assert charts[5].count("<polygon") == 1  # the credible band
