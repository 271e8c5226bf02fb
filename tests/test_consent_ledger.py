"""Consent law and the Prolific bonus ledger (issue 19 items 2-3): erasure and the
retention drop leave settled bonus payments in the ledger for the accounts without
the participant's PROLIFIC_PID, and an erasure waits (409) while a bonus of theirs may
still move money."""

import io
import threading
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from elicitation.models import AuditLog, Participant, Session, Study
from elicitation.services import RecruiterIds, consent, set_study_status, start_session
from hillmix_site.roles import RESEARCHER
from recruitment import services
from recruitment.models import BonusPayment
from recruitment.prolific import InvalidRequest

State = BonusPayment.State


def bonus(study, pid, state, reason="bonus", cents=50):
    return BonusPayment.objects.create(
        study=study, recruiter_pid=pid, amount_cents=cents, reason=reason, state=state
    )


def officer(role_user):
    user = role_user("dpo", RESEARCHER)
    for codename in ("view_recruiter_ids", "handle_data_requests"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("state", [State.PENDING, State.CREATING, State.CREATED,
                                   State.PAYING, State.RECONCILE])
def test_erasure_is_refused_while_a_bonus_is_unsettled(make_study, role_user, state):
    study = make_study("construct")
    start_session(study, RecruiterIds("pid-owed", "st", "se"))
    bonus(study, "pid-owed", State.PAID, reason="first")
    bonus(study, "pid-owed", state, reason="second")
    answer = officer(role_user).post("/api/data-requests/erase/", {"recruiter_pid": "pid-owed"})
    assert answer.status_code == 409
    assert "not settled" in answer.json()["detail"]
    # Nothing erased, nothing pseudonymised.
    assert Participant.objects.filter(recruiter_pid="pid-owed").exists()
    assert BonusPayment.objects.filter(recruiter_pid="pid-owed").count() == 2
    assert not AuditLog.objects.filter(action=AuditLog.Action.ERASE).exists()


def test_erasure_keeps_settled_bonuses_without_the_id(make_study, role_user):
    study = make_study("construct")
    other = make_study("infer", slug="other-study")
    start_session(study, RecruiterIds("pid-gone", "st", "se"))
    paid = bonus(study, "pid-gone", State.PAID, cents=125)
    cancelled = bonus(other, "pid-gone", State.FAILED, reason="late")
    kept = bonus(study, "pid-stays", State.PAID)
    # Prolific's refusal of a bulk set-up names every id of the batch, on every row.
    refusal = "Invalid ids: ['pid-gone', 'pid-stays']"
    BonusPayment.objects.filter(pk__in=[cancelled.pk, kept.pk]).update(error=refusal)
    client = officer(role_user)
    result = client.post("/api/data-requests/erase/", {"recruiter_pid": "pid-gone"}).json()
    assert result["bonuses"] == 2 and result["sessions"] == 1
    assert not BonusPayment.objects.filter(recruiter_pid="pid-gone").exists()
    for row, cents, state in [(paid, 125, State.PAID), (cancelled, 50, State.FAILED)]:
        row.refresh_from_db()
        assert row.recruiter_pid == f"{services.PSEUDONYM_PREFIX}{row.pk}"
        assert (row.amount_cents, row.state) == (cents, state)  # the accounts stay
    assert cancelled.error == ""
    kept.refresh_from_db()
    assert kept.recruiter_pid == "pid-stays"
    assert "pid-gone" not in kept.error and "pid-stays" in kept.error
    assert not BonusPayment.objects.filter(error__contains="pid-gone").exists()
    # Both studies' logs say it; no log names the id.
    erased = AuditLog.objects.filter(action=AuditLog.Action.ERASE)
    assert set(erased.values_list("study", flat=True)) == {study.pk, other.pk}
    assert not AuditLog.objects.filter(detail__contains="pid-gone").exists()
    # A pseudonymised refused bonus can no longer be retried (no one to pay).
    with pytest.raises(InvalidRequest):
        services.reconcile_bonus(cancelled.pk, other, "retry")
    # Erasing again: the id is gone everywhere.
    assert client.post(
        "/api/data-requests/erase/", {"recruiter_pid": "pid-gone"}
    ).status_code == 404


def test_erasure_of_an_id_only_the_ledger_holds(make_study, role_user):
    """Someone paid through Prolific who never opened a session (or whose sessions'
    ids were dropped) can still have their id erased from the ledger."""
    study = make_study("construct")
    row = bonus(study, "pid-ledger-only", State.PAID)
    result = consent.erase_participant(None, "pid-ledger-only")
    assert result == {"participant": None, "sessions": 0, "judgments": 0, "bonuses": 1}
    row.refresh_from_db()
    assert services.is_pseudonymised(row)


def test_retention_drops_the_id_from_settled_bonuses_only(make_study, settings):
    settings.HILLMIX_RECRUITER_ID_RETENTION_DAYS = 30
    old = make_study("construct", slug="old-study")
    recent = make_study("infer", slug="recent-study")
    start_session(old, RecruiterIds("pid-a", "st-old", "se-1"))
    paid = bonus(old, "pid-a", State.PAID)
    owed = bonus(old, "pid-b", State.RECONCILE)
    recent_paid = bonus(recent, "pid-a", State.PAID)
    for study, age in [(old, 31), (recent, 29)]:
        set_study_status(study, "closed")
        Study.objects.filter(pk=study.pk).update(
            closed_at=timezone.now() - timedelta(days=age)
        )
    result = consent.drop_expired_recruiter_ids()
    assert result["bonuses"] == 1 and result["studies"] == ["old-study"]
    paid.refresh_from_db()
    owed.refresh_from_db()
    recent_paid.refresh_from_db()
    assert services.is_pseudonymised(paid) and paid.amount_cents == 50
    assert owed.recruiter_pid == "pid-b"  # still needs the id to be settled
    assert recent_paid.recruiter_pid == "pid-a"  # its study closed 29 days ago
    # Once settled, the next run drops it too; the command says so.
    BonusPayment.objects.filter(pk=owed.pk).update(state=State.PAID)
    out = io.StringIO()
    call_command("drop_recruiter_ids", stdout=out)
    assert "1 settled bonus payments" in out.getvalue()
    owed.refresh_from_db()
    assert services.is_pseudonymised(owed)
    assert consent.drop_expired_recruiter_ids()["bonuses"] == 0  # idempotent
    assert Session.objects.get(study=old).recruiter_session_id == ""


# --- Erasing while the participant answers ---------------------------------------------


def _answer_during(monkeypatch, module, browser, study) -> dict:
    """Make `module`'s judgment deletion let `browser` answer in another thread
    (another connection) right after it, waiting a little for that answer, before the
    sessions are deleted: the erasure must not depend on whether the answer got in."""
    from django.db import connection

    from tests.test_participant_trust import answer

    real = module.Judgment
    outcome: dict = {}

    def save() -> None:
        try:
            outcome["status"] = answer(browser, study).status_code
        finally:
            connection.close()

    class Racing:
        class objects:  # noqa: N801 - stands in for the manager
            @staticmethod
            def filter(*args, **kwargs):
                judgments = real.objects.filter(*args, **kwargs)

                class Deleting:
                    @staticmethod
                    def delete():
                        deleted = judgments.delete()
                        thread = threading.Thread(target=save)
                        thread.start()
                        thread.join(3)  # the save gets in now or waits for the lock
                        outcome["thread"] = thread
                        return deleted

                return Deleting()

    monkeypatch.setattr(module, "Judgment", Racing)
    return outcome


@pytest.mark.django_db(transaction=True)
def test_an_answer_saved_during_an_erasure_goes_with_it(make_study, monkeypatch):
    from elicitation.models import Judgment
    from elicitation.services import consent as consent_module
    from tests.test_participant_trust import answer, join

    study = make_study("construct", ask_confidence=False)
    browser = join(study, "pid-racing")
    assert answer(browser, study).status_code == 201
    outcome = _answer_during(monkeypatch, consent_module, browser, study)
    result = consent.erase_participant(None, "pid-racing")  # no ProtectedError (500)
    outcome["thread"].join(60)
    assert result["sessions"] == 1
    assert not Session.objects.exists() and not Judgment.objects.exists()
    assert outcome["status"] >= 400  # the answer found its session gone


@pytest.mark.django_db(transaction=True)
def test_an_answer_saved_while_pilots_are_deleted_goes_with_them(make_study, monkeypatch):
    from elicitation.models import Judgment
    from elicitation.services import delete_non_live_sessions
    from elicitation.services import sessions as sessions_module
    from tests.test_participant_trust import answer, join

    study = make_study("construct", ask_confidence=False)
    set_study_status(study, "pilot")
    browser = join(study, "pid-pilot")
    assert Session.objects.get().kind == Session.Kind.PILOT
    assert answer(browser, study).status_code == 201
    outcome = _answer_during(monkeypatch, sessions_module, browser, study)
    assert delete_non_live_sessions(study) == 1
    outcome["thread"].join(60)
    assert not Session.objects.exists() and not Judgment.objects.exists()
    assert outcome["status"] >= 400


# --- What the access export and the Prolific page show ----------------------------------


def test_the_access_export_includes_the_participants_bonus_payments(make_study, role_user):
    study = make_study("construct")
    start_session(study, RecruiterIds("pid-asks", "st", "se"))
    bonus(study, "pid-asks", State.PAID, cents=80, reason="accuracy")
    bonus(study, "pid-other", State.PAID)
    data = officer(role_user).post(
        "/api/data-requests/access/", {"recruiter_pid": "pid-asks"}
    ).json()
    assert [(b["study"], b["amount_cents"], b["reason"], b["state"])
            for b in data["bonus_payments"]] == [(study.slug, 80, "accuracy", "paid")]


def test_the_ledgers_prolific_ids_are_audited_even_without_prolifics_answer(
    make_study, role_user, settings
):
    settings.PROLIFIC_API_TOKEN = ""  # Prolific cannot be asked: only the ledger shows
    study = make_study("construct")
    bonus(study, "5f0c0ffee0c0ffee0c0ffee0", State.FAILED)
    BonusPayment.objects.update(error="Invalid ids: ['5f0c0ffee0c0ffee0c0ffee0']")
    user = role_user("payer", RESEARCHER)
    user.user_permissions.add(Permission.objects.get(codename="manage_prolific"))
    client = Client()
    client.force_login(user)
    url = f"/admin/recruitment/studies/{study.pk}/prolific/"
    page = client.get(url)
    assert page.status_code == 200 and b"5f0c0ffee0c0ffee0c0ffee0" not in page.content
    assert b"Invalid ids: [&#x27;(hidden)&#x27;]" in page.content  # the note, without it
    assert not AuditLog.objects.filter(action=AuditLog.Action.VIEW_RECRUITER_IDS).exists()
    user.user_permissions.add(Permission.objects.get(codename="view_recruiter_ids"))
    user = type(user).objects.get(pk=user.pk)  # permissions are cached per instance
    client.force_login(user)
    page = client.get(url)
    assert b"5f0c0ffee0c0ffee0c0ffee0" in page.content
    viewed = AuditLog.objects.get(action=AuditLog.Action.VIEW_RECRUITER_IDS)
    assert (viewed.username, viewed.study_id) == ("payer", study.pk)


def test_withdrawing_a_session_erased_meanwhile_is_a_clear_refusal(make_study):
    from elicitation.services.sessions import FlowError

    study = make_study("construct")
    session = start_session(study, RecruiterIds("pid-both-ways", "st", "se"))
    consent.erase_participant(None, "pid-both-ways")  # the researcher, a moment before
    with pytest.raises(FlowError) as refused:
        consent.withdraw(session)  # the participant's page was read before the erasure
    assert refused.value.status == 403
