"""Consent law (issue 19 item 3): withdrawal, erasure and access by recruiter id,
dropping recruiter ids after a study closes, and the audit log of who touched
personal data."""

import io
import json
from datetime import timedelta

import pytest
from celery import current_app
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from elicitation import reports, tasks
from elicitation.models import AuditLog, Judgment, Participant, Session, Study
from elicitation.services import RecruiterIds, audit, set_study_status, start_session
from hillmix_site.roles import RESEARCHER
from tests.browser import enter_study
from tests.test_flow import to_trials
from tests.test_participant_trust import answer, cookie, join


def test_audit_record_names_user_and_study(make_study, django_user_model):
    study = make_study()
    user = django_user_model.objects.create_user("ana", password="pw")
    entry = audit.record(user, AuditLog.Action.EXPORT, study=study, detail="csv")
    entry.refresh_from_db()
    assert (entry.username, entry.action, entry.study, entry.detail) == (
        "ana", "export", study, "csv"
    )
    user.delete()
    entry.refresh_from_db()
    assert entry.user is None and entry.username == "ana"  # who acted outlives the account
    system = audit.record(None, AuditLog.Action.DROP_RECRUITER_IDS, study=study.pk)
    assert system.username == "" and system.study_id == study.pk


# --- Withdrawal -----------------------------------------------------------------------


def withdraw(browser, study):
    page = browser.get(f"/s/{study.slug}/withdraw/")
    assert page.status_code == 200 and b"withdraw-confirm" in page.content
    return browser.post(f"/s/{study.slug}/withdraw/")


@pytest.mark.parametrize("on_withdrawal", ["erase", "keep"])
def test_withdrawal_erases_or_keeps_answers_as_the_consent_page_said(make_study, on_withdrawal):
    study = make_study("construct", ask_confidence=False, on_withdrawal=on_withdrawal)
    consent_page = Client()
    consent_page.get(f"/s/{study.slug}/?PROLIFIC_PID=pid-w&STUDY_ID=st&SESSION_ID=se")
    terms = consent_page.get(f"/s/{study.slug}/").content.decode()
    assert ("will be kept" in terms) == (on_withdrawal == "keep")
    assert ("will then be erased" in terms) == (on_withdrawal == "erase")
    browser = join(study, "pid-w", study_id="st", session_id="se")
    other = join(study, "pid-other")
    assert answer(browser, study).status_code == 201
    assert answer(other, study).status_code == 201
    # Every page of the session links to the withdrawal.
    assert b'id="withdraw-link"' in browser.get(f"/s/{study.slug}/").content
    done = withdraw(browser, study)
    assert done.status_code == 200 and b'id="withdrawn"' in done.content
    session = Session.objects.get(participant__recruiter_pid="pid-w")
    assert session.withdrawn_at is not None
    kept = Judgment.objects.filter(session=session).count()
    assert kept == (1 if on_withdrawal == "keep" else 0)
    assert reports.study_judgments(study).filter(session=session).count() == kept
    # The other participant is untouched.
    assert Judgment.objects.exclude(session=session).count() == 1
    # The session is closed for good: no browser holds it, the ids do not reopen it,
    # and it holds no place nor appears among those paid.
    assert cookie(browser, study) is None
    assert answer(browser, study).status_code == 403
    again = Client()
    page = again.get(
        f"/s/{study.slug}/?PROLIFIC_PID=pid-w&STUDY_ID=st&SESSION_ID=se", follow=True
    )
    assert page.status_code == 403 and b'id="withdrawn"' in page.content
    assert session not in list(reports.quality_sessions(study))
    assert reports.progress_totals(reports.study_progress(study))["started"] == 1
    assert reports.session_kinds(study)["withdrawn"] == 1
    entry = AuditLog.objects.get(action=AuditLog.Action.WITHDRAW)
    assert entry.study == study and session.participant.public_id in entry.detail


