"""Prolific through its API (recruitment app), against tests/fake_prolific.py, a local
server implementing the endpoints used: never the real service."""

from __future__ import annotations

import threading

import httpx
import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client

from elicitation.models import AuditLog, Session
from elicitation.services import RecruiterIds, start_session
from recruitment import credentials, services
from recruitment.models import BonusPayment, ProlificCredential
from recruitment.prolific import (
    InvalidRequest,
    OutcomeUnknown,
    ProlificClient,
    ProlificError,
    RateLimiter,
    bonus_csv,
    retry_after_seconds,
)
from tests.fake_prolific import TOKEN, FakeProlific

PROLIFIC_STUDY = "6500aa00bb11cc22dd33ee44"
REASON_TEXT = (
    "Your answers came faster than the trials can be read and the attention check on the "
    "instructions page was failed twice."
)
State = BonusPayment.State


@pytest.fixture
def fake():
    server = FakeProlific().start()
    yield server
    server.stop()


class Waits(list):
    """Records the client's sleeps instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def api(fake):
    waits = Waits()
    client = ProlificClient(TOKEN, fake.url, requests_per_second=0, sleep=waits, backoff=0.01)
    client.waits = waits
    yield client
    client.close()


@pytest.fixture
def prolific_settings(settings, fake):
    settings.PROLIFIC_API_URL = fake.url
    settings.PROLIFIC_API_TOKEN = TOKEN
    settings.PROLIFIC_REQUESTS_PER_SECOND = 0
    return settings


def linked_study(make_study, fake, pids=("pa", "pb", "pc")):
    """A study linked to a Prolific study whose participants started live sessions
    from Prolific's link; returns (study, {pid: submission})."""
    study = make_study(slug="prolific-study")
    services.link_study(study, PROLIFIC_STUDY)
    submissions = {}
    for pid in pids:
        submission = fake.add_submission(PROLIFIC_STUDY, pid)
        submissions[pid] = submission
        start_session(study, RecruiterIds(pid, PROLIFIC_STUDY, submission["id"]))
    assert Session.objects.filter(study=study).count() == len(pids)
    return study, submissions


class Crash(Exception):
    """Stands in for the process dying at a checkpoint."""


def crash_at(monkeypatch, step: str) -> None:
    def checkpoint(name: str) -> None:
        if name == step:
            raise Crash(name)

    monkeypatch.setattr(services, "checkpoint", checkpoint)


# --- the client -----------------------------------------------------------------------


def test_list_follows_prolifics_pages(fake, api):
    for i in range(45):
        fake.add_submission(PROLIFIC_STUDY, f"p{i:02d}")
    fake.add_submission("another-study", "elsewhere")
    rows = list(api.iter_submissions(PROLIFIC_STUDY, page_size=20))
    assert [r.participant_id for r in rows] == [f"p{i:02d}" for i in range(45)]
    assert fake.count("list") == 3


def test_requests_carry_the_token_and_a_wrong_one_is_refused(fake):
    with ProlificClient("not-the-token", fake.url, requests_per_second=0) as wrong:
        with pytest.raises(ProlificError) as refused:
            wrong.list_submissions(PROLIFIC_STUDY)
    assert refused.value.status == 401


def test_429_waits_for_retry_after_and_500_is_retried_for_reads(fake, api):
    fake.add_submission(PROLIFIC_STUDY, "pa")
    fake.fail_next("list", 429, headers={"Retry-After": "7"})
    fake.fail_next("list", 500)
    rows = api.list_submissions(PROLIFIC_STUDY)
    assert [r.participant_id for r in rows] == ["pa"]
    assert fake.count("list") == 3
    assert api.waits[0] == 7  # the server's Retry-After, honoured
    assert len(api.waits) == 2


def test_a_lasting_429_gives_up_with_prolifics_answer(fake, api):
    fake.fail_next("list", 429, times=10, headers={"Retry-After": "1"})
    with pytest.raises(ProlificError) as error:
        api.list_submissions(PROLIFIC_STUDY)
    assert error.value.status == 429
    assert fake.count("list") == api.max_attempts


def test_retry_after_as_an_http_date():
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after_seconds("soon") is None


def test_the_rate_limiter_spaces_requests():
    now = [100.0]
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limiter.wait()
    assert waits == [0.25, 0.25, 0.25, 0.25]


def test_approve_and_reject(fake, api):
    a = fake.add_submission(PROLIFIC_STUDY, "pa")
    b = fake.add_submission(PROLIFIC_STUDY, "pb")
    api.approve(a["id"])
    api.approve(a["id"])  # idempotent, as Prolific documents
    api.reject(b["id"], REASON_TEXT, "FAILED_CHECK")
    assert (a["status"], b["status"]) == ("APPROVED", "REJECTED")


