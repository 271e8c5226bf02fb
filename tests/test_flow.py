"""The participant flow through its services and views: steps, saving, rejections."""

import json
import uuid

import pytest
from django.urls import reverse

from elicitation.answers import choice_ids
from elicitation.models import Judgment, Session
from elicitation.services import (
    FlowError,
    RecruiterIds,
    finish_instructions,
    record_judgment,
    start_session,
    submit_feedback,
    submit_quiz,
)


def to_trials(session):
    assert submit_quiz(session, [1])
    session.refresh_from_db()
    assert session.state == Session.State.TRIALS
    return session


def construct_answer(session, index=None, **overrides):
    index = session.position if index is None else index
    # The page answers in grid steps (0 = lam 0.0 ... 10 = lam 1.0), never in lams.
    start = round(10 * session.trial_order[index].get("start_lam", 0.1))
    step = 1 if start < 5 else -1
    steps = [start + k * step for k in range(4)]
    payload = {
        "session": session.reference,
        "trial_index": index,
        "idempotency_key": str(uuid.uuid4()),
        "rt_ms": 1500.0,
        "client_started_at": 1_700_000_000_000,
        "client_answered_at": 1_700_000_001_500,
        "confidence": 70,
        "response": {"start_step": start, "final_step": steps[-1], "steps": steps},
    }
    payload.update(overrides)
    return payload


def test_whole_construct_session(make_study):
    study = make_study("construct", ask_confidence=True)
    session = to_trials(start_session(study, RecruiterIds("PID1", "S1", "X1")))
    assert session.trial_count == 2 + 1  # 4 pairs over 2 conditions, one repeat
    for _ in range(session.trial_count):
        session.refresh_from_db()
        result = record_judgment(session.token, construct_answer(session))
        assert result.created
    session.refresh_from_db()
    assert session.state == Session.State.FEEDBACK
    submit_feedback(session, {"Anything unclear?": "no"})
    session.refresh_from_db()
    assert session.state == Session.State.COMPLETE and session.completed_at
    judgments = list(Judgment.objects.filter(session=session))
    assert len(judgments) == 3 and sum(j.is_repeat for j in judgments) == 1
    assert all(j.confidence == 0.7 and j.rt_ms > 0 for j in judgments)
    first = judgments[0]
    assert first.response["history"][0] == first.response["start_lam"]
    assert first.lam == first.response["final_lam"]
    repeated = [j for j in judgments if j.is_repeat][0]
    assert repeated.pair_id in {j.pair_id for j in judgments if not j.is_repeat}


def test_select_shuffled_records_choice_and_order(make_study):
    study = make_study("select_shuffled")
    session = to_trials(start_session(study, RecruiterIds()))
    order = session.trial_order[0]["order"]
    assert sorted(order) == [round(0.1 * i, 1) for i in range(11)] and order != sorted(order)
    ids = choice_ids(session.pk, 0, order)  # what the page answers with
    payload = construct_answer(
        session, confidence=None, response={"choice": ids[3], "order_shown": ids}
    )
    record_judgment(session.token, payload)
    judgment = Judgment.objects.get()
    assert judgment.lam == order[3] and judgment.response["order_shown"] == order


@pytest.mark.parametrize(
    "change, status, message",
    [
        (lambda s, p: p.update(trial_index=1), 409, "not the next one"),
        (lambda s, p: p["response"].update(final_step=11), 400, "not on the grid"),
        (
            lambda s, p: p["response"].update(
                steps=[p["response"]["start_step"], p["response"]["final_step"]]
            ),
            400,
            "one grid step",
        ),
        (lambda s, p: p["response"].update(start_step=5), 400, "start_step"),
        (lambda s, p: p.update(confidence=101), 400, "confidence"),
        (lambda s, p: p.update(confidence=None), 400, "confidence"),
        (lambda s, p: p.update(rt_ms=0), 400, "rt_ms"),
        (lambda s, p: p.update(rt_ms=-5), 400, "rt_ms"),
        (lambda s, p: p.update(idempotency_key="not-a-uuid"), 400, "idempotency_key"),
        (lambda s, p: p.update(session="someone-else"), 403, "another session"),
        (lambda s, p: p.pop("response"), 400, "response"),
    ],
)
def test_bad_judgments_are_refused_and_store_nothing(make_study, change, status, message):
    study = make_study("construct", ask_confidence=True)
    session = to_trials(start_session(study, RecruiterIds()))
    payload = construct_answer(session)
    change(session, payload)
    with pytest.raises(FlowError, match=message) as err:
        record_judgment(session.token, payload)
    assert err.value.status == status
    session.refresh_from_db()
    assert Judgment.objects.count() == 0 and session.position == 0


