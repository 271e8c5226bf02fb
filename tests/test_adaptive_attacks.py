"""Attacks on an adaptive study's save through the participant API: replayed and
second answers, answers to trials not served, malformed answers, one session's answers
sent from several threads, many sessions answering one pair, previews and pilots, and
the study edited or closed mid-session. Whatever is refused changes nothing (no
judgment, no posterior, no trial appended) and the stored posteriors always equal
those recomputed from the stored judgments, per pool. PostgreSQL's one-statement save
and SQLite's transaction (no DATABASE_URL) both run the single-threaded attacks."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter

import numpy as np
import pytest
from django.db import connection, connections
from django.test import Client

from elicitation import selectors
from elicitation.models import Judgment, PairPosterior, Session, Study
from tests.test_adaptive_studies import pools
from tests.test_participant_trust import CONSENT, join

ADAPTIVE = {"design": "adaptive", "conditions": 1, "ask_confidence": True}


def needs_postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("concurrent saves need PostgreSQL (set DATABASE_URL)")


def payload(shown: dict, slider: int = 40, **overrides) -> dict:
    body = {
        "session": shown["session"],
        "trial_index": shown["trial"]["index"],
        "idempotency_key": str(uuid.uuid4()),
        "rt_ms": 900.0,
        "response": {
            "slider": slider,
            "confidence": 60,
            "slider_touched": True,
            "confidence_touched": True,
        },
    }
    body.update(overrides)
    return body


def post(browser: Client, study, body, raw: bool = False):
    data = body if raw else json.dumps(body)
    return browser.post(f"/s/{study.slug}/judgments/", data, content_type="application/json")


def shown(browser: Client, study) -> dict:
    page = browser.get(f"/s/{study.slug}/trial/")
    assert page.status_code == 200, page.content
    return page.json()


def preview(study) -> Client:
    browser = Client()
    assert browser.get(f"/s/{study.slug}/preview/{study.preview_key}/").status_code == 302
    assert browser.post(f"/s/{study.slug}/consent/", CONSENT).status_code == 302
    return browser


def snapshot(study) -> tuple:
    """Everything a save may change: judgments, sessions, every pool's posteriors."""
    judgments = sorted(Judgment.objects.filter(study=study).values_list("id", "trial_index"))
    sessions = sorted(
        Session.objects.filter(study=study).values_list("id", "position", "state", "trial_order"),
        key=lambda row: row[0],
    )
    posteriors = {
        (pair_id, pool): (np.asarray(log_post).tobytes(), count)
        for pair_id, pool, log_post, count in PairPosterior.objects.filter(study=study).values_list(
            "pair_id", "pool", "log_posterior", "judgment_count"
        )
    }
    return judgments, sessions, posteriors


def assert_consistent(study) -> None:
    """Every pool's stored posterior equals its recomputation from the stored judgments,
    its count is the pool's judgments of the pair, and every session's trial order holds
    exactly its answered trials plus at most the one served next."""
    from elicitation.adaptive_design import kinds_in_pool

    for pool in PairPosterior.Pool.values:
        stored = selectors.stored_posteriors(study, pool)
        recomputed = selectors.recomputed_posteriors(study, pool)
        counted = Counter(
            Judgment.objects.filter(
                study=study, session__kind__in=kinds_in_pool(pool), session__excluded=False
            ).values_list("pair_id", flat=True)
        )
        assert {p: c for p, (_, c) in stored.items() if c} == dict(counted), pool
        for pair_id, (log_post, count) in stored.items():
            assert recomputed[pair_id][1] == count
            assert np.allclose(log_post, recomputed[pair_id][0], rtol=0, atol=1e-8), pool
    for session in Session.objects.filter(study=study, withdrawn_at=None):
        indexes = sorted(
            Judgment.objects.filter(session=session).values_list("trial_index", flat=True)
        )
        assert indexes == list(range(session.position)), session.pk
        served = len(session.trial_order)
        if session.state == Session.State.TRIALS:
            assert served in (session.position, session.position + 1), session.pk
        else:
            assert served == session.position, session.pk


# --- One participant's bad answers -------------------------------------------------------


