"""Who may open a participant's session, how session starts are limited, and which
sessions fill a condition: on the real database, through Django's client (and one
headless Chromium test)."""

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from elicitation.live import live_session
from elicitation.models import Judgment, Participant, Session, secret_hash, session_reference
from elicitation.services import (
    FlowError,
    RecruiterIds,
    StudyFull,
    record_judgment,
    set_excluded,
    start_session,
)
from hillmix_site.client_address import client_address
from tests.browser import enter_study
from tests.test_flow import construct_answer, to_trials

CONSENT = {"consent_0": "on", "consent_1": "on", "q0": "1"}


def link(study, pid, study_id="st-1", session_id="se-1") -> str:
    query = f"PROLIFIC_PID={pid}"
    if study_id:
        query += f"&STUDY_ID={study_id}"
    if session_id:
        query += f"&SESSION_ID={session_id}"
    return f"/s/{study.slug}/?{query}"


def join(study, pid="pid-a", **ids) -> Client:
    """A browser that followed the recruiter's link and consented (quiz passed)."""
    browser = Client()
    browser.get(link(study, pid, **ids))
    response = browser.post(f"/s/{study.slug}/consent/", CONSENT)
    assert response.status_code == 302, response.content
    return browser


def answer(browser, study) -> object:
    """Send an answer to the trial the browser's page shows, with the session reference
    that page received, as trials.js does."""
    shown = browser.get(f"/s/{study.slug}/trial/")
    if shown.status_code != 200 or shown.json()["trial"] is None:
        return shown
    body = shown.json()
    held = Session.objects.get(token_hash=secret_hash(cookie(browser, study)))
    payload = construct_answer(held, index=body["trial"]["index"])
    payload["session"] = body["session"]
    if not study.ask_confidence:
        payload.pop("confidence")
    return browser.post(
        f"/s/{study.slug}/judgments/", json.dumps(payload), content_type="application/json"
    )


def cookie(browser, study) -> str | None:
    held = browser.cookies.get(f"hillmix_{study.slug}")
    return held.value if held is not None and held.value else None


# --- A recruiter id is an identifier, never a credential ------------------------------


def test_a_recruiter_id_alone_opens_nobody_elses_session(make_study):
    study = make_study("construct", ask_confidence=False)
    alice = join(study, "pid-a")
    assert answer(alice, study).status_code == 201
    stored = Judgment.objects.count()
    for ids in [
        {"study_id": "", "session_id": ""},  # the id alone
        {"study_id": "st-1", "session_id": ""},
        {"study_id": "st-1", "session_id": "guessed"},  # a wrong submission id
        {"study_id": "other", "session_id": "se-1"},
    ]:
        mallory = Client()
        page = mallory.get(link(study, "pid-a", **ids), follow=True)
        assert page.status_code == 403 and b"another browser" in page.content
        assert b"first-trial" not in page.content
        assert cookie(mallory, study) is None
        assert mallory.get(f"/s/{study.slug}/trial/").status_code == 403
        assert answer(mallory, study).status_code == 403
        # Consenting with the id gives nothing either, and stores nothing.
        refused = mallory.post(f"/s/{study.slug}/consent/", CONSENT)
        assert refused.status_code == 403 and cookie(mallory, study) is None
    assert Judgment.objects.count() == stored and Session.objects.count() == 1
    # Alice's browser still holds her session.
    assert answer(alice, study).status_code == 201


def test_the_whole_prolific_triple_resumes_in_another_browser_which_alone_holds_it(
    make_study,
):
    study = make_study("construct", ask_confidence=True)
    laptop = join(study, "pid-a", study_id="st-1", session_id="se-1")
    assert answer(laptop, study).status_code == 201
    phone = Client()
    page = phone.get(link(study, "pid-a", study_id="st-1", session_id="se-1"), follow=True)
    assert page.status_code == 200 and b'id="first-trial"' in page.content
    assert phone.get(f"/s/{study.slug}/trial/").json()["trial"]["index"] == 1
    assert answer(phone, study).status_code == 201
    # The secret was renewed: the first browser's copy opens nothing any more, even
    # in a worker that remembers the session (the save statement checks the secret).
    assert laptop.get(f"/s/{study.slug}/trial/").status_code == 403
    old = cookie(laptop, study)
    stale = construct_answer(Session.objects.get())
    stale["session"] = session_reference(secret_hash(old))  # as the old page had it
    with pytest.raises(FlowError) as refused:
        record_judgment(old, stale, study.slug)
    assert refused.value.status == 403
    assert Judgment.objects.count() == 2