def test_withdrawal_from_the_completion_page(make_study):
    study = make_study("construct", ask_confidence=False, repeat_trials=0, feedback_questions=[])
    browser = join(study, "pid-done")
    while answer(browser, study).status_code == 201:
        pass
    page = browser.get(f"/s/{study.slug}/")
    assert b'id="complete"' in page.content and b'id="withdraw-link"' in page.content
    assert withdraw(browser, study).status_code == 200
    assert not Judgment.objects.exists()  # erase is the default
    assert Session.objects.get().withdrawn_at is not None


def test_withdrawal_needs_the_browsers_own_session_and_csrf(make_study):
    study = make_study("construct", ask_confidence=False)
    victim = join(study, "pid-v")
    assert answer(victim, study).status_code == 201
    stranger = Client()
    assert stranger.get(f"/s/{study.slug}/withdraw/").status_code == 403
    assert stranger.post(f"/s/{study.slug}/withdraw/").status_code == 403
    # A forged cross-site POST with the victim's cookie but no CSRF token is refused.
    forged = Client(enforce_csrf_checks=True)
    forged.cookies = victim.cookies
    assert forged.post(f"/s/{study.slug}/withdraw/").status_code == 403
    assert Session.objects.get().withdrawn_at is None
    assert Judgment.objects.count() == 1


# --- Erasure and access by recruiter id -------------------------------------------------


def data_officer(role_user, *extra):
    user = role_user("dpo", RESEARCHER)
    for codename in extra:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def test_access_and_erasure_by_recruiter_id_need_both_permissions(make_study, role_user):
    study = make_study("construct", ask_confidence=True)
    second = make_study("infer", slug="second-study")
    target = join(study, "pid-target")
    assert answer(target, study).status_code == 201
    to_trials(start_session(second, RecruiterIds("pid-target", "st2", "se2")))
    keep = join(study, "pid-keep")
    assert answer(keep, study).status_code == 201
    body = {"recruiter_pid": "pid-target"}
    for perms in [(), ("view_recruiter_ids",), ("handle_data_requests",)]:
        client = data_officer(role_user, *perms)
        assert client.post("/api/data-requests/access/", body).status_code == 403
        assert client.post("/api/data-requests/erase/", body).status_code == 403
        assert client.post("/admin/elicitation/study/data-requests/", {
            "recruiter_pid": "pid-target", "action": "erase", "confirm": "on"
        }).status_code == 403
        client.logout()
        User.objects.filter(username="dpo").delete()
    assert Participant.objects.filter(recruiter_pid="pid-target").exists()

    officer = data_officer(role_user, "view_recruiter_ids", "handle_data_requests")
    unknown = officer.post("/api/data-requests/access/", {"recruiter_pid": "nobody"})
    assert unknown.status_code == 404
    data = officer.post("/api/data-requests/access/", body).json()
    assert data["participant"]["recruiter_pid"] == "pid-target"
    assert {s["study"] for s in data["sessions"]} == {study.slug, "second-study"}
    first = next(s for s in data["sessions"] if s["study"] == study.slug)
    assert len(first["judgments"]) == 1 and first["judgments"][0]["confidence"] is not None
    assert "token_hash" not in str(data) and "start_address" not in str(data)
    download = officer.post(
        "/admin/elicitation/study/data-requests/",
        {"recruiter_pid": "pid-target", "action": "export"},
    )
    assert download.status_code == 200 and json.loads(download.content) == data

    erased = officer.post("/api/data-requests/erase/", body).json()
    assert erased["sessions"] == 2 and erased["judgments"] == 1
    assert not Participant.objects.filter(recruiter_pid="pid-target").exists()
    assert Session.objects.count() == 1 and Judgment.objects.count() == 1  # pid-keep's
    actions = list(AuditLog.objects.values_list("action", flat=True))
    assert actions.count(AuditLog.Action.ACCESS_EXPORT) == 2
    assert actions.count(AuditLog.Action.ERASE) == 2  # one per study touched
    assert all(e.username == "dpo" for e in AuditLog.objects.filter(action="erase"))