def test_malformed_out_of_turn_and_foreign_answers_are_4xx_and_change_nothing(make_study):
    study = make_study("infer", n_pairs=3, repeat_trials=1, **ADAPTIVE)
    browser = join(study, "attacker")
    other = join(study, "victim")
    first = shown(browser, study)
    assert post(browser, study, payload(first)).status_code == 201
    current = shown(browser, study)
    theirs = shown(other, study)
    index = current["trial"]["index"]
    assert index == 1
    good = payload(current)
    bad = [
        ("not json", "{", True),
        ("a list", "[1, 2]", True),
        ("no key", {k: v for k, v in good.items() if k != "idempotency_key"}, False),
        ("key not a uuid", {**good, "idempotency_key": "abc"}, False),
        ("not served yet", payload(current, trial_index=index + 1), False),
        ("far future", payload(current, trial_index=10**6), False),
        ("negative", payload(current, trial_index=-1), False),
        ("index as text", payload(current, trial_index="1"), False),
        ("already answered, new key", payload(current, trial_index=0), False),
        ("other session", payload(current, session=theirs["session"]), False),
        ("slider over", payload(current, slider=101), False),
        ("slider under", payload(current, slider=-1), False),
        ("slider text", payload(current, slider="40"), False),
        ("slider NaN", json.dumps(payload(current)).replace('"slider": 40', '"slider": NaN'), True),
        ("rt NaN", json.dumps(payload(current)).replace('"rt_ms": 900.0', '"rt_ms": NaN'), True),
        ("rt Infinity", json.dumps(payload(current)).replace("900.0", "Infinity"), True),
        ("rt zero", payload(current, rt_ms=0), False),
        ("a second confidence", payload(current, confidence=50), False),
        (
            "confidence 101",
            payload(current, response={**good["response"], "confidence": 101}),
            False,
        ),
        (
            "confidence missing",
            payload(current, response={"slider": 40, "slider_touched": True}),
            False,
        ),
        ("response a list", payload(current, response=[40]), False),
        ("response empty", payload(current, response={}), False),
        ("huge number", json.dumps(payload(current)).replace("900.0", "9" * 5000), True),
        ("deep", "[" * 100000 + "]" * 100000, True),
    ]
    before = snapshot(study)
    for name, body, raw in bad:
        reply = post(browser, study, body, raw)
        assert 400 <= reply.status_code < 500, (name, reply.status_code, reply.content[:200])
        assert "error" in reply.json() or reply.json(), name
        assert snapshot(study) == before, name
    # Another content type, and no session cookie at all.
    reply = browser.post(f"/s/{study.slug}/judgments/", json.dumps(good), content_type="text/plain")
    assert reply.status_code == 415
    assert post(Client(), study, good).status_code == 403
    assert snapshot(study) == before
    # The good answer still goes through afterwards, once.
    assert post(browser, study, good).status_code == 201
    assert post(browser, study, good).status_code == 200
    assert_consistent(study)


def test_replays_and_second_answers_through_http(make_study):
    """A replay of a stored key returns it (200, same trial) and changes nothing; a new
    key for an answered trial, a stored key for another trial or another session's key
    is a 409 that changes nothing."""
    study = make_study("infer", n_pairs=3, repeat_trials=1, **ADAPTIVE)
    browser, other = join(study, "replayer"), join(study, "neighbour")
    first = payload(shown(browser, study), 10)
    saved = post(browser, study, first)
    assert saved.status_code == 201
    reply = saved.json()
    theirs = payload(shown(other, study), 90)
    assert post(other, study, theirs).status_code == 201
    before = snapshot(study)
    again = post(browser, study, first)
    assert again.status_code == 200
    assert again.json()["trial_index"] == 0 and again.json()["next"] == reply["next"] == 1
    assert again.json()["trial"] == reply["trial"]  # the trial served once, not again
    assert snapshot(study) == before
    refusals = [
        {**first, "idempotency_key": str(uuid.uuid4()), "response": {**first["response"]}},
        {**first, "trial_index": 1},  # the stored key for the next trial
        {**payload(shown(browser, study)), "idempotency_key": theirs["idempotency_key"]},
    ]
    for body in refusals:
        reply = post(browser, study, body)
        assert reply.status_code == 409, reply.content
        assert snapshot(study) == before
    assert_consistent(study)