@pytest.mark.parametrize(
    "message, category",
    [("Too fast.", "TOO_QUICKLY"), (REASON_TEXT, "TOO_FAST"), ("  " + "x" * 99 + "  ", "OTHER")],
)
def test_a_rejection_prolific_would_refuse_is_refused_before_sending(fake, api, message, category):
    b = fake.add_submission(PROLIFIC_STUDY, "pb")
    with pytest.raises(InvalidRequest):
        api.reject(b["id"], message, category)
    assert fake.count("transition") == 0
    assert b["status"] == "AWAITING REVIEW"


def test_the_servers_own_rejection_checks_answer_400(fake):
    # What the local check stands in front of: Prolific's own 400.
    b = fake.add_submission(PROLIFIC_STUDY, "pb")
    response = httpx.post(
        f"{fake.url}submissions/{b['id']}/transition/",
        json={"action": "REJECT", "message": "short", "rejection_category": "OTHER"},
        headers={"Authorization": f"Token {TOKEN}"},
    )
    assert response.status_code == 400 and "message" in response.json()["error"]["detail"]


def test_bonus_set_up_and_pay_are_never_repeated_after_a_lost_answer(fake, api):
    fake.add_submission(PROLIFIC_STUDY, "pa")
    fake.fail_next("create", 500)
    with pytest.raises(OutcomeUnknown):
        api.create_bonuses(PROLIFIC_STUDY, [("pa", 50)])
    assert fake.count("create") == 1
    bonus_id = api.create_bonuses(PROLIFIC_STUDY, [("pa", 50)])
    fake.drop_after("pay")
    with pytest.raises(OutcomeUnknown):
        api.pay_bonuses(bonus_id)
    assert fake.count("pay") == 1 and fake.paid_to("pa") == [50]


def test_bonus_csv_is_in_currency_units():
    assert bonus_csv([("pa", 150), ("pb", 5)]) == "pa,1.50\npb,0.05"
    with pytest.raises(InvalidRequest):
        bonus_csv([("pa", 0)])
    with pytest.raises(InvalidRequest):
        bonus_csv([("p,a", 10)])


# --- the ledger -----------------------------------------------------------------------


def test_bonuses_are_set_up_once_and_paid_once(fake, api, make_study):
    study, _ = linked_study(make_study, fake)
    services.record_bonuses(study, [("pa", 50), ("pb", 75)], "accuracy")
    report = services.pay_bonuses(api, study)
    assert (report.created, report.paid) == (2, 2)
    assert fake.count("create") == 1 and fake.count("pay") == 1
    assert (fake.paid_to("pa"), fake.paid_to("pb")) == ([50], [75])
    assert set(BonusPayment.objects.values_list("state", flat=True)) == {State.PAID}
    # The same intent again is the same row; paying again sends nothing.
    services.record_bonuses(study, [("pa", 50)], "accuracy")
    services.pay_bonuses(api, study)
    assert fake.count("create") == 1 and fake.paid_to("pa") == [50]
    with pytest.raises(InvalidRequest):
        services.record_bonuses(study, [("pa", 80)], "accuracy")
    assert BonusPayment.objects.count() == 2


def test_crash_between_recording_the_bonus_id_and_paying_pays_once(
    fake, api, make_study, monkeypatch
):
    study, _ = linked_study(make_study, fake)
    services.record_bonuses(study, [("pa", 50)], "accuracy")
    crash_at(monkeypatch, "after_record")
    with pytest.raises(Crash):
        services.pay_bonuses(api, study)
    row = BonusPayment.objects.get()
    assert row.state == State.CREATED and row.bonus_id
    monkeypatch.undo()
    services.pay_bonuses(api, study)  # the retry pays only
    row.refresh_from_db()
    assert row.state == State.PAID
    assert fake.count("create") == 1 and fake.paid_to("pa") == [50]


def test_crash_after_the_pay_call_is_not_paid_again(fake, api, make_study, monkeypatch):
    study, _ = linked_study(make_study, fake)
    services.record_bonuses(study, [("pa", 50)], "accuracy")
    crash_at(monkeypatch, "after_pay")
    with pytest.raises(Crash):
        services.pay_bonuses(api, study)
    assert BonusPayment.objects.get().state == State.PAYING
    monkeypatch.undo()
    services.pay_bonuses(api, study)
    # Prolific shows the bonus on the submission: recorded paid, never paid again.
    assert BonusPayment.objects.get().state == State.PAID
    assert fake.count("pay") == 1 and fake.paid_to("pa") == [50]