def test_a_remembered_session_refuses_a_renewed_secret_in_the_save_statement(make_study):
    """The per-process memory of sessions skips the read; the write must still check
    the secret, or an old secret would keep saving after a resume elsewhere."""
    study = make_study("construct", ask_confidence=True)
    session = to_trials(start_session(study, RecruiterIds("pid-r", "st", "se")))
    old = session.token
    assert record_judgment(old, construct_answer(session), study.slug).created  # remembered
    start_session(study, RecruiterIds("pid-r", "st", "se"))  # resumed elsewhere
    session.refresh_from_db()
    stale = construct_answer(session)
    stale["session"] = session_reference(secret_hash(old))  # as the old page had it
    with pytest.raises(FlowError) as refused:
        record_judgment(old, stale, study.slug)
    assert refused.value.status == 403
    assert Judgment.objects.count() == 1


def test_a_finished_session_never_becomes_writable_again(make_study):
    study = make_study("construct", ask_confidence=False, feedback_questions=[])
    browser = join(study, "pid-f")
    while answer(browser, study).status_code == 201:
        pass
    session = Session.objects.get()
    assert session.state == Session.State.COMPLETE
    for ids in [{}, {"study_id": "", "session_id": ""}]:
        other = Client()
        page = other.get(link(study, "pid-f", **ids), follow=True)
        assert b"DONE-123" in page.content  # the study's completion page, nothing more
        assert cookie(other, study) is None
        assert other.get(f"/s/{study.slug}/trial/").status_code == 403
        again = other.post(f"/s/{study.slug}/consent/", CONSENT)
        assert b"first-trial" not in again.content and cookie(other, study) is None
    # The session did not move and was not given a new secret.
    assert Session.objects.get().token_hash == session.token_hash
    assert secret_hash(cookie(browser, study)) == session.token_hash


def test_a_link_with_another_recruiter_id_starts_that_ids_own_session(make_study):
    study = make_study("construct", ask_confidence=False)
    browser = join(study, "pid-a")
    assert answer(browser, study).status_code == 201
    alice = Session.objects.get()
    # The same id again keeps the session this browser holds.
    page = browser.get(link(study, "pid-a"), follow=True)
    assert b'id="first-trial"' in page.content
    # Another id: its own consent page, never the cookie's session.
    page = browser.get(link(study, "pid-b", session_id="se-2"), follow=True)
    assert b'id="consent"' in page.content and b"first-trial" not in page.content
    assert browser.get(f"/s/{study.slug}/trial/").status_code == 403
    browser.post(f"/s/{study.slug}/consent/", CONSENT)
    bob = Session.objects.exclude(pk=alice.pk).get()
    assert bob.participant.recruiter_pid == "pid-b" and bob.recruiter_session_id == "se-2"
    assert answer(browser, study).status_code == 201
    assert Judgment.objects.filter(session=alice).count() == 1
    assert Judgment.objects.filter(session=bob).count() == 1


def test_a_recruiter_id_used_in_another_study_never_opens_the_first_studys_session(
    make_study,
):
    first = make_study("construct", slug="first", ask_confidence=False)
    second = make_study("construct", slug="second", ask_confidence=False)
    alice = join(first, "pid-a")
    assert answer(alice, first).status_code == 201
    mallory = join(second, "pid-a", study_id="st-2", session_id="se-9")
    assert answer(mallory, second).status_code == 201
    # Mallory's secret opens only her own session in the second study.
    mallory.cookies[f"hillmix_{first.slug}"] = cookie(mallory, second)
    assert mallory.get(f"/s/{first.slug}/trial/").status_code == 403
    fresh = Client()
    page = fresh.get(link(first, "pid-a", study_id="st-2", session_id="se-9"), follow=True)
    assert page.status_code == 403 and cookie(fresh, first) is None
    alices = Session.objects.get(study=first)
    assert Judgment.objects.filter(session=alices).count() == 1


# --- The secret -------------------------------------------------------------------------


def test_session_secrets_are_stored_hashed_and_never_sent_in_page_content(make_study):
    study = make_study("construct", ask_confidence=False)
    browser = Client()
    pages = [browser.get(link(study, "pid-h"), follow=True)]
    pages.append(browser.post(f"/s/{study.slug}/consent/", CONSENT, follow=True))
    secret = cookie(browser, study)
    assert secret and len(secret) >= 43  # 32 random bytes, URL-safe base64
    session = Session.objects.get()
    assert session.token_hash == secret_hash(secret) and secret not in session.token_hash
    with connection.cursor() as cursor:  # in no column of the row
        cursor.execute(f"SELECT * FROM {Session._meta.db_table}")
        assert all(secret not in str(value) for value in cursor.fetchone())
    pages += [browser.get(f"/s/{study.slug}/"), browser.get(f"/s/{study.slug}/trial/")]
    pages.append(answer(browser, study))
    assert [p.status_code for p in pages] == [200, 200, 200, 200, 201]
    for response in pages:
        assert secret not in response.content.decode()
    assert "first-trial" in pages[1].content.decode()
    # Looking a secret up is one query on the hash's unique index.
    with CaptureQueriesContext(connection) as queries:
        assert live_session(secret, study.slug).session.pk == session.pk
    assert len(queries) == 1 and "token_hash" in queries[0]["sql"]
    assert Session._meta.get_field("token_hash").unique