# --- Previews, pilots ----------------------------------------------------------------------


def test_a_preview_adds_nothing_and_a_pilot_only_to_the_pilot_pool(make_study):
    study = make_study("infer", n_pairs=2, repeat_trials=0, status="pilot", **ADAPTIVE)
    look, pilot = preview(study), join(study, "piloting")
    for browser in (look, pilot, look, pilot):
        assert post(browser, study, payload(shown(browser, study), 20)).status_code == 201
    kinds = Counter(Judgment.objects.values_list("session__kind", flat=True))
    assert kinds == {Session.Kind.PREVIEW: 2, Session.Kind.PILOT: 2}
    counts = Counter()
    for pool, count in PairPosterior.objects.values_list("pool", "judgment_count"):
        counts[pool] += count
    assert counts.get("live", 0) == 0 and counts["pilot"] == 2 and not counts.get("simulated")
    assert_consistent(study)


# --- The study edited or closed mid-session -------------------------------------------------


def test_an_answer_after_the_study_changed_is_checked_anew(make_study):
    """An edit between the page and the answer: the save's version check refuses the
    stale write and the answer is checked and stored against the study as it is now,
    once; closing the study mid-session refuses the answer (or stores it once) and
    never stores half of it."""
    study = make_study("infer", n_pairs=3, repeat_trials=1, **ADAPTIVE)
    browser = join(study, "mid-edit")
    current = shown(browser, study)
    assert post(browser, study, payload(current)).status_code == 201
    current = shown(browser, study)
    Study.objects.filter(pk=study.pk).update(title="Edited", updated_at=study.updated_at)
    study.refresh_from_db()
    from django.utils import timezone

    Study.objects.filter(pk=study.pk).update(updated_at=timezone.now())
    assert post(browser, study, payload(current)).status_code == 201
    assert_consistent(study)
    # Closed now: whatever the reply, nothing stored by halves.
    current = shown(browser, study)
    Study.objects.filter(pk=study.pk).update(status="closed", updated_at=timezone.now())
    before = snapshot(study)
    reply = post(browser, study, payload(current))
    if reply.status_code >= 400:
        assert reply.status_code < 500 and snapshot(study) == before
    else:
        assert reply.status_code == 201
    assert_consistent(study)


# --- Concurrency (PostgreSQL) ---------------------------------------------------------------


def run_threads(n: int, target) -> list[BaseException]:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.mark.django_db(transaction=True)
def test_one_sessions_answers_from_several_threads_store_one_per_trial(make_study):
    """Each round, several threads of one browser answer its current trial at once:
    some with the same key, some with keys of their own, one for the trial after. One
    answer is stored (201), the same key's others are replays (200) of it, the rest
    409 (the one for the trial after may be stored once the winner served that trial);
    the trial order grows by exactly one served trial per stored answer."""
    needs_postgres()
    study = make_study("infer", n_pairs=3, repeat_trials=1, adaptive_budget=6, **ADAPTIVE)
    browser = join(study, "many-tabs")
    cookies = browser.cookies
    rounds = 0
    while True:
        page = shown(browser, study)
        if page["trial"] is None:
            break
        shared = payload(page, 30 + rounds)
        bodies = [shared, shared, shared, payload(page, 70), payload(page, 80)]
        bodies.append(payload(page, 50, trial_index=page["trial"]["index"] + 1))
        replies: list = [None] * len(bodies)

        def send(i: int, bodies=bodies, replies=replies) -> None:
            tab = Client()
            tab.cookies = cookies
            reply = post(tab, study, bodies[i])
            replies[i] = (reply.status_code, reply.json())

        assert run_threads(len(bodies), send) == []
        codes = [code for code, _ in replies]
        assert all(code in (200, 201, 409) for code in codes), replies
        # The answer for the trial after may arrive once the winner served it: stored.
        ahead = codes.pop()
        assert codes.count(201) == 1, replies
        winner = codes.index(201)
        if winner < 3:  # the shared key won: its copies are replays
            assert codes[:3].count(200) == 2 and codes[3:] == [409, 409], replies
        else:
            assert codes[:3] == [409, 409, 409], replies
        index = page["trial"]["index"]
        stored = Judgment.objects.get(trial_index=index)
        assert str(stored.idempotency_key) == bodies[winner]["idempotency_key"]
        if ahead == 201:
            stored = Judgment.objects.get(trial_index=index + 1)
            assert str(stored.idempotency_key) == bodies[-1]["idempotency_key"]
        assert Judgment.objects.count() == index + 1 + (ahead == 201)
        rounds += 1
        assert_consistent(study)
    assert Judgment.objects.count() >= rounds > 1
    assert_consistent(study)


