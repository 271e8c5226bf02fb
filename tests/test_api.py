"""The researcher REST API: who may see what, filters, pagination, exports."""

import csv
import io
import json
import uuid

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.authtoken.models import Token

from elicitation.models import Session
from elicitation.services import RecruiterIds, record_judgment, start_session
from tests.test_flow import construct_answer, to_trials

RESEARCHER_ENDPOINTS = [
    "/api/",
    "/api/studies/",
    "/api/studies/{slug}/",
    "/api/studies/{slug}/export/",
    "/api/studies/{slug}/export/hmix/",
    "/api/studies/{slug}/aggregates/stimuli/",
    "/api/studies/{slug}/aggregates/confidence-by-lam/",
    "/api/studies/{slug}/aggregates/class-pairs/",
    "/api/conditions/",
    "/api/stimuli/",
    "/api/participants/",
    "/api/judgments/",
    "/api/judgments/export/",
    "/api/aggregates/midpoints/",
    "/api/schema/",
    "/api/docs/",
]


@pytest.fixture
def answered_study(make_study):
    """A Construct study with two participants who answered their first trials."""
    study = make_study("construct", ask_confidence=True, n_pairs=4)
    sessions = []
    for pid in ("pid-alice", "pid-bob"):
        session = to_trials(start_session(study, RecruiterIds(pid, "prolific-study", f"s-{pid}")))
        for _ in range(2):
            session.refresh_from_db()
            record_judgment(session.token, construct_answer(session))
        sessions.append(session)
    return study, sessions


def urls(study):
    return [u.format(slug=study.slug) for u in RESEARCHER_ENDPOINTS]


def test_anonymous_and_participants_are_refused_everywhere(answered_study, client):
    study, _ = answered_study
    participant = Client()
    participant.get(f"/s/{study.slug}/?PROLIFIC_PID=someone")
    participant.post(f"/s/{study.slug}/consent/", {"consent_0": "on", "consent_1": "on"})
    assert Session.objects.filter(participant__recruiter_pid="someone").exists()
    for url in urls(study):
        assert client.get(url).status_code in (401, 403), url
        assert participant.get(url).status_code in (401, 403), url
        assert client.post(url, {}).status_code in (401, 403, 405), url


def test_non_staff_user_with_token_is_refused(answered_study, django_user_model):
    study, _ = answered_study
    user = django_user_model.objects.create_user("someone", password="pw")
    token = Token.objects.create(user=user)
    api = Client(HTTP_AUTHORIZATION=f"Token {token.key}")
    for url in urls(study):
        assert api.get(url).status_code == 403, url


def test_researcher_token_reads_everything(answered_study, role_user):
    study, _ = answered_study
    user = role_user("res", "Analyst")
    token = Client().post("/api/token/", {"username": "res", "password": "pw"}).json()["token"]
    api = Client(HTTP_AUTHORIZATION=f"Token {token}")
    for url in urls(study):
        assert api.get(url).status_code == 200, url
    assert user.auth_token.key == token


@pytest.fixture
def researcher(client, role_user):
    user = role_user("res", "Analyst")
    client.force_login(user)
    return user


def test_recruiter_ids_need_the_permission(answered_study, client, researcher):
    body = json.dumps(client.get("/api/participants/").json())
    assert "pid-alice" not in body and "prolific-study" not in body
    export = b"".join(client.get("/api/judgments/export/").streaming_content)
    assert b"pid-alice" not in export
    researcher.user_permissions.add(Permission.objects.get(codename="view_recruiter_ids"))
    researcher = type(researcher).objects.get(pk=researcher.pk)  # drop the permission cache
    client.force_login(researcher)
    results = client.get("/api/participants/").json()["results"]
    assert {p["recruiter_pid"] for p in results} == {"pid-alice", "pid-bob"}
    assert results[0]["sessions"][0]["recruiter_study_id"] == "prolific-study"