def test_erasure_from_the_dashboard_form_needs_confirmation(make_study, role_user):
    study = make_study("construct", ask_confidence=False)
    assert answer(join(study, "pid-form"), study).status_code == 201
    officer = data_officer(role_user, "view_recruiter_ids", "handle_data_requests")
    url = "/admin/elicitation/study/data-requests/"
    assert officer.get(url).status_code == 200
    officer.post(url, {"recruiter_pid": "pid-form", "action": "erase"})
    assert Judgment.objects.count() == 1  # not confirmed
    assert officer.post(url, {"recruiter_pid": "pid-form", "action": "erase",
                              "confirm": "on"}).status_code == 302
    assert not Session.objects.exists() and not Judgment.objects.exists()


# --- Recruiter ids dropped after the study closes --------------------------------------


def test_the_retention_task_drops_recruiter_ids_only_past_n_days_after_closing(
    make_study, settings
):
    settings.HILLMIX_RECRUITER_ID_RETENTION_DAYS = 30
    old = make_study("construct", slug="old-study")
    recent = make_study("infer", slug="recent-study")
    start_session(old, RecruiterIds("pid-only-old", "st-old", "se-1"))
    start_session(old, RecruiterIds("pid-both", "st-old", "se-2"))
    start_session(recent, RecruiterIds("pid-both", "st-recent", "se-3"))
    set_study_status(old, "closed")
    set_study_status(recent, "closed")
    old.refresh_from_db()
    assert old.closed_at is not None
    Study.objects.filter(pk=old.pk).update(closed_at=timezone.now() - timedelta(days=31))
    Study.objects.filter(pk=recent.pk).update(closed_at=timezone.now() - timedelta(days=29))

    result = tasks.drop_expired_recruiter_ids.delay().get()
    assert result == {"studies": ["old-study"], "sessions": 2, "participants": 1,
                      "bonuses": 0}
    assert set(Session.objects.filter(study=old).values_list(
        "recruiter_study_id", "recruiter_session_id")) == {("", "")}
    assert not Participant.objects.filter(recruiter_pid="pid-only-old").exists()
    # Still in a study closed 29 days ago: its ids stay until that one expires too.
    assert Participant.objects.filter(recruiter_pid="pid-both").exists()
    assert Session.objects.get(study=recent).recruiter_session_id == "se-3"
    dropped = AuditLog.objects.filter(action=AuditLog.Action.DROP_RECRUITER_IDS)
    assert list(dropped.values_list("study", flat=True)) == [old.pk]
    # Running again changes nothing; the management command does the same.
    assert tasks.drop_expired_recruiter_ids.delay().get()["sessions"] == 0
    Study.objects.filter(pk=recent.pk).update(closed_at=timezone.now() - timedelta(days=31))
    out = io.StringIO()
    call_command("drop_recruiter_ids", stdout=out)
    assert "recent-study" in out.getvalue()
    assert not Participant.objects.filter(recruiter_pid__isnull=False).exists()


def test_closing_records_when_and_reopening_clears_it(make_study):
    study = make_study("construct")
    set_study_status(study, "closed")
    study.refresh_from_db()
    assert study.closed_at is not None
    study.status = "live"
    study.save()
    study.refresh_from_db()
    assert study.closed_at is None


def test_beat_runs_the_retention_task_daily():
    from django.conf import settings

    entry = settings.CELERY_BEAT_SCHEDULE["drop-expired-recruiter-ids"]
    assert entry["task"] == tasks.drop_expired_recruiter_ids.name
    assert entry["task"] in current_app.tasks


# --- The audit log ----------------------------------------------------------------------