@pytest.mark.django_db(transaction=True)
def test_many_sessions_answering_one_pair_add_up_per_pool(make_study):
    """Live participants and previews of one study, all on its one pair, and pilots of
    another, answer at once (each answer sent twice): every stored judgment counts
    once in its own pool's posterior, previews in none."""
    needs_postgres()
    live_study = make_study(
        "infer", slug="one-pair", n_pairs=1, repeat_trials=1, adaptive_max_per_pair=6, **ADAPTIVE
    )
    pilot_study = make_study(
        "infer", slug="one-pair-pilot", n_pairs=1, repeat_trials=0, status="pilot", **ADAPTIVE
    )
    browsers = [(live_study, join(live_study, f"live-{i}")) for i in range(6)]
    browsers += [(live_study, preview(live_study)) for _ in range(2)]
    browsers += [(pilot_study, join(pilot_study, f"pilot-{i}")) for i in range(3)]

    def participant(i: int) -> None:
        study, browser = browsers[i]
        for n in range(20):
            page = shown(browser, study)
            if page["trial"] is None:
                return
            body = payload(page, (7 * i + 13 * n) % 101)
            first, again = post(browser, study, body), post(browser, study, body)
            assert (first.status_code, again.status_code) == (201, 200), first.content
        raise AssertionError("trials never ended")

    assert run_threads(len(browsers), participant) == []
    for study in (live_study, pilot_study):
        assert_consistent(study)
    live_counts = pools(live_study)
    live_judgments = Judgment.objects.filter(study=live_study, session__kind="live").count()
    assert live_counts.get("live") == live_judgments > 6
    assert not live_counts.get("pilot") and not live_counts.get("simulated")
    assert Judgment.objects.filter(session__kind=Session.Kind.PREVIEW).count() > 0
    pilot_counts = pools(pilot_study)
    assert pilot_counts.get("pilot") == Judgment.objects.filter(study=pilot_study).count() > 0
    assert not pilot_counts.get("live")


@pytest.mark.django_db(transaction=True)
def test_saves_racing_study_edits_never_store_by_halves(make_study):
    """A researcher saves the study over and over while participants answer: each
    answer is stored once (201), or refused as sent against another version (409) and
    stored on its retry; never a judgment without its posterior or trial."""
    needs_postgres()
    from django.utils import timezone

    study = make_study("infer", n_pairs=2, repeat_trials=0, adaptive_max_per_pair=8, **ADAPTIVE)
    browsers = [join(study, f"racer-{i}") for i in range(4)]
    done = threading.Event()

    def act(i: int) -> None:
        if i == len(browsers):  # the researcher
            while not done.wait(0.3):  # a save every 0.3 s
                Study.objects.filter(pk=study.pk).update(updated_at=timezone.now())
            return
        try:
            browser = browsers[i]
            for _ in range(40):
                page = shown(browser, study)
                if page["trial"] is None:
                    return
                body = payload(page, 25 + 10 * i)
                for _ in range(5):
                    reply = post(browser, study, body)
                    if reply.status_code in (200, 201):
                        break
                    assert reply.status_code == 409, reply.content
            raise AssertionError("trials never ended")
        finally:
            if i == 0:
                done.set()

    errors = run_threads(len(browsers) + 1, act)
    done.set()
    assert errors == [], (errors, Judgment.objects.count())
    assert_consistent(study)
    assert Judgment.objects.count() >= len(browsers)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("held", ["before the rebuild", "between its read and its write"])
