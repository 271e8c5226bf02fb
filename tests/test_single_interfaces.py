"""Infer mixing factor and Soft categorical label: stored payloads and rejections."""

import uuid

import pytest

from elicitation.models import Judgment
from elicitation.services import FlowError, RecruiterIds, record_judgment, start_session
from tests.test_flow import to_trials


def envelope(session, response, **extra):
    payload = {
        "session": session.reference,
        "trial_index": session.position,
        "idempotency_key": str(uuid.uuid4()),
        "rt_ms": 2100.0,
        "response": response,
    }
    payload.update(extra)
    return payload


INFER_OK = {"slider": 26, "confidence": 80, "slider_touched": True, "confidence_touched": True}


def test_infer_stores_raw_sliders_and_derived_values(make_study):
    session = to_trials(start_session(make_study("infer", n_pairs=2), RecruiterIds()))
    assert session.trial_count == 2 * 5 // 2 + 1  # 10 stimuli over 2 conditions, one repeat
    record_judgment(session.token, envelope(session, INFER_OK))
    judgment = Judgment.objects.get()
    assert judgment.response["slider"] == 26 and judgment.response["confidence"] == 80
    assert judgment.lam == pytest.approx(0.74) and judgment.confidence == pytest.approx(0.8)
    assert judgment.stimulus is not None and judgment.interface == "infer"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"slider_touched": False}, "both sliders must be moved"),
        ({"confidence_touched": False}, "both sliders must be moved"),
        ({"slider": 101}, "slider"),
        ({"slider": -1}, "slider"),
        ({"confidence": 101}, "confidence"),
        ({"slider": "half"}, "slider"),
    ],
)
def test_infer_rejections(make_study, change, message):
    session = to_trials(start_session(make_study("infer", n_pairs=2), RecruiterIds()))
    with pytest.raises(FlowError, match=message):
        record_judgment(session.token, envelope(session, {**INFER_OK, **change}))
    assert Judgment.objects.count() == 0


def test_infer_refuses_a_separate_confidence(make_study):
    session = to_trials(start_session(make_study("infer", n_pairs=2), RecruiterIds()))
    with pytest.raises(FlowError, match="separate confidence"):
        record_judgment(session.token, envelope(session, INFER_OK, confidence=50))
    assert Judgment.objects.count() == 0


SOFT_OK = {
    "first_class": "Three",
    "first_prob": 60,
    "second_class": "Five",
    "second_prob": 20,
    "impossible": ["Zero", "One"],
}


def test_soft_label_stores_answers_and_top2_clamp(make_study):
    study = make_study("soft_label", n_pairs=2, soft_label_gamma=0.2)
    session = to_trials(start_session(study, RecruiterIds()))
    record_judgment(session.token, envelope(session, SOFT_OK))
    judgment = Judgment.objects.get()
    label = judgment.response["soft_label"]
    assert judgment.response["first_class"] == "Three" and judgment.response["gamma"] == 0.2
    assert label[3] == pytest.approx(0.6) and label[5] == pytest.approx(0.2)
    assert label[0] == label[1] == 0 and label[2] == pytest.approx(0.2 / 6)
    assert sum(label) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"second_class": "Three"}, "must differ"),
        ({"impossible": ["Three"]}, "cannot also be impossible"),
        ({"impossible": ["Five"]}, "cannot also be impossible"),
        ({"first_class": "Zebra"}, "unknown classes"),
        ({"impossible": ["Unicorn"]}, "unknown classes"),
        ({"first_prob": 120}, "first_prob"),
        ({"first_prob": "lots"}, "first_prob"),
        ({"first_prob": 0}, "probability > 0"),
        ({"second_prob": -3}, "second_prob"),
        ({"second_prob": None}, "second class a probability"),
        ({"second_class": None, "second_prob": 30}, "needs a second class"),
        ({"second_prob": 70}, "more probable than the first"),
        ({"impossible": ["Zero", "Zero"]}, "listed twice"),
    ],
)
def test_soft_label_rejections(make_study, change, message):
    session = to_trials(start_session(make_study("soft_label", n_pairs=2), RecruiterIds()))
    with pytest.raises(FlowError, match=message):
        record_judgment(session.token, envelope(session, {**SOFT_OK, **change}))
    assert Judgment.objects.count() == 0
