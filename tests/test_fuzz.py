"""Fuzzing: schemathesis over the OpenAPI schema, hypothesis on the judgment endpoint.
No input may cause a 5xx, and nothing may be stored from invalid input."""

import json
import uuid

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error

from elicitation.answers import choice_ids
from elicitation.models import Judgment, Session


def _schema():
    document = SchemaGenerator().get_schema(request=None, public=True)
    schema = schemathesis.openapi.from_dict(json.loads(OpenApiJsonRenderer().render(document)))
    schema.app = get_wsgi_application()
    # Reads only: creating training jobs from random input would start training.
    return schema.include(method="GET")


schema = _schema()
# Deterministic in the suite (the same examples every run, so CI is repeatable); raise
# max_examples or drop derandomize to explore further by hand.
FUZZ = settings(
    derandomize=True,
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)


@pytest.fixture(autouse=True)
def keep_test_connection():
    """Like Django's test client: requests must not close the test's transaction."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def staff_token(db, role_user, make_study):
    make_study("construct")
    user = role_user("fuzzer", "Researcher")
    return Token.objects.create(user=user).key


@schema.parametrize()
@FUZZ
def test_api_never_errors(case, staff_token):
    before = Judgment.objects.count()
    case.call_and_validate(
        headers={"Authorization": f"Token {staff_token}"}, checks=[not_a_server_error]
    )
    assert Judgment.objects.count() == before


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
ENVELOPE_FIELDS = [
    "session",
    "trial_index",
    "idempotency_key",
    "rt_ms",
    "confidence",
    "client_started_at",
    "client_answered_at",
    "response",
]


@pytest.fixture
def participant(make_study, client):
    study = make_study("construct", ask_confidence=True, quiz=[])
    client.get(f"/s/{study.slug}/?PROLIFIC_PID=fuzz")
    client.post(f"/s/{study.slug}/consent/", {"consent_0": "on", "consent_1": "on"})
    client.post(f"/s/{study.slug}/instructions/")
    return study, Session.objects.get(), client


def _valid(session) -> dict:
    start = round(10 * session.trial_order[session.position]["start_lam"])  # grid step
    return {
        "session": session.reference,
        "trial_index": session.position,
        "idempotency_key": str(uuid.uuid4()),
        "rt_ms": 1000,
        "confidence": 50,
        "response": {"start_step": start, "final_step": start, "steps": [start]},
    }


def _post(client, study, body: bytes):
    before = Judgment.objects.count()
    response = client.post(f"/s/{study.slug}/judgments/", body, content_type="application/json")
    assert response.status_code < 500, response.content
    stored = Judgment.objects.count() - before
    assert stored == (1 if response.status_code == 201 else 0), response.status_code
    return response


@FUZZ
@given(body=st.one_of(json_values.map(json.dumps), st.binary(max_size=200)))
def test_judgment_endpoint_survives_arbitrary_bodies(participant, body):
    study, _, client = participant
    _post(client, study, body if isinstance(body, bytes) else body.encode())


@FUZZ
@given(
    field=st.sampled_from(
        ENVELOPE_FIELDS + ["response.start_step", "response.final_step", "response.steps"]
    ),
    value=json_values,
)
def test_judgment_endpoint_with_one_field_replaced(participant, field, value):
    study, session, client = participant
    session.refresh_from_db()
    if session.position >= session.trial_count:
        return
    payload = _valid(session)
    if field.startswith("response."):
        payload["response"][field.split(".", 1)[1]] = value
    else:
        payload[field] = value
    _post(client, study, json.dumps(payload).encode())


# --- Huge, deep and malformed bodies -------------------------------------------------
# Each interface's numeric answer fields; with the envelope's, every number a save reads.
NUMERIC_FIELDS = {
    "construct": ["response.start_step", "response.final_step", "response.steps.0"],
    "select_shuffled": ["response.choice", "response.order_shown.0"],  # opaque ids
    "infer": ["response.slider", "response.confidence"],
    "soft_label": ["response.first_prob", "response.second_prob"],
}
ENVELOPE_NUMBERS = [
    "trial_index",
    "rt_ms",
    "confidence",
    "client_started_at",
    "client_answered_at",
]
DEEP = 5000
# Number literals as they arrive in a body (json.dumps cannot write 5,000-digit ints).
huge_numbers = st.one_of(
    st.sampled_from(
        [
            "1e20",
            "1e308",
            "-1e308",
            "1e400",
            "-1e400",
            "1e-400",
            str(2**63 - 1),
            str(2**63),
            str(2**64),
            "-" + str(2**63 + 1),
            "1" + "0" * 400,
            "9" * 5000,
            "-" + "9" * 5000,
            "1" + "0" * 5000 + ".5",
            "NaN",
            "Infinity",
            "-Infinity",
        ]
    ),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
deep_values = st.sampled_from(
    [
        "[" * DEEP + "]" * DEEP,
        '{"a":' * DEEP + "1" + "}" * DEEP,
        "[" * DEEP,  # unterminated
        '"' + "x" * 50_000 + '"',  # under the size limit, over every field's length
        '"' + "x" * 200_000 + '"',  # over the size limit
        '"\\u0000"',
        '"\\ud800"',  # a lone surrogate
        "[" + ",".join(["1"] * 20_000) + "]",
    ]
)


def _valid_response(study, session) -> dict:
    trial = session.trial_order[session.position]
    if study.interface == "construct":
        start = round(10 * trial["start_lam"])  # grid step
        return {"start_step": start, "final_step": start, "steps": [start]}
    if study.interface == "select_shuffled":
        ids = choice_ids(session.pk, session.position, trial["order"])
        return {"choice": ids[0], "order_shown": ids}
    if study.interface == "infer":
        return {"slider": 26, "confidence": 80, "slider_touched": True, "confidence_touched": True}
    names = study.stimulus_set.dataset.class_names
    return {
        "first_class": names[0],
        "first_prob": 60,
        "second_class": names[1],
        "second_prob": 30,
        "impossible": [],
    }


@pytest.fixture(params=sorted(NUMERIC_FIELDS))
def any_participant(request, make_study, client):
    interface = request.param
    study = make_study(interface, ask_confidence=interface != "infer", quiz=[])
    client.get(f"/s/{study.slug}/?PROLIFIC_PID=fuzz")
    client.post(f"/s/{study.slug}/consent/", {"consent_0": "on", "consent_1": "on"})
    client.post(f"/s/{study.slug}/instructions/")
    return study, Session.objects.get(), client


def _body_with(study, session, field: str, raw: str) -> bytes:
    """A valid answer with `field` (dotted path; a number indexes a list) set to the
    raw JSON text `raw`."""
    payload = {
        "session": session.reference,
        "trial_index": session.position,
        "idempotency_key": str(uuid.uuid4()),
        "rt_ms": 1000,
        "response": _valid_response(study, session),
    }
    if study.ask_confidence:
        payload["confidence"] = 50
    *path, last = field.split(".")
    target = payload
    for step in path:
        target = target[int(step)] if isinstance(target, list) else target[step]
    marker = "__raw_value__"
    if isinstance(target, list):
        target[int(last)] = marker
    else:
        target[last] = marker
    return json.dumps(payload).replace(f'"{marker}"', raw).encode()


def _refused(client, study, body: bytes, content_type: str = "application/json"):
    """Posts `body`: a JSON 4xx, nothing stored."""
    before = Judgment.objects.count()
    response = client.post(f"/s/{study.slug}/judgments/", body, content_type=content_type)
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json", response.content[:300]
    assert "error" in response.json()
    assert Judgment.objects.count() == before
    return response


def test_a_valid_answer_of_each_interface_is_stored(any_participant):
    """The bodies below differ from a stored answer by the one field they replace."""
    study, session, client = any_participant
    body = _body_with(study, session, "rt_ms", "1000")
    response = client.post(f"/s/{study.slug}/judgments/", body, content_type="application/json")
    assert response.status_code == 201, response.content
    assert Judgment.objects.count() == 1


@FUZZ
@given(data=st.data(), raw=huge_numbers)
def test_huge_numbers_in_every_numeric_field_are_refused_or_stored(any_participant, data, raw):
    study, session, client = any_participant
    session.refresh_from_db()
    if session.position >= session.trial_count:
        return
    field = data.draw(st.sampled_from(ENVELOPE_NUMBERS + NUMERIC_FIELDS[study.interface]))
    _post(client, study, _body_with(study, session, field, raw))


@pytest.mark.parametrize("raw", ["1e20", str(2**63), "1e300", "9" * 400, "9" * 5000, "1e400", "-1"])
@pytest.mark.parametrize("field", ["client_started_at", "client_answered_at", "trial_index"])
def test_client_times_and_trial_index_beyond_their_columns_are_refused(participant, field, raw):
    study, session, client = participant
    response = _refused(client, study, _body_with(study, session, field, raw))
    assert response.status_code == 400
    if len(raw) < 4000:
        assert response.json()["error"].startswith(f"{field}:")


@FUZZ
@given(data=st.data(), raw=deep_values)
def test_deep_and_huge_values_anywhere_are_refused(any_participant, data, raw):
    study, session, client = any_participant
    session.refresh_from_db()
    fields = ENVELOPE_FIELDS + NUMERIC_FIELDS[study.interface]
    field = data.draw(st.sampled_from(fields))
    _refused(client, study, _body_with(study, session, field, raw))


@pytest.mark.parametrize(
    "body",
    [
        b"[" * DEEP + b"]" * DEEP,
        b'{"a":' * DEEP + b"1" + b"}" * DEEP,
        b"9" * 5000,
        b'{"rt_ms": ' + b"9" * 5000 + b"}",
        b'{"session": "\xff\xfe\xfd"}',
        b"\xff\xfe\x00{\x00}",
        b'\xef\xbb\xbf{"session": 1}',
        b"{" + b" " * 70_000 + b"}",
        b"",
        b"null",
    ],
    ids=[
        "deep-list",
        "deep-object",
        "5000-digits",
        "5000-digit-field",
        "latin1",
        "utf16-garbage",
        "bom",
        "over-64k",
        "empty",
        "null",
    ],
)
def test_malformed_bodies_get_a_json_4xx(participant, body):
    study, _, client = participant
    _refused(client, study, body)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        "",
    ],
)
def test_a_valid_answer_in_another_content_type_is_refused(participant, content_type):
    study, session, client = participant
    body = json.dumps(_valid(session)).encode()
    assert _refused(client, study, body, content_type).status_code == 415


def _strict_client(client, study):
    """A client that checks CSRF as the server does for a browser, with `client`'s
    cookies and a CSRF cookie from the study page, but no token in its requests."""
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.cookies = client.cookies
    strict.get(f"/s/{study.slug}/")
    assert "csrftoken" in strict.cookies
    return strict


def test_a_save_without_its_csrf_token_gets_a_json_403(participant):
    study, session, client = participant
    strict = _strict_client(client, study)
    body = json.dumps(_valid(session)).encode()
    before = Judgment.objects.count()
    response = strict.post(f"/s/{study.slug}/judgments/", body, content_type="application/json")
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert "reload" in response.json()["error"]
    assert Judgment.objects.count() == before


def test_a_body_django_will_not_read_gets_a_json_400(participant):
    """A form body over DATA_UPLOAD_MAX_MEMORY_SIZE fails while the CSRF check reads it,
    before the view runs."""
    study, _, client = participant
    strict = _strict_client(client, study)
    before = Judgment.objects.count()
    body = "a=" + "x" * (3 * 1024 * 1024)
    response = strict.post(
        f"/s/{study.slug}/judgments/", body, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "error" in response.json()
    assert Judgment.objects.count() == before