def test_an_answer_saved_while_a_withdrawal_rebuilds_the_posteriors_still_counts(
    make_study, monkeypatch, held
):
    """A participant withdraws and has their answers erased (the study's posteriors are
    rebuilt from the judgments left) while another answers the same pair. The
    withdrawal is held (until the answer is saved, or 2 s: the answer may have to wait
    for its locks) either after it locked the session and before the rebuild, or
    between the rebuild's read of the judgments and its write. Neither may deadlock
    (the withdrawal's lock on the study's row held the answer's foreign key check after
    the answer took the pair's row, which the rebuild then waited for), nor may the
    rebuild overwrite the answer saved after its read."""
    needs_postgres()
    import elicitation.selectors as selectors_module
    from elicitation.services import consent

    study = make_study(
        "infer",
        n_pairs=1,
        repeat_trials=0,
        on_withdrawal="erase",
        adaptive_max_per_pair=8,
        **ADAPTIVE,
    )
    leaver, stayer = join(study, "leaver"), join(study, "stayer")
    for browser in (leaver, stayer):
        assert post(browser, study, payload(shown(browser, study), 20)).status_code == 201
    page = shown(stayer, study)
    leaving = Judgment.objects.order_by("id").first().session  # the leaver answered first
    reached, saved = threading.Event(), threading.Event()
    module, name = (
        (consent, "rebuild_adaptive_posteriors")
        if held == "before the rebuild"
        else (selectors_module, "recomputed_posteriors")
    )
    original = getattr(module, name)

    def hold(*args, **kwargs):
        if held == "before the rebuild":
            reached.set()
            saved.wait(2.0)
            return original(*args, **kwargs)
        out = original(*args, **kwargs)
        reached.set()
        saved.wait(2.0)
        return out

    monkeypatch.setattr(module, name, hold)

    def act(i: int) -> None:
        if i == 0:
            consent.withdraw(leaving)
        else:
            assert reached.wait(10)
            reply = post(stayer, study, payload(page, 80))
            saved.set()
            assert reply.status_code == 201, reply.content

    errors = run_threads(2, act)
    assert errors == [], [str(e) for e in errors]
    monkeypatch.setattr(module, name, original)
    assert Judgment.objects.filter(session=leaving).count() == 0
    assert Judgment.objects.count() == 2
    assert_consistent(study)


@pytest.mark.django_db(transaction=True)
def test_withdrawals_racing_their_own_and_others_answers(make_study):
    """Participants answer one pair while some of them withdraw (answers erased) from a
    second tab mid-session: a withdrawn session's answers are all gone, an answer of it
    racing the withdrawal is refused (403/409) or erased with it, never a 500, and the
    posteriors equal their recomputation from the answers left."""
    needs_postgres()
    study = make_study(
        "infer",
        n_pairs=1,
        repeat_trials=0,
        on_withdrawal="erase",
        adaptive_max_per_pair=8,
        **ADAPTIVE,
    )
    from elicitation.models import secret_hash

    browsers = [join(study, f"w-{i}") for i in range(6)]
    leavers = [1, 3, 5]
    held = [
        Session.objects.get(token_hash=secret_hash(b.cookies[f"hillmix_{study.slug}"].value)).pk
        for b in browsers
    ]

    def act(i: int) -> None:
        if i >= len(browsers):  # a leaver's second tab: withdraws after 2 answers
            leaver = leavers[i - len(browsers)]
            deadline = time.monotonic() + 10  # its answers may have been refused: go anyway
            while Judgment.objects.filter(session_id=held[leaver]).count() < 2:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
            tab = Client()
            tab.cookies = browsers[leaver].cookies
            assert tab.post(f"/s/{study.slug}/withdraw/").status_code == 200
            return
        browser = browsers[i]
        for _ in range(20):
            page = browser.get(f"/s/{study.slug}/trial/")
            if page.status_code != 200 or page.json()["trial"] is None:
                return
            reply = post(browser, study, payload(page.json(), 10 * i))
            assert reply.status_code in (201, 403, 409), reply.content
            if reply.status_code != 201:
                assert i in leavers, reply.content
                return

    errors = run_threads(len(browsers) + len(leavers), act)
    assert errors == [], [str(e) for e in errors]
    for leaver in leavers:
        assert Session.objects.get(pk=held[leaver]).withdrawn_at is not None
        assert not Judgment.objects.filter(session_id=held[leaver]).exists()
    assert Judgment.objects.count() > 0
    assert_consistent(study)