def test_replayed_key_is_stored_once(make_study):
    study = make_study("construct", ask_confidence=True)
    session = to_trials(start_session(study, RecruiterIds()))
    payload = construct_answer(session)
    first = record_judgment(session.token, payload)
    again = record_judgment(session.token, payload)
    assert first.created and not again.created
    assert again.judgment.pk == first.judgment.pk
    assert Judgment.objects.count() == 1


def test_a_key_reused_for_the_next_trial_is_refused_and_changes_nothing(make_study):
    study = make_study("construct", ask_confidence=True)
    session = to_trials(start_session(study, RecruiterIds()))
    first = construct_answer(session)
    record_judgment(session.token, first)
    session.refresh_from_db()
    reused = {**construct_answer(session), "idempotency_key": first["idempotency_key"]}
    with pytest.raises(FlowError, match="used for another answer") as err:
        record_judgment(session.token, reused)
    assert err.value.status == 409
    session.refresh_from_db()
    assert Judgment.objects.count() == 1 and session.position == 1
    # The refusal left the connection usable and the session open for a fresh key.
    assert record_judgment(session.token, construct_answer(session)).created


def test_judgments_before_trials_are_refused(make_study):
    session = start_session(make_study("construct", ask_confidence=True), RecruiterIds())
    with pytest.raises(FlowError, match="not open") as err:
        record_judgment(session.token, construct_answer(session, index=0))
    assert err.value.status == 409


def test_wrong_quiz_answer_returns_to_instructions(make_study):
    session = start_session(make_study("construct"), RecruiterIds())
    assert not submit_quiz(session, [0])
    session.refresh_from_db()
    assert session.state == Session.State.INSTRUCTIONS and session.quiz_attempts == 1
    assert submit_quiz(session, [1])
    session.refresh_from_db()
    assert session.quiz_attempts == 2 and [a["passed"] for a in session.quiz_log] == [False, True]


def test_instructions_start_the_trials_only_in_a_study_without_quiz(make_study):
    with_quiz = start_session(make_study("construct"), RecruiterIds())
    with pytest.raises(FlowError, match="quiz") as err:
        finish_instructions(with_quiz)
    assert err.value.status == 409
    with_quiz.refresh_from_db()
    assert with_quiz.state == Session.State.INSTRUCTIONS
    without = start_session(make_study("construct", slug="no-quiz", quiz=[]), RecruiterIds())
    with pytest.raises(FlowError, match="no quiz"):
        submit_quiz(without, [])
    finish_instructions(without)
    without.refresh_from_db()
    assert without.state == Session.State.TRIALS and without.quiz_log == []


def test_same_recruiter_id_resumes_and_never_gets_second_session(make_study):
    study = make_study("construct")
    first = start_session(study, RecruiterIds("PID-9", "ST", "SE"))
    # Resuming takes the whole triple the session started with (a recruiter id alone is
    # no credential); another submission id gets no session, and no second one.
    with pytest.raises(FlowError) as refused:
        start_session(study, RecruiterIds("PID-9", "ST", "OTHER"))
    assert refused.value.status == 403
    again = start_session(study, RecruiterIds("PID-9", "ST", "SE"))
    assert again.pk == first.pk and Session.objects.count() == 1
    assert first.participant.public_id != "PID-9"
    assert first.recruiter_study_id == "ST" and first.recruiter_session_id == "SE"


def test_closed_and_draft_studies_refuse_new_participants(make_study, client):
    study = make_study("construct", status="closed")
    with pytest.raises(FlowError, match="not accepting") as err:
        start_session(study, RecruiterIds())
    assert err.value.status == 403
    response = client.get(reverse("elicitation:study", args=[study.slug]))
    assert response.status_code == 403 and b"has closed" in response.content
    study.status = "draft"
    study.save()
    response = client.get(reverse("elicitation:study", args=[study.slug]))
    assert b"not opened yet" in response.content


def test_sequential_assignment_fills_least_loaded_condition(make_study):
    study = make_study("construct", n_pairs=6, conditions=3)
    sessions = [start_session(study, RecruiterIds(f"P{i}")) for i in range(7)]
    counts = sorted(sum(s.condition_id == c.pk for s in sessions) for c in study.conditions.all())
    assert counts == [2, 2, 3]


