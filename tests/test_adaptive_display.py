"""What researchers and participants see of adaptive studies and their pilots (issue 18):
the trial count an adaptive session shows is a maximum, not a promise; the dashboards'
counts have their plurals (English and German); the dashboard's curves and reliability
can show the pilot or simulated sessions on their own, labelled, never mixed into the
live figures."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse
from django.utils import translation

from elicitation.models import Judgment, Session
from elicitation.services import RecruiterIds, start_session
from tests.test_flow import to_trials
from tests.test_i18n import consented
from tests.test_reliability_and_simulation import _answer_infer

# 2 pairs shown at most twice each, and one repeat: at most 5 trials.
ADAPTIVE = {
    "design": "adaptive",
    "conditions": 1,
    "n_pairs": 2,
    "repeat_trials": 1,
    "adaptive_max_per_pair": 2,
    "adaptive_repeat_spacing": 2,
}


def progress_text(html: str) -> str:
    return re.search(r'id="progress-text"[^>]*>([^<]*)<', html).group(1)


def progress_bar(html: str) -> tuple[str, str]:
    bar = re.search(r'<progress class="progress"[^>]*>', html).group(0)
    return re.search(r'max="(\d+)"', bar).group(1), re.search(r'value="(\d+)"', bar).group(1)


# --- the participant's trial count ------------------------------------------------------


@pytest.mark.django_db
def test_an_adaptive_session_shows_its_trial_count_as_a_maximum(make_study, client):
    study = make_study("afc", **ADAPTIVE)
    page = consented(client, study, {"q0": "1"}).content.decode()
    assert progress_text(page) == "Trial 1 of at most 5"
    # The script writes the later counts: the page tells it the total is a maximum.
    assert "data-total-is-maximum" in page


@pytest.mark.django_db
def test_a_fixed_session_shows_its_exact_trial_count(make_study, client):
    study = make_study("afc", n_pairs=2, conditions=1)
    page = consented(client, study, {"q0": "1"}).content.decode()
    total = Session.objects.get().trial_count
    assert progress_text(page) == f"Trial 1 of {total}"
    assert "at most" not in page and "data-total-is-maximum" not in page


@pytest.mark.django_db
def test_an_adaptive_session_in_german_says_hoechstens(make_study, client):
    study = make_study("afc", slug="studie", language="de", **ADAPTIVE)
    page = consented(client, study, {"q0": "1"}).content.decode()
    assert progress_text(page) == "Durchgang 1 von höchstens 5"


@pytest.mark.django_db
def test_an_adaptive_session_that_ended_early_shows_a_full_bar(make_study, client):
    study = make_study("afc", **ADAPTIVE)
    consented(client, study, {"q0": "1"})
    session = Session.objects.get()
    # Nothing more to learn after the first trial: the session moved on to its feedback.
    Session.objects.filter(pk=session.pk).update(position=1, state=Session.State.FEEDBACK)
    page = client.get(f"/s/{study.slug}/").content.decode()
    assert 'id="feedback-submit"' in page and 'id="trial-app"' not in page
    assert progress_bar(page) == ("5", "5")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_script_keeps_saying_at_most_in_the_browser(page, live_server, make_study):
    from tests.browser import enter_study
    from tests.test_browser_edges import shown

    study = make_study("afc", slug="studie", language="de", **ADAPTIVE)
    enter_study(page, live_server.url, study.slug, "adaptive-de")
    shown(page, 0)
    assert page.inner_text("#progress-text") == "Durchgang 1 von höchstens 5"
    page.keyboard.press("j")
    shown(page, 1)  # written by the script from the save's reply
    assert page.inner_text("#progress-text") == "Durchgang 2 von höchstens 5"


# --- plurals on the researcher pages ----------------------------------------------------


def _estimate_text(html: str) -> str:
    return re.sub(r"\s+", " ", html[html.index('id="participants-estimate"') :].split("</p>")[0])


def test_the_estimate_counts_one_participant_in_the_singular(make_study, staff):
    study = make_study("infer", n_pairs=2, repeat_trials=0, conditions=1, feedback_questions=[])
    call_command("simulate_participants", study=study.slug, n=1, seed=2)
    url = reverse("admin:elicitation_study_dashboard", args=[study.pk])
    html = staff.get(url).content.decode()
    assert "extrapolated from 1 simulated participant:" in _estimate_text(html)
    # One judgment left: "1 judgment".
    simulated = Judgment.objects.filter(study=study)
    simulated.exclude(pk=simulated.order_by("pk").first().pk).delete()
    html = staff.get(url).content.decode()
    assert "1, 1 complete, 1 judgment.</p>" in html
    with translation.override("de"):
        html = staff.get(url).content.decode()
    assert "1 Person (simuliert):" in _estimate_text(html) and "1 Urteil.</p>" in html


def test_the_estimate_counts_several_participants_in_the_plural(make_study, staff):
    study = make_study("infer", n_pairs=2, repeat_trials=0, conditions=1, feedback_questions=[])
    for name in ("a", "b"):
        _answer_infer(to_trials(start_session(study, RecruiterIds(name))), lambda lam, s: lam)
    url = reverse("admin:elicitation_study_dashboard", args=[study.pk])
    assert "extrapolated from 2 live participants:" in _estimate_text(
        staff.get(url).content.decode()
    )
    with translation.override("de"):
        assert "2 Personen (live):" in _estimate_text(staff.get(url).content.decode())


def test_deleting_one_pilot_session_is_said_in_the_singular(make_study, staff):
    study = make_study("construct", status="pilot")
    start_session(study, RecruiterIds("pilot-one"))
    url = reverse("admin:elicitation_study_dashboard", args=[study.pk])
    html = staff.get(url).content.decode()
    assert 'value="Delete the pilot or preview session and its answers"' in html
    start_session(study, RecruiterIds("pilot-two"))
    assert 'value="Delete the 2 pilot and preview sessions and their answers"' in (
        staff.get(url).content.decode()
    )
    Session.objects.filter(participant__recruiter_pid="pilot-two").delete()
    delete = reverse("admin:elicitation_study_delete_non_live", args=[study.pk])
    done = staff.post(delete, follow=True).content.decode()
    assert "1 pilot and preview session deleted, with its answers." in done


def test_the_other_researcher_pages_count_in_the_singular_and_plural():
    study = SimpleNamespace(pk=1)
    context = {"study": study, "link": True, "token_source": "environment", "rows": []}
    for unmatched, said in (
        ([1], "1 live session here matches no Prolific submission."),
        ([1, 2], "2 live sessions here match no Prolific submission."),
    ):
        html = render_to_string("recruitment/dashboard.html", {**context, "unmatched": unmatched})
        assert f'id="unmatched">{said}</p>' in html
    difference = SimpleNamespace(
        heading="accuracy",
        first="a",
        second="b",
        mean=0.1,
        ci_low=0.0,
        ci_high=0.2,
        n=3,
        p_value=0.5,
        exceeds_noise=True,
    )
    for differences, said in (
        ([difference], "The one paired comparison"),
        ([difference] * 3, "All 3 paired comparisons"),
    ):
        html = render_to_string("admin/training/compare.html", {"differences": differences})
        assert f"<summary>{said}</summary>" in html


# --- the curves of pilot and simulated sessions, apart ---------------------------------


def _people(page) -> tuple[int, int]:
    """Participants in the curves and raters in the agreement the page shows."""
    return page.context["estimate"]["people"], page.context["agreement"]["raters"]


def test_the_dashboard_shows_pilot_and_simulated_curves_apart_from_live_ones(make_study, staff):
    study = make_study(
        "infer", n_pairs=2, repeat_trials=1, conditions=1, feedback_questions=[], status="pilot"
    )
    for name in ("pilot-a", "pilot-b"):
        _answer_infer(to_trials(start_session(study, RecruiterIds(name))), lambda lam, s: lam)
    study.status = "live"
    study.save()
    call_command("simulate_participants", study=study.slug, n=3, seed=4)
    for name in ("live-a", "live-b", "live-c", "live-d"):
        _answer_infer(to_trials(start_session(study, RecruiterIds(name))), lambda lam, s: lam)
    assert Session.objects.filter(study=study, kind="pilot").count() == 2
    url = reverse("admin:elicitation_study_dashboard", args=[study.pk])

    live = staff.get(url)
    assert live.context["curves_kind"] == "live"
    assert _people(live) == (4, 4)  # the live participants alone
    html = live.content.decode()
    assert 'id="curves-not-research-data"' not in html
    assert "<strong>live</strong>" in html and 'curves_kind=simulated#curves">simulated</a>' in html

    simulated = staff.get(url, {"curves_kind": "simulated"})
    assert _people(simulated) == (3, 3)
    html = simulated.content.decode()
    assert "Psychometric curves: simulated sessions only" in html
    assert "Who to trust: simulated sessions only" in html
    assert 'id="curves-not-research-data"' in html and "<strong>simulated</strong>" in html
    assert "extrapolated from 3 simulated participants:" in _estimate_text(html)
    curves = html[html.index('id="pair-curves"') : html.index('id="participants-estimate"')]
    assert "<svg" in curves

    pilot = staff.get(url, {"curves_kind": "pilot"})
    assert _people(pilot) == (2, 2)
    assert "extrapolated from 2 pilot participants:" in _estimate_text(pilot.content.decode())

    # The rest of the page stays live: progress, plots and the per-class-pair table.
    assert pilot.context["totals"] == live.context["totals"]
    assert pilot.context["class_pairs"] == live.context["class_pairs"]


def test_the_curves_switch_keeps_the_query_and_refuses_other_kinds(make_study, staff):
    study = make_study("infer", n_pairs=2, repeat_trials=0, conditions=1, feedback_questions=[])
    url = reverse("admin:elicitation_study_dashboard", args=[study.pk])
    html = staff.get(url, {"weighted": "1", "curves_page": "2"}).content.decode()
    # Another kind starts at its first page, weighted as before.
    assert 'href="?weighted=1&amp;curves_kind=pilot#curves"' in html
    for refused in ("preview", "nonsense"):
        answer = staff.get(url, {"curves_kind": refused})
        assert answer.status_code == 400 and b"curves_kind must be one of" in answer.content
    assert staff.get(url, {"curves_kind": "Simulated"}).status_code == 200


def test_simulated_curves_need_the_dashboard_permission(make_study, django_user_model):
    study = make_study("infer", n_pairs=2, repeat_trials=0, conditions=1, feedback_questions=[])
    call_command("simulate_participants", study=study.slug, n=1, seed=1)
    nobody = Client()
    nobody.force_login(django_user_model.objects.create_user("s", password="pw", is_staff=True))
    url = reverse("admin:elicitation_study_dashboard", args=[study.pk])
    answer = nobody.get(url, {"curves_kind": "simulated"})
    assert answer.status_code in (302, 403) and b"<svg" not in answer.content
