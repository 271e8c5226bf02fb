"""Pilot and preview sessions (issue 19 item 1): Prolific's unfilled placeholders and
the study's preview link give each previewer a fresh preview session, a piloting study
gives pilot sessions, and neither is research data (exports, aggregates, balance,
progress, payments' session list) until they are deleted with one action."""

import csv
import io

import pytest
from django.test import Client

from elicitation import reports
from elicitation.models import AuditLog, Judgment, Participant, Session
from elicitation.selectors import least_filled_condition
from elicitation.services import RecruiterIds, is_placeholder, start_session
from hillmix_site.roles import ANALYST, RESEARCHER
from tests.test_flow import to_trials
from tests.test_participant_trust import CONSENT, answer, cookie, join

PLACEHOLDERS = "PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"


def preview_by_placeholders(study) -> Client:
    """A browser that opened the study as Prolific's preview does, and consented."""
    browser = Client()
    browser.get(f"/s/{study.slug}/?{PLACEHOLDERS}")
    assert browser.post(f"/s/{study.slug}/consent/", CONSENT).status_code == 302
    return browser


@pytest.mark.parametrize(
    "value",
    ["{{%PROLIFIC_PID%}}", "{%STUDY_ID%}", "%SESSION_ID%", "%7B%7B%25PROLIFIC_PID%25%7D%7D",
     "{{ %PROLIFIC_PID% }}"],
)
def test_unfilled_placeholders_are_recognised(value):
    assert is_placeholder(value)
    assert RecruiterIds.from_query({"PROLIFIC_PID": value}).preview


@pytest.mark.parametrize("value", ["5f8a1b2c3d4e5f6a7b8c9d0e", "pid-a", "", "a%b"])
def test_real_ids_are_not_placeholders(value):
    assert not is_placeholder(value)
    assert not RecruiterIds.from_query({"PROLIFIC_PID": value}).preview


def test_each_prolific_previewer_gets_a_fresh_session_of_kind_preview(make_study):
    study = make_study("construct", ask_confidence=False)
    first, second = preview_by_placeholders(study), preview_by_placeholders(study)
    assert cookie(first, study) != cookie(second, study)
    sessions = Session.objects.filter(study=study)
    assert sessions.count() == 2
    assert set(sessions.values_list("kind", flat=True)) == {Session.Kind.PREVIEW}
    # No placeholder is stored as anyone's id, and no session is shared.
    assert not Participant.objects.filter(recruiter_pid__contains="%").exists()
    assert set(sessions.values_list("recruiter_study_id", flat=True)) == {""}
    assert answer(first, study).status_code == 201
    assert answer(second, study).status_code == 201
    # Following the preview again in the same browser starts yet another session.
    first.get(f"/s/{study.slug}/?{PLACEHOLDERS}")
    assert cookie(first, study) is None
    first.post(f"/s/{study.slug}/consent/", CONSENT)
    assert Session.objects.filter(study=study, kind=Session.Kind.PREVIEW).count() == 3


def test_the_preview_link_gives_fresh_preview_sessions_and_a_wrong_key_nothing(make_study):
    study = make_study("construct", ask_confidence=False)
    assert Client().get(f"/s/{study.slug}/preview/{'0' * 32}/").status_code == 404
    for _ in range(2):
        browser = Client()
        response = browser.get(f"/s/{study.slug}/preview/{study.preview_key}/")
        assert response.status_code == 302
        assert browser.post(f"/s/{study.slug}/consent/", CONSENT).status_code == 302
    assert list(Session.objects.filter(study=study).values_list("kind", flat=True)) == [
        Session.Kind.PREVIEW
    ] * 2


def test_previews_and_pilots_stay_out_of_exports_aggregates_balance_and_progress(
    make_study, role_user
):
    study = make_study("construct", ask_confidence=False, conditions=2)
    previewer = preview_by_placeholders(study)
    assert answer(previewer, study).status_code == 201
    study.status = "pilot"
    study.save()
    piloter = join(study, "pid-pilot")
    assert answer(piloter, study).status_code == 201
    assert Session.objects.get(participant__recruiter_pid="pid-pilot").kind == "pilot"
    study.status = "live"
    study.save()
    live = join(study, "pid-live")
    assert answer(live, study).status_code == 201
    live_session = Session.objects.get(participant__recruiter_pid="pid-live")
    assert Judgment.objects.filter(study=study).count() == 3

    # Exports (API), the exclusion rule and aggregates: the live participant only.
    analyst = Client()
    analyst.force_login(role_user("ana", ANALYST))
    exported = analyst.get(f"/api/studies/{study.slug}/export/")
    rows = list(csv.DictReader(io.StringIO(b"".join(exported.streaming_content).decode())))
    assert [r["participant"] for r in rows] == [live_session.participant.public_id]
    listed = analyst.get("/api/judgments/").json()["results"]
    assert [j["participant"] for j in listed] == [live_session.participant.public_id]
    assert reports.study_judgments(study, include_excluded=True).count() == 1
    pairs = reports.class_pair_midpoint_table(study, include_excluded=True)
    assert sum(row["n"] for row in pairs) == 1
    # Progress and the session list payments read.
    assert reports.progress_totals(reports.study_progress(study))["started"] == 1
    assert list(reports.quality_sessions(study)) == [live_session]
    assert reports.session_kinds(study) == {
        "live": 1, "pilot": 1, "preview": 1, "simulated": 0, "withdrawn": 0
    }
    # Balance: only the live session holds a place in its condition.
    condition_id, filled = least_filled_condition(study)
    assert filled == 0 and condition_id != live_session.condition_id