def test_crash_before_the_pay_call_needs_reconciliation_not_a_second_payment(
    fake, api, make_study, monkeypatch
):
    study, _ = linked_study(make_study, fake)
    services.record_bonuses(study, [("pa", 50)], "accuracy")
    crash_at(monkeypatch, "before_pay")
    with pytest.raises(Crash):
        services.pay_bonuses(api, study)
    monkeypatch.undo()
    report = services.pay_bonuses(api, study)
    row = BonusPayment.objects.get()
    assert report.reconcile == 1 and row.state == State.RECONCILE
    assert fake.count("pay") == 0
    # The researcher finds nothing paid on Prolific and retries: paid once.
    services.reconcile_bonus(row.pk, study, "retry")
    services.pay_bonuses(api, study)
    assert fake.paid_to("pa") == [50]


def test_crash_after_set_up_before_recording_its_id_never_sets_up_blindly(
    fake, api, make_study, monkeypatch
):
    study, _ = linked_study(make_study, fake)
    services.record_bonuses(study, [("pa", 50)], "accuracy")
    crash_at(monkeypatch, "after_create")
    with pytest.raises(Crash):
        services.pay_bonuses(api, study)
    assert BonusPayment.objects.get().state == State.CREATING
    monkeypatch.undo()
    for _ in range(2):
        report = services.pay_bonuses(api, study)
    row = BonusPayment.objects.get()
    assert row.state == State.RECONCILE and report.created == 0
    assert fake.count("create") == 1 and fake.count("pay") == 0 and fake.paid_to("pa") == []


def test_a_lost_set_up_answer_from_the_server_needs_reconciliation(fake, api, make_study):
    study, _ = linked_study(make_study, fake)
    services.record_bonuses(study, [("pa", 50), ("pb", 50)], "accuracy")
    fake.drop_after("create")  # Prolific sets it up, the answer never arrives
    report = services.pay_bonuses(api, study)
    assert report.reconcile == 2 and fake.count("create") == 1
    services.pay_bonuses(api, study)
    assert fake.count("create") == 1 and fake.payments == []


def test_already_paid_answer_is_recorded_as_paid(fake, api, make_study):
    study, _ = linked_study(make_study, fake)
    services.record_bonuses(study, [("pa", 50)], "accuracy")
    bonus_id = api.create_bonuses(PROLIFIC_STUDY, [("pa", 50)])
    api.pay_bonuses(bonus_id)
    BonusPayment.objects.update(state=State.CREATED, bonus_id=bonus_id)
    fake.answer_already_paid = True
    services.pay_bonuses(api, study)
    assert BonusPayment.objects.get().state == State.PAID
    assert fake.paid_to("pa") == [50]


def test_a_refused_set_up_is_failed_and_pays_nothing(fake, api, make_study):
    study, _ = linked_study(make_study, fake)
    services.record_bonuses(study, [("not-in-study", 50)], "accuracy")
    report = services.pay_bonuses(api, study)
    assert report.failed == 1 and BonusPayment.objects.get().state == State.FAILED
    assert fake.payments == []


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_payers_never_both_set_up(fake, make_study, role_user):
    study, _ = linked_study(make_study, fake)
    services.record_bonuses(study, [("pa", 50), ("pb", 60)], "accuracy")
    entered, release = fake.hold("create")
    outcomes = {}

    def pay(name: str) -> None:
        try:
            with ProlificClient(TOKEN, fake.url, requests_per_second=0) as client:
                outcomes[name] = services.pay_bonuses(client, study)
        except Exception as error:  # noqa: BLE001 - the outcome is what is checked
            outcomes[name] = error
        finally:
            connection.close()

    first = threading.Thread(target=pay, args=("first",))
    first.start()
    assert entered.wait(30)  # the first payer is inside Prolific's set-up call
    pay("second")
    release.set()
    first.join(30)
    assert isinstance(outcomes["second"], services.PaymentRunning)
    assert outcomes["first"].paid == 2
    assert fake.count("create") == 1 and fake.count("pay") == 1
    assert (fake.paid_to("pa"), fake.paid_to("pb")) == ([50], [60])


# --- the token ------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_stored_token_is_encrypted_and_keys_rotate(settings):
    from cryptography.fernet import Fernet

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.PROLIFIC_API_TOKEN = ""
    settings.PROLIFIC_TOKEN_KEYS = [old]
    credentials.store_token("secret-prolific-token")
    stored = ProlificCredential.objects.get().encrypted_token
    assert "secret-prolific-token" not in stored
    assert credentials.api_token() == "secret-prolific-token"
    settings.PROLIFIC_TOKEN_KEYS = [new, old]
    assert credentials.rotate_token()
    settings.PROLIFIC_TOKEN_KEYS = [new]
    assert credentials.api_token() == "secret-prolific-token"
    settings.PROLIFIC_API_TOKEN = "from-env"
    assert credentials.api_token() == "from-env"