def test_judgment_filters_and_cursor_pagination(answered_study, client, researcher):
    study, sessions = answered_study
    alice = sessions[0].participant.public_id
    data = client.get("/api/judgments/", {"study": study.slug, "page_size": 3}).json()
    assert len(data["results"]) == 3 and data["next"]
    rest = client.get(data["next"]).json()
    assert len(rest["results"]) == 1 and rest["next"] is None
    ids = [j["id"] for j in data["results"] + rest["results"]]
    assert ids == sorted(ids)
    only_alice = client.get("/api/judgments/", {"participant": alice}).json()["results"]
    assert {j["participant"] for j in only_alice} == {alice} and len(only_alice) == 2
    assert client.get("/api/judgments/", {"interface": "infer"}).json()["results"] == []
    assert client.get("/api/judgments/", {"repeat": "true"}).json()["results"] == []
    condition = sessions[1].condition.name
    by_condition = client.get("/api/judgments/", {"condition": condition}).json()["results"]
    assert {j["condition"] for j in by_condition} == {condition}
    future = client.get("/api/judgments/", {"since": "2999-01-01T00:00:00Z"}).json()
    assert future["results"] == []
    Session.objects.filter(pk=sessions[0].pk).update(excluded=True)
    kept = client.get("/api/judgments/", {"excluded": "false"}).json()["results"]
    assert {j["participant"] for j in kept} == {sessions[1].participant.public_id}
    response = client.get("/api/judgments/", {"since": "not-a-date"})
    assert response.status_code == 400
    # Valid ISO 8601 that PostgreSQL cannot take as is (found by schemathesis).
    odd = client.get("/api/judgments/", {"until": "0355-07-25T17:17:45+16:23"})
    assert odd.status_code == 200 and odd.json()["results"] == []
    edge = client.get("/api/judgments/", {"since": "0001-01-01T00:00:00+16:00"})
    assert edge.status_code == 400
    # A boolean filter's unknown value is a 400 naming it, not every row (django-filter's
    # own BooleanFilter read it as absent); list and export alike.
    for url in ("/api/judgments/", "/api/judgments/export/"):
        for name in ("repeat", "excluded"):
            junk = client.get(url, {name: "banana"})
            assert junk.status_code == 400 and name in junk.json(), (url, name)
    assert client.get("/api/judgments/", {"repeat": "0"}).json()["results"]
    assert client.get("/api/judgments/", {"repeat": ""}).status_code == 200


def test_study_export_csv_and_json_stream(answered_study, client, researcher):
    study, _ = answered_study
    response = client.get(f"/api/studies/{study.slug}/export/")
    assert response.streaming and response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 4
    assert json.loads(rows[0]["response"])["start_lam"] in (0.1, 0.9)
    response = client.get(f"/api/studies/{study.slug}/export/", {"as": "json"})
    records = json.loads(b"".join(response.streaming_content))
    assert len(records) == 4 and records[0]["confidence"] == 0.7
    assert client.get(f"/api/studies/{study.slug}/export/", {"as": "xml"}).status_code == 400


def test_openapi_schema_lists_the_endpoints(client, researcher, db):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    for path in [
        "/api/judgments/",
        "/api/studies/{slug}/aggregates/stimuli/",
        "/api/judgments/export/",
    ]:
        assert path in schema["paths"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def test_participant_cannot_read_another_participants_trial(answered_study):
    study, sessions = answered_study
    intruder = Client()
    intruder.get(f"/s/{study.slug}/?PROLIFIC_PID=intruder")
    intruder.post(f"/s/{study.slug}/consent/", {"consent_0": "on", "consent_1": "on"})
    trial = intruder.get(f"/s/{study.slug}/trial/").json()
    assert trial["session"] not in {s.token for s in sessions}
    payload = construct_answer(sessions[0])
    payload["idempotency_key"] = str(uuid.uuid4())
    response = intruder.post(
        f"/s/{study.slug}/judgments/", json.dumps(payload), content_type="application/json"
    )
    assert response.status_code == 403


def test_nul_bytes_in_parameters_are_a_400(client, researcher, db):
    # Found by schemathesis: PostgreSQL cannot store or compare NUL characters.
    assert client.get("/api/aggregates/midpoints/", {"study": "x\x00y"}).status_code == 400
    assert client.get("/api/judgments/", {"study": "x\x00y"}).status_code in (200, 400)