def test_a_preview_takes_no_place_in_a_full_study(make_study):
    study = make_study("construct", ask_confidence=False, participants_per_condition=1)
    join(study, "pid-1")
    join(study, "pid-2")
    refused = Client()
    refused.get(f"/s/{study.slug}/?PROLIFIC_PID=pid-3")
    assert refused.get(f"/s/{study.slug}/").status_code == 403
    previewer = preview_by_placeholders(study)
    assert answer(previewer, study).status_code == 201


def test_a_draft_study_takes_no_previewers(make_study):
    study = make_study("construct", status="draft")
    browser = Client()
    browser.get(f"/s/{study.slug}/?{PLACEHOLDERS}")
    assert browser.post(f"/s/{study.slug}/consent/", CONSENT).status_code == 403
    assert not Session.objects.exists()


def test_deleting_pilot_and_preview_sessions_is_one_permission_checked_post(
    make_study, role_user
):
    study = make_study("construct", ask_confidence=False)
    assert answer(preview_by_placeholders(study), study).status_code == 201
    study.status = "pilot"
    study.save()
    assert answer(join(study, "pid-pilot"), study).status_code == 201
    study.status = "live"
    study.save()
    assert answer(join(study, "pid-live"), study).status_code == 201
    url = f"/admin/elicitation/study/{study.pk}/dashboard/delete-non-live/"

    analyst = Client()
    analyst.force_login(role_user("ana", ANALYST))
    assert analyst.post(url).status_code == 403
    assert Session.objects.count() == 3

    researcher = Client()
    researcher.force_login(role_user("res", RESEARCHER))
    page = researcher.get(f"/admin/elicitation/study/{study.pk}/dashboard/").content.decode()
    assert study.preview_key in page and 'id="delete-non-live"' in page
    assert researcher.post(url, {"kind": "live"}).status_code == 400  # never live ones
    assert Session.objects.count() == 3
    assert researcher.post(url).status_code == 302
    live = Session.objects.get()
    assert live.kind == Session.Kind.LIVE and live.participant.recruiter_pid == "pid-live"
    assert Judgment.objects.filter(session=live).count() == Judgment.objects.count() == 1
    assert Participant.objects.count() == 1  # the pilot's and previewer's went too
    entry = AuditLog.objects.get(action=AuditLog.Action.DELETE_NON_LIVE)
    assert entry.username == "res" and entry.study == study and "2" in entry.detail


def test_the_dashboard_lists_sessions_of_one_kind(make_study, role_user):
    study = make_study("construct", ask_confidence=False)
    preview_by_placeholders(study)
    join(study, "pid-live")
    preview = Session.objects.get(kind="preview").participant.public_id
    researcher = Client()
    researcher.force_login(role_user("res", RESEARCHER))
    dashboard = f"/admin/elicitation/study/{study.pk}/dashboard/"
    assert preview not in researcher.get(dashboard).content.decode()
    assert preview in researcher.get(dashboard + "?kind=preview").content.decode()
    assert researcher.get(dashboard + "?kind=nonsense").status_code == 400


def test_a_piloting_study_opens_like_a_live_one_and_its_flow_is_checked(make_study):
    from elicitation.services import FlowError, set_study_status

    study = make_study("construct", status="draft")
    set_study_status(study, "pilot")
    study.refresh_from_db()
    session = start_session(study, RecruiterIds("pid-x", "st", "se"))
    assert session.kind == Session.Kind.PILOT
    broken = make_study("construct", slug="broken", status="draft", consent_items=[])
    with pytest.raises(FlowError):
        set_study_status(broken, "pilot")


def test_in_chromium_two_prolific_previews_get_their_own_sessions(browser, live_server, make_study):
    study = make_study("construct", ask_confidence=False, n_pairs=6)
    for _ in range(2):
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{live_server.url}/s/{study.slug}/?{PLACEHOLDERS}")
        assert "PROLIFIC_PID" not in page.url
        for box in page.locator("input[type=checkbox]").all():
            box.check()
        page.click("#consent-submit")
        page.click("#instr-next")
        page.click("#instr-done")
        page.get_by_label("B", exact=True).check()
        page.click("#quiz-submit")
        page.wait_for_selector(".trial")
        assert page.get_attribute(".trial", "data-index") == "0"
        context.close()
    assert list(Session.objects.values_list("kind", flat=True)) == ["preview", "preview"]
    assert not Participant.objects.exclude(recruiter_pid=None).exists()


def test_deleting_pilots_of_an_adaptive_study_takes_them_out_of_its_posteriors(make_study):
    import numpy as np

    from elicitation import selectors
    from elicitation.services import delete_non_live_sessions
    from tests.test_adaptive_studies import answer_all

    study = make_study(
        "infer", n_pairs=2, repeat_trials=0, design="adaptive", conditions=1, status="pilot"
    )
    pilot = to_trials(start_session(study, RecruiterIds("pid-pilot")))
    answer_all(pilot, study.slug, answer=lambda spec, live: 90)
    study.status = "live"
    study.save()
    live = to_trials(start_session(study, RecruiterIds("pid-live")))
    answer_all(live, study.slug, answer=lambda spec, live: 30)
    live_answers = Judgment.objects.filter(session__kind="live").count()
    assert Judgment.objects.filter(session__kind="pilot").exists()
    assert delete_non_live_sessions(study) == 1
    stored = selectors.stored_posteriors(study)
    recomputed = selectors.recomputed_posteriors(study)
    assert sum(count for _, count in stored.values()) == live_answers
    for pair_id, (log_post, count) in stored.items():
        assert count == recomputed[pair_id][1]
        assert np.allclose(np.exp(log_post), np.exp(recomputed[pair_id][0]), atol=1e-9)