def test_stale_sessions_free_their_place(make_study):
    from datetime import timedelta

    from django.utils import timezone

    study = make_study("construct", conditions=2)
    first = start_session(study, RecruiterIds("A"))
    Session.objects.filter(pk=first.pk).update(last_seen_at=timezone.now() - timedelta(hours=3))
    second = start_session(study, RecruiterIds("B"))
    assert second.condition_id == first.condition_id  # the stale one no longer counts


# --- the HTTP layer ------------------------------------------------------------


def enter(client, study, query="?PROLIFIC_PID=pp1&STUDY_ID=st1&SESSION_ID=se1"):
    url = reverse("elicitation:study", args=[study.slug])
    response = client.get(url + query, follow=True)
    assert response.status_code == 200 and b"Consent" in response.content
    assert response.redirect_chain == [(url, 302)]  # the ids leave the address bar at once
    assert b"pp1" not in response.content  # recruiter ids stay out of pages
    return url


def test_showing_a_page_marks_the_session_active_at_most_every_30_seconds(make_study, client):
    from datetime import timedelta

    from django.utils import timezone

    study = make_study("construct")
    url = enter(client, study)
    client.post(
        reverse("elicitation:consent", args=[study.slug]), {"consent_0": "on", "consent_1": "on"}
    )
    hour_ago = timezone.now() - timedelta(hours=1)
    Session.objects.update(last_seen_at=hour_ago)
    client.get(url)
    marked = Session.objects.get().last_seen_at
    assert timezone.now() - marked < timedelta(seconds=5)
    client.get(url)
    assert Session.objects.get().last_seen_at == marked  # seen just now: nothing written


def test_http_flow_and_consent_must_be_complete(make_study, client):
    study = make_study("select_shuffled", feedback_questions=[])
    url = enter(client, study)
    consent = reverse("elicitation:consent", args=[study.slug])
    response = client.post(consent, {"consent_0": "on"})
    assert response.status_code == 400 and Session.objects.count() == 0
    client.post(consent, {"consent_0": "on", "consent_1": "on"})
    session = Session.objects.get()
    assert session.participant.recruiter_pid == "pp1" and session.recruiter_study_id == "st1"
    # The quiz is the instructions page's last screen, and the only way to the trials.
    page = client.get(url)
    assert b'id="instruction' in page.content and b'id="quiz-submit"' in page.content
    client.post(reverse("elicitation:instructions", args=[study.slug]))
    session.refresh_from_db()
    assert session.state == Session.State.INSTRUCTIONS and session.quiz_attempts == 0
    quiz = reverse("elicitation:quiz", args=[study.slug])
    assert b'id="first-trial"' in client.post(quiz, {"q0": "1"}, follow=True).content
    trial = client.get(reverse("elicitation:trial", args=[study.slug])).json()
    assert trial["session"] == session.reference and trial["trial"]["index"] == 0
    assert len(trial["trial"]["images"]) == 11
    save = reverse("elicitation:judgments", args=[study.slug])
    shown = trial["trial"]
    for _ in range(trial["trial"]["total"]):
        ids = [im["choice"] for im in shown["images"]]
        body = {
            "session": session.reference,
            "trial_index": shown["index"],
            "idempotency_key": str(uuid.uuid4()),
            "rt_ms": 900,
            "response": {"choice": ids[0], "order_shown": ids},
        }
        response = client.post(save, json.dumps(body), content_type="application/json")
        assert response.status_code == 201, response.content
        # The reply carries the next trial: the same one a fresh fetch shows.
        reply = response.json()
        assert reply == {
            **reply,
            **client.get(reverse("elicitation:trial", args=[study.slug])).json(),
        }
        shown = reply["trial"]
    assert reply["done"] and reply["finished"] and shown is None
    page = client.get(url)
    assert b"DONE-123" in page.content
    # Coming back later, even from another browser with the same PID: the completion page.
    from django.test import Client

    other = Client()
    assert b"DONE-123" in other.get(url + "?PROLIFIC_PID=pp1", follow=True).content
    assert Session.objects.count() == 1