def test_exports_and_recruiter_id_views_are_audited(make_study, role_user):
    study = make_study("construct", ask_confidence=False)
    assert answer(join(study, "pid-seen"), study).status_code == 201
    analyst = Client()
    analyst.force_login(role_user("ana", "Analyst"))
    response = analyst.get(f"/api/studies/{study.slug}/export/?as=json")
    b"".join(response.streaming_content)
    analyst.get(f"/api/studies/{study.slug}/export/hmix/")
    analyst.get(f"/api/judgments/export/?study={study.slug}")
    exports = AuditLog.objects.filter(action=AuditLog.Action.EXPORT, username="ana")
    assert exports.count() == 3 and exports.filter(study=study).count() == 2
    # Listing participants without the recruiter-id permission shows none: not audited.
    analyst.get("/api/participants/")
    analyst.get("/admin/elicitation/participant/")
    assert not AuditLog.objects.filter(action=AuditLog.Action.VIEW_RECRUITER_IDS).exists()

    payer = role_user("payer", "Analyst")
    payer.user_permissions.add(Permission.objects.get(codename="view_recruiter_ids"))
    client = Client()
    client.force_login(payer)
    listed = client.get("/api/participants/").json()["results"]
    assert listed[0]["recruiter_pid"] == "pid-seen"
    public_id = listed[0]["public_id"]
    client.get(f"/api/participants/{public_id}/")
    page = client.get("/admin/elicitation/participant/")
    assert b"pid-seen" in page.content
    participant = Participant.objects.get(recruiter_pid="pid-seen")
    client.get(f"/admin/elicitation/participant/{participant.pk}/change/")
    session = Session.objects.get()
    client.get(f"/admin/elicitation/session/{session.pk}/change/")
    views = AuditLog.objects.filter(action=AuditLog.Action.VIEW_RECRUITER_IDS, username="payer")
    assert views.count() == 5
    # Admins read the log in the admin, and nobody edits it there.
    boss = Client()
    boss.force_login(User.objects.create_superuser("boss", "b@example.org", "pw"))
    page = boss.get("/admin/elicitation/auditlog/")
    assert page.status_code == 200 and b"payer" in page.content
    entry = AuditLog.objects.first()
    deleting = boss.post(f"/admin/elicitation/auditlog/{entry.pk}/delete/", {"post": "yes"})
    assert deleting.status_code == 403 and AuditLog.objects.filter(pk=entry.pk).exists()
    assert boss.get("/admin/elicitation/auditlog/add/").status_code == 403
    assert analyst.get("/admin/elicitation/auditlog/").status_code == 403


def test_in_chromium_a_participant_withdraws_from_the_trial_page(browser, live_server, make_study):
    study = make_study("construct", ask_confidence=False, n_pairs=6)
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    enter_study(page, live_server.url, study.slug, "pid-chrome")
    page.wait_for_selector(".trial")
    page.click("#withdraw-link")
    page.wait_for_selector("#withdraw-confirm")
    assert "erased" in page.inner_text("#withdraw")
    page.click("#withdraw-confirm")
    page.wait_for_selector("#withdrawn")
    session = Session.objects.get()
    assert session.withdrawn_at is not None
    assert not [c for c in context.cookies() if c["name"] == f"hillmix_{study.slug}"]
    # Back to the study: the ids show only that they have withdrawn.
    page.goto(f"{live_server.url}/s/{study.slug}/?PROLIFIC_PID=pid-chrome&STUDY_ID=st&SESSION_ID=se")
    page.wait_for_selector("#withdrawn")
    context.close()


def test_erased_answers_leave_an_adaptive_studys_posteriors(make_study):
    import numpy as np

    from elicitation import selectors
    from elicitation.services import consent
    from tests.test_adaptive_studies import answer_all

    study = make_study("infer", n_pairs=2, repeat_trials=0, design="adaptive", conditions=1)
    sessions = []
    for pid in ("pid-a", "pid-b", "pid-c"):
        session = to_trials(start_session(study, RecruiterIds(pid, "st", pid)))
        answer_all(session, study.slug, answer=lambda spec, live: 70)
        sessions.append(session)
    consent.withdraw(sessions[0])
    consent.erase_participant(None, "pid-b")
    kept = Judgment.objects.count()
    assert kept and set(Judgment.objects.values_list("session", flat=True)) == {sessions[2].pk}
    stored = selectors.stored_posteriors(study)
    recomputed = selectors.recomputed_posteriors(study)
    assert sum(count for _, count in stored.values()) == kept
    for pair_id, (log_post, count) in stored.items():
        assert count == recomputed[pair_id][1]
        assert np.allclose(np.exp(log_post), np.exp(recomputed[pair_id][0]), atol=1e-9)
