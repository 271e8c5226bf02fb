"""The trial page's server side at its edges: the Infer slider's start (served, checked,
recorded) and the log of images that did not load."""

import json
import uuid

import pytest
from django.test import Client
from django.urls import reverse

from elicitation.models import ImageLoadFailure, Judgment, Session
from elicitation.services import MAX_IMAGE_FAILURES_PER_SESSION


def in_trials(study) -> Client:
    """A browser whose participant consented and passed the quiz in one request."""
    client = Client()
    consent = reverse("elicitation:consent", args=[study.slug])
    client.post(consent, {"consent_0": "on", "consent_1": "on", "q0": "1"})
    assert Session.objects.get().state == Session.State.TRIALS
    return client


def save(client, study, trial_body, response):
    body = {
        "session": trial_body["session"],
        "trial_index": trial_body["trial"]["index"],
        "idempotency_key": str(uuid.uuid4()),
        "rt_ms": 1200.0,
        "response": response,
    }
    url = reverse("elicitation:judgments", args=[study.slug])
    return client.post(url, json.dumps(body), content_type="application/json")


INFER = {"slider": 40, "confidence": 70, "slider_touched": True, "confidence_touched": True}


@pytest.mark.django_db
def test_random_slider_start_is_served_checked_and_recorded(make_study):
    study = make_study("infer", n_pairs=4, conditions=1, slider_start="random")
    client = in_trials(study)
    session = Session.objects.get()
    starts = [spec["slider_start"] for spec in session.trial_order]
    assert all(0 <= s <= 100 for s in starts) and len(set(starts)) > 1
    trial_url = reverse("elicitation:trial", args=[study.slug])
    shown = client.get(trial_url).json()
    assert shown["trial"]["slider_start"] == starts[0]
    wrong = (starts[0] + 1) % 101
    refused = save(client, study, shown, {**INFER, "slider_start": wrong})
    assert refused.status_code == 400 and "slider_start" in refused.json()["error"]
    assert Judgment.objects.count() == 0
    assert save(client, study, shown, {**INFER, "slider_start": starts[0]}).status_code == 201
    shown = client.get(trial_url).json()
    # A page that does not say where the slider started: the served start is recorded.
    assert save(client, study, shown, INFER).status_code == 201
    recorded = [j.response["slider_start"] for j in Judgment.objects.order_by("trial_index")]
    assert recorded == starts[:2]


@pytest.mark.django_db
def test_fixed_slider_start_is_the_middle(make_study):
    study = make_study("infer", n_pairs=2)
    in_trials(study)
    assert {spec["slider_start"] for spec in Session.objects.get().trial_order} == {50}


@pytest.mark.django_db
def test_image_failures_are_logged_for_the_current_trial_only(make_study, admin_client):
    study = make_study("select_shuffled")
    client = in_trials(study)
    session = Session.objects.get()
    url = reverse("elicitation:image_failures", args=[study.slug])

    def post(body, by=client, **extra):
        return by.post(url, json.dumps(body), content_type="application/json", **extra)

    ok = {"trial_index": 0, "failed": 2, "attempts": 3}
    assert post(ok, by=Client()).status_code == 403  # no session in that browser
    assert post({**ok, "trial_index": 1}).status_code == 409  # not the trial shown now
    for bad in ({**ok, "failed": 0}, {**ok, "attempts": 99}, {**ok, "trial_index": "x"}, {}):
        assert post(bad).status_code == 400
    assert client.post(url, "not json", content_type="application/json").status_code == 400
    assert client.get(url).status_code == 405
    assert ImageLoadFailure.objects.count() == 0
    assert post(ok).status_code == 201
    failure = ImageLoadFailure.objects.get()
    assert (failure.session, failure.trial_index, failure.failed) == (session, 0, 2)
    session.refresh_from_db()
    assert session.position == 0 and Judgment.objects.count() == 0  # nothing answered
    ImageLoadFailure.objects.bulk_create(
        ImageLoadFailure(session=session, trial_index=0, failed=1, attempts=3)
        for _ in range(MAX_IMAGE_FAILURES_PER_SESSION - 1)
    )
    assert post(ok).status_code == 429
    assert ImageLoadFailure.objects.count() == MAX_IMAGE_FAILURES_PER_SESSION
    # The researcher sees them on the session's admin page.
    page = admin_client.get(reverse("admin:elicitation_session_change", args=[session.pk]))
    assert page.status_code == 200 and b"images that did not load" in page.content.lower()