# --- the dashboard ----------------------------------------------------------------------


@pytest.fixture
def researcher(role_user):
    user = role_user("researcher", "Researcher")
    client = Client()
    client.force_login(user)
    return user, client


def test_dashboard_lists_submissions_next_to_live_sessions(
    fake, prolific_settings, make_study, researcher, django_user_model
):
    study, subs = linked_study(make_study, fake)
    Session.objects.filter(participant__recruiter_pid="pc").update(kind="pilot")
    fake.add_submission(PROLIFIC_STUDY, "pd")  # came to Prolific, never here
    user, client = researcher
    url = f"/admin/recruitment/studies/{study.pk}/prolific/"
    page = client.get(url).content.decode()
    assert page.count('name="submission"') == 4
    assert page.count("no session here") == 2  # the pilot session is nobody's submission
    live = Session.objects.get(participant__recruiter_pid="pa")
    assert live.participant.public_id in page
    assert "pa" not in [w.strip("<>/") for w in page.split()] and subs["pa"]["id"] not in page
    assert not AuditLog.objects.filter(action=AuditLog.Action.VIEW_RECRUITER_IDS).exists()
    # With the recruiter-id permission the ids are shown, and that is logged.
    user.user_permissions.add(Permission.objects.get(codename="view_recruiter_ids"))
    client.force_login(django_user_model.objects.get(pk=user.pk))
    page = client.get(url).content.decode()
    assert "<td>pa</td>" in page
    assert (
        AuditLog.objects.filter(
            action=AuditLog.Action.VIEW_RECRUITER_IDS, study=study, username="researcher"
        ).count()
        == 1
    )


def test_dashboard_actions(fake, prolific_settings, make_study, researcher):
    study, subs = linked_study(make_study, fake)
    _, client = researcher
    base = f"/admin/recruitment/studies/{study.pk}/prolific/"
    ref = {pid: services.submission_reference(s["id"]) for pid, s in subs.items()}

    assert client.post(base + "approve/", {"submission": [ref["pa"]]}).status_code == 302
    assert subs["pa"]["status"] == "APPROVED"

    short = client.post(
        base + "reject/",
        {"submission": [ref["pb"]], "message": "Too fast.", "rejection_category": "TOO_QUICKLY"},
    )
    assert short.status_code == 400 and "message" in short.content.decode()
    assert subs["pb"]["status"] == "AWAITING REVIEW" and fake.count("transition") == 0
    done = client.post(
        base + "reject/",
        {"submission": [ref["pb"]], "message": REASON_TEXT, "rejection_category": "FAILED_CHECK"},
    )
    assert done.status_code == 302 and subs["pb"]["status"] == "REJECTED"

    forged = client.post(base + "approve/", {"submission": ["0" * 20]})
    assert forged.status_code == 400 and fake.count("bulk_approve") == 1

    paid = client.post(
        base + "bonuses/",
        {"submission": [ref["pa"], ref["pc"]], "amount": "0.50", "reason": "accuracy"},
    )
    assert paid.status_code == 302
    assert (fake.paid_to("pa"), fake.paid_to("pc"), fake.paid_to("pb")) == ([50], [50], [])
    again = client.post(
        base + "bonuses/", {"submission": [ref["pa"]], "amount": "0.50", "reason": "accuracy"}
    )
    assert again.status_code == 302 and fake.paid_to("pa") == [50]
    too_much = client.post(
        base + "bonuses/", {"submission": [ref["pb"]], "amount": "500", "reason": "typo"}
    )
    assert too_much.status_code == 400 and BonusPayment.objects.count() == 2
    assert AuditLog.objects.filter(action=AuditLog.Action.PAYMENT, study=study).exists()


def test_dashboard_needs_the_permission(fake, prolific_settings, make_study, role_user):
    study, subs = linked_study(make_study, fake)
    analyst = Client()
    analyst.force_login(role_user("analyst", "Analyst"))
    base = f"/admin/recruitment/studies/{study.pk}/prolific/"
    ref = services.submission_reference(subs["pa"]["id"])
    assert analyst.get(base).status_code == 403
    assert analyst.post(base + "approve/", {"submission": [ref]}).status_code == 403
    assert subs["pa"]["status"] == "AWAITING REVIEW" and fake.count("bulk_approve") == 0