# --- Session starts per real client address ----------------------------------------------


def test_client_address_believes_forwarded_for_only_from_trusted_proxies():
    proxies = ["10.0.0.0/8", "192.0.2.1"]
    forwarded = {"REMOTE_ADDR": "10.1.2.3", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 203.0.113.9"}
    assert client_address(forwarded, proxies) == "203.0.113.9"
    # Through two trusted proxies; what the client wrote itself stays unread.
    chained = {
        "REMOTE_ADDR": "10.1.2.3",
        "HTTP_X_FORWARDED_FOR": "1.1.1.1, 198.51.100.4, 192.0.2.1",
    }
    assert client_address(chained, proxies) == "198.51.100.4"
    # A peer that is not a trusted proxy is the client, whatever it claims.
    direct = {"REMOTE_ADDR": "198.51.100.7", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    assert client_address(direct, proxies) == "198.51.100.7"
    assert client_address(forwarded, []) == "10.1.2.3"
    assert (
        client_address({"REMOTE_ADDR": "10.1.2.3", "HTTP_X_FORWARDED_FOR": "junk"}, proxies)
        == "10.1.2.3"
    )
    assert client_address({"REMOTE_ADDR": "10.0.0.1"}, proxies) == "10.0.0.1"
    with pytest.raises(ValueError):
        client_address(forwarded, ["10.0.0.0/33"])


def test_session_starts_are_limited_per_client_behind_the_proxy(make_study, settings):
    settings.HILLMIX_SESSION_STARTS_PER_MINUTE = 2
    settings.HILLMIX_TRUSTED_PROXIES = ["10.0.0.0/8"]
    study = make_study("construct", conditions=2)

    def consent(pid: str, client_ip: str, spoofed: str = "") -> int:
        browser = Client(REMOTE_ADDR="10.0.0.2")
        browser.get(link(study, pid))
        chain = f"{spoofed}, {client_ip}" if spoofed else client_ip
        response = browser.post(f"/s/{study.slug}/consent/", CONSENT, HTTP_X_FORWARDED_FOR=chain)
        return response.status_code

    # Each real client gets its own limit, though all come through one proxy.
    assert [consent(f"a{i}", "203.0.113.1") for i in range(3)] == [302, 302, 429]
    assert [consent(f"b{i}", "203.0.113.2") for i in range(2)] == [302, 302]
    # A client cannot dodge its limit by writing its own X-Forwarded-For.
    assert consent("a9", "203.0.113.1", spoofed="198.51.100.99") == 429
    assert Session.objects.count() == 4
    assert not Participant.objects.filter(recruiter_pid__in=["a2", "a9"]).exists()


@pytest.mark.django_db(transaction=True)
def test_the_start_limit_holds_under_concurrent_starts(make_study, settings):
    if connection.vendor != "postgresql":
        pytest.skip("concurrent starts need PostgreSQL (set DATABASE_URL)")
    settings.HILLMIX_SESSION_STARTS_PER_MINUTE = 30
    study = make_study("construct", conditions=3)
    barrier = threading.Barrier(80)
    outcomes, errors = [], []

    def participant(i: int) -> None:
        try:
            barrier.wait()
            start_session(study, RecruiterIds(f"PID-{i}"), address="198.51.100.20")
            outcomes.append(201)
        except FlowError as error:
            outcomes.append(error.status)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=participant, args=(i,)) for i in range(80)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(outcomes) == [201] * 30 + [429] * 50
    assert Session.objects.count() == 30
    # Another address is not held up by the first one's limit.
    assert start_session(study, RecruiterIds("elsewhere"), address="198.51.100.21")


# --- Which sessions fill a condition -------------------------------------------------------


def test_excluded_and_abandoned_sessions_give_their_place_back(make_study):
    study = make_study("construct", conditions=2, stale_after_minutes=30)
    sessions = [start_session(study, RecruiterIds(f"p{i}")) for i in range(4)]
    c1, c2 = study.conditions.order_by("position")
    assert [s.condition_id for s in sessions] == [c1.pk, c2.pk, c1.pk, c2.pk]
    for session in sessions:
        if session.condition_id == c1.pk:
            set_excluded(session, True)
    assert start_session(study, RecruiterIds("p4")).condition_id == c1.pk
    assert start_session(study, RecruiterIds("p5")).condition_id == c1.pk
    # An unfinished session unseen for longer than the study's cutoff stops counting;
    # a completed one always counts.
    c2_sessions = Session.objects.filter(condition=c2)
    long_ago = timezone.now() - timedelta(minutes=31)
    c2_sessions.filter(participant__recruiter_pid="p1").update(last_seen_at=long_ago)
    c2_sessions.filter(participant__recruiter_pid="p3").update(
        last_seen_at=long_ago, state=Session.State.COMPLETE, completed_at=long_ago
    )
    assert start_session(study, RecruiterIds("p6")).condition_id == c2.pk
    assert start_session(study, RecruiterIds("p7")).condition_id == c1.pk


def test_a_study_with_a_target_per_condition_stops_taking_participants_when_full(make_study):
    study = make_study(
        "construct",
        conditions=2,
        participants_per_condition=1,
        full_return_url="https://recruiter.example/return?code=FULL",
    )
    first, second = join(study, "p1"), join(study, "p2")
    assert answer(first, study).status_code == 201 and answer(second, study).status_code == 201
    late = Client()
    page = late.get(link(study, "p3"), follow=True)
    assert page.status_code == 403 and b'id="study-full"' in page.content
    assert b"https://recruiter.example/return?code=FULL" in page.content
    assert b'id="consent"' not in page.content
    refused = late.post(f"/s/{study.slug}/consent/", CONSENT)
    assert refused.status_code == 403 and b'id="study-full"' in refused.content
    assert Session.objects.count() == 2 and cookie(late, study) is None
    assert not Participant.objects.filter(recruiter_pid="p3").exists()
    with pytest.raises(StudyFull):
        start_session(study, RecruiterIds("p4"))
    # Those already in keep going; an excluded session frees its place.
    assert answer(first, study).status_code == 201
    set_excluded(Session.objects.get(participant__recruiter_pid="p2"), True)
    page = late.get(f"/s/{study.slug}/")
    assert b'id="consent"' in page.content
    assert late.post(f"/s/{study.slug}/consent/", CONSENT).status_code == 302


# --- In a real browser -------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_in_chromium_a_recruiter_id_opens_no_session_and_the_triple_moves_it(
    browser, live_server, make_study
):
    study = make_study("construct", ask_confidence=False, n_pairs=6)
    laptop = browser.new_context()
    page = laptop.new_page()
    page.set_default_timeout(15_000)
    enter_study(page, live_server.url, study.slug, "pid-chrome")
    page.wait_for_selector(".trial")
    secret = next(c["value"] for c in laptop.cookies() if c["name"] == f"hillmix_{study.slug}")
    assert secret not in page.content()
    assert page.evaluate("document.cookie").find(secret) == -1  # HttpOnly
    base = f"{live_server.url}/s/{study.slug}/"

    other = browser.new_context()
    intruder = other.new_page()
    intruder.set_default_timeout(15_000)
    intruder.goto(f"{base}?PROLIFIC_PID=pid-chrome&STUDY_ID=st&SESSION_ID=guess")
    assert "another browser" in intruder.inner_text("#unavailable")
    assert not [c for c in other.cookies() if c["name"] == f"hillmix_{study.slug}"]
    # The participant's own submission link moves the session to the second browser.
    intruder.goto(f"{base}?PROLIFIC_PID=pid-chrome&STUDY_ID=st&SESSION_ID=se")
    intruder.wait_for_selector(".trial")
    assert intruder.get_attribute(".trial", "data-index") == "0"
    assert "PROLIFIC_PID" not in intruder.url
    laptop.close()
    other.close()
    assert Session.objects.count() == 1


def test_cookies_from_before_the_hashing_keep_working(make_study):
    """The migration hashes every stored clear-text token in place, so a participant
    in the middle of a session when it runs carries on with the cookie they hold."""
    import importlib

    from django.apps import apps

    migration = importlib.import_module(
        "elicitation.migrations.0008_session_secret_hash_and_condition_targets"
    )
    study = make_study("construct", ask_confidence=False)
    session = to_trials(start_session(study, RecruiterIds("before")))
    clear = "old-clear-text-token-of-24-bytes"
    Session.objects.filter(pk=session.pk).update(token_hash=clear)  # as stored before
    migration.hash_tokens(apps, None)
    assert Session.objects.get(pk=session.pk).token_hash == secret_hash(clear)
    browser = Client()
    browser.cookies[f"hillmix_{study.slug}"] = clear
    assert browser.get(f"/s/{study.slug}/trial/").json()["trial"]["index"] == 0
    assert answer(browser, study).status_code == 201