def test_consent_sent_with_the_quiz_answers_starts_the_trials_in_one_request(make_study):
    from django.test import Client

    study = make_study("construct")
    consent = reverse("elicitation:consent", args=[study.slug])
    ticked = {"consent_0": "on", "consent_1": "on"}
    right, wrong = Client(), Client()
    page = right.post(consent, {**ticked, "q0": "1"}, follow=True)
    assert b'id="first-trial"' in page.content
    assert page.redirect_chain == [(reverse("elicitation:study", args=[study.slug]), 302)]
    page = wrong.post(consent, {**ticked, "q0": "0"}, follow=True)
    assert b"read the instructions again" in page.content and b'id="quiz-submit"' in page.content
    sessions = Session.objects.order_by("pk")
    assert [(s.state, s.quiz_attempts) for s in sessions] == [("trials", 1), ("instructions", 1)]
    assert [[(a["answers"], a["passed"]) for a in s.quiz_log] for s in sessions] == [
        [([1], True)],
        [([0], False)],
    ]
    # Without answers (the quiz not reached): the instructions and quiz, nothing graded.
    Client().post(consent, ticked)
    assert Session.objects.order_by("pk").last().quiz_attempts == 0


def test_consent_in_a_study_without_quiz_goes_straight_to_the_trials(make_study, client):
    study = make_study("construct", quiz=[])
    consent = reverse("elicitation:consent", args=[study.slug])
    page = client.post(consent, {"consent_0": "on", "consent_1": "on"}, follow=True)
    assert b'id="first-trial"' in page.content
    assert Session.objects.get().state == Session.State.TRIALS


def test_http_rejects_other_browsers_and_bad_json(make_study, client):
    study = make_study("construct")
    save = reverse("elicitation:judgments", args=[study.slug])
    response = client.post(save, "{}", content_type="application/json")
    assert response.status_code == 403
    enter(client, study)
    client.post(
        reverse("elicitation:consent", args=[study.slug]), {"consent_0": "on", "consent_1": "on"}
    )
    response = client.post(save, "not json", content_type="application/json")
    assert response.status_code == 400 and "JSON" in response.json()["error"]
    assert Judgment.objects.count() == 0


def test_participant_cannot_touch_another_session(make_study, client):
    from django.test import Client

    study = make_study("construct", ask_confidence=True)
    victim = to_trials(start_session(study, RecruiterIds("victim")))
    attacker = Client()
    enter(attacker, study, "?PROLIFIC_PID=attacker")
    attacker.post(
        reverse("elicitation:consent", args=[study.slug]), {"consent_0": "on", "consent_1": "on"}
    )
    payload = construct_answer(victim)
    response = attacker.post(
        reverse("elicitation:judgments", args=[study.slug]),
        json.dumps(payload),
        content_type="application/json",
    )
    assert response.status_code == 403
    assert Judgment.objects.count() == 0


def test_conditions_wait_for_stimuli(demo_dataset):
    from datasets.services import create_stimulus_set
    from elicitation.models import Study
    from elicitation.services import build_conditions

    pending = create_stimulus_set(name="pending", dataset=demo_dataset, kind="grid", n_pairs=2)
    study = Study.objects.create(
        slug="early", title="Early", interface="construct", stimulus_set=pending, consent_text="c"
    )
    with pytest.raises(FlowError, match="is pending"):
        build_conditions(study)
    assert study.conditions.count() == 0


def test_control_characters_in_recruiter_ids_and_feedback_are_dropped(make_study, client):
    study = make_study("construct", quiz=[], feedback_questions=["Anything?"], repeat_trials=0)
    client.get(f"/s/{study.slug}/?PROLIFIC_PID=ab%00c%01d&STUDY_ID=s%00")
    client.post(f"/s/{study.slug}/consent/", {"consent_0": "on", "consent_1": "on"})
    session = Session.objects.get()
    assert session.participant.recruiter_pid == "abcd" and session.recruiter_study_id == "s"
    Session.objects.filter(pk=session.pk).update(state="feedback")
    client.post(f"/s/{study.slug}/feedback/", {"f0": "fine\x00\nthanks"})
    assert Session.objects.get().feedback == {"Anything?": "fine\nthanks"}


def test_study_edits_reach_sessions_already_running(make_study, client):
    """Trial pages read the study from a per-process cache; saving the study renews it."""
    study = make_study("construct", ask_confidence=False)
    session = to_trials(start_session(study, RecruiterIds("edit")))
    client.cookies[f"hillmix_{study.slug}"] = session.token
    trial_url = reverse("elicitation:trial", args=[study.slug])
    assert client.get(trial_url).json()["trial"]["ask_confidence"] is False
    study.ask_confidence = True
    study.save()
    assert client.get(trial_url).json()["trial"]["ask_confidence"] is True
    answer = construct_answer(session)
    answer.pop("confidence")
    response = client.post(
        reverse("elicitation:judgments", args=[study.slug]),
        json.dumps(answer),
        content_type="application/json",
    )
    assert response.status_code == 400 and "asks for a confidence" in response.json()["error"]


# --- saves from a remembered session (no read before the write) --------------------


def test_a_remembered_session_is_saved_without_reading_it(make_study):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    study = make_study("construct", ask_confidence=True)
    session = to_trials(start_session(study, RecruiterIds("known")))
    record_judgment(session.token, construct_answer(session), study.slug)  # reads, remembers
    session.refresh_from_db()
    with CaptureQueriesContext(connection) as queries:
        result = record_judgment(session.token, construct_answer(session), study.slug)
    assert result.created and result.live.session.position == 2
    assert not [q for q in queries if q["sql"].lstrip().upper().startswith("SELECT")]
    assert list(Judgment.objects.values_list("trial_index", flat=True).order_by("trial_index")) == [
        0,
        1,
    ]


@pytest.mark.django_db(transaction=True)
def test_on_postgresql_answers_are_saved_by_a_statement_prepared_per_connection(make_study):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's (set DATABASE_URL)")
    study = make_study("construct", ask_confidence=True)
    session = to_trials(start_session(study, RecruiterIds("prepared")))
    # A new connection (as after a database restart) prepares it again.
    for new_connection in (True, False, True):
        if new_connection:
            connection.close()
        session.refresh_from_db()
        with CaptureQueriesContext(connection) as queries:
            assert record_judgment(session.token, construct_answer(session), study.slug).created
        sql = [q["sql"].split()[0] for q in queries]
        assert "EXECUTE" in sql and ("PREPARE" in sql) == new_connection
    assert Judgment.objects.filter(session=session).count() == 3


def test_a_study_edit_reaches_a_remembered_session_at_its_next_save(make_study):
    study = make_study("construct", ask_confidence=False)
    session = to_trials(start_session(study, RecruiterIds("edited")))
    answer = construct_answer(session)
    answer.pop("confidence")
    record_judgment(session.token, answer, study.slug)  # remembered with the old study
    study.ask_confidence = True
    study.save()
    session.refresh_from_db()
    answer = construct_answer(session)
    answer.pop("confidence")
    with pytest.raises(FlowError, match="asks for a confidence"):
        record_judgment(session.token, answer, study.slug)
    assert Judgment.objects.count() == 1
    assert record_judgment(session.token, construct_answer(session), study.slug).created


def test_a_remembered_session_still_refuses_what_the_session_refuses(make_study):
    study = make_study("construct", ask_confidence=True)
    session = to_trials(start_session(study, RecruiterIds("refused")))
    first = construct_answer(session)
    stored = record_judgment(session.token, first, study.slug).judgment
    assert record_judgment(session.token, first, study.slug).judgment.pk == stored.pk  # a retry
    with pytest.raises(FlowError, match="not the next one") as skipped:
        record_judgment(session.token, construct_answer(session, index=2), study.slug)
    assert skipped.value.status == 409
    Session.objects.filter(pk=session.pk).update(state=Session.State.FEEDBACK)
    session.refresh_from_db()
    with pytest.raises(FlowError, match="Trials are not open"):
        record_judgment(session.token, construct_answer(session, index=1), study.slug)
    assert Judgment.objects.count() == 1


def test_a_study_edit_between_the_read_and_the_write_rechecks_and_stores(make_study, monkeypatch):
    from elicitation.services import judgments as services  # where the save path lives

    study = make_study("construct", ask_confidence=True)
    session = to_trials(start_session(study, RecruiterIds("raced")))  # not yet remembered
    checks = []
    read_answer = services._read_answer

    def edited_during_the_first_check(live, envelope):
        checks.append(live.catalog.version)
        if len(checks) == 1:
            study.save()  # a researcher saves the study meanwhile
        return read_answer(live, envelope)

    monkeypatch.setattr(services, "_read_answer", edited_during_the_first_check)
    result = record_judgment(session.token, construct_answer(session), study.slug)
    assert result.created and result.judgment.trial_index == 0
    assert len(checks) == 2 and checks[0] != checks[1]  # checked again, against the edit
    assert Judgment.objects.count() == 1
