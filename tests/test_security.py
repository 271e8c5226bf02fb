"""Security: CSRF, cookie flags, logins, rate limits, recruiter ids, roles x endpoints."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from elicitation.models import Judgment, Session, secret_hash
from tests.test_flow import construct_answer

ROOT = Path(__file__).resolve().parent.parent


def consent(client, study, **extra):
    return client.post(f"/s/{study.slug}/consent/", {"consent_0": "on", "consent_1": "on"}, **extra)


def test_participant_forms_and_json_need_csrf(make_study):
    study = make_study("construct", ask_confidence=True, quiz=[])
    browser = Client(enforce_csrf_checks=True)
    page = browser.get(f"/s/{study.slug}/")
    assert (
        browser.post(
            f"/s/{study.slug}/consent/", {"consent_0": "on", "consent_1": "on"}
        ).status_code
        == 403
    )
    assert Session.objects.count() == 0
    token = page.cookies["csrftoken"].value
    response = browser.post(
        f"/s/{study.slug}/consent/",
        {"consent_0": "on", "consent_1": "on", "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302 and Session.objects.count() == 1
    browser.post(f"/s/{study.slug}/instructions/", {"csrfmiddlewaretoken": token})
    session = Session.objects.get()
    payload = json.dumps(construct_answer(session))
    refused = browser.post(f"/s/{study.slug}/judgments/", payload, content_type="application/json")
    assert refused.status_code == 403 and Judgment.objects.count() == 0
    accepted = browser.post(
        f"/s/{study.slug}/judgments/",
        payload,
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert accepted.status_code == 201 and Judgment.objects.count() == 1


def test_cookies_are_secure_when_debug_is_off(tmp_path):
    script = (
        "import django, json\n"
        "django.setup()\n"
        "from django.conf import settings\n"
        "from django.test import Client\n"
        # Over HTTPS: with DEBUG off a plain-HTTP request is only redirected there.
        "r = Client().get('/admin/login/', secure=True)\n"
        "c = r.cookies['csrftoken']\n"
        "print(json.dumps({'session_secure': settings.SESSION_COOKIE_SECURE,"
        " 'csrf_secure': settings.CSRF_COOKIE_SECURE, 'httponly': settings.SESSION_COOKIE_HTTPONLY,"
        " 'cookie_secure': bool(c['secure']), 'samesite': c['samesite'],"
        " 'hsts': settings.SECURE_HSTS_SECONDS, 'frame': r.headers.get('X-Frame-Options'),"
        " 'nosniff': r.headers.get('X-Content-Type-Options')}))\n"
    )
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": "x" * 50,
        "ALLOWED_HOSTS": "testserver",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db'}",
        "DJANGO_SETTINGS_MODULE": "hillmix_site.settings",
    }
    env.pop("REDIS_URL", None)
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
        check=True,
    )
    flags = json.loads(out.stdout.strip().splitlines()[-1])
    assert flags["session_secure"] and flags["csrf_secure"] and flags["httponly"]
    assert flags["cookie_secure"] and flags["samesite"] == "Lax" and flags["hsts"] > 0
    assert flags["frame"] == "DENY" and flags["nosniff"] == "nosniff"
    insecure = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**env, "SECRET_KEY": ""},
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert insecure.returncode != 0 and "SECRET_KEY" in insecure.stderr


def test_participant_cookie_is_flagged_and_scoped_to_its_study(make_study, client, settings):
    settings.SESSION_COOKIE_SECURE = True
    study, other = make_study("construct", slug="one"), make_study("construct", slug="two")
    client.get(f"/s/{study.slug}/")
    client.post(f"/s/{study.slug}/consent/", {"consent_0": "on", "consent_1": "on"})
    session = Session.objects.get()
    cookie = client.cookies[f"hillmix_{study.slug}"]
    assert secret_hash(cookie.value) == session.token_hash  # the database keeps its hash
    assert cookie["path"] == f"/s/{study.slug}/"
    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Lax"
    # The token opens its own study only, and a made-up one opens nothing.
    client.cookies[f"hillmix_{other.slug}"] = cookie.value
    assert client.get(f"/s/{other.slug}/trial/").status_code == 403
    client.cookies[f"hillmix_{study.slug}"] = "made-up"
    assert client.get(f"/s/{study.slug}/trial/").status_code == 403


def test_recruiter_ids_wait_for_consent_in_a_signed_scoped_cookie(make_study, settings):
    settings.SESSION_COOKIE_SECURE = True
    study = make_study("construct")
    entry = f"/s/{study.slug}/?PROLIFIC_PID=pid-1&STUDY_ID=st-1&SESSION_ID=se-1"
    browser = Client()
    browser.get(entry)
    held = browser.cookies[f"hillmix_{study.slug}_entry"]
    assert held["path"] == f"/s/{study.slug}/" and held["httponly"] and held["secure"]
    # A forged cookie is ignored: the session starts without recruiter ids.
    forger = Client()
    forger.get(entry)
    forger.cookies[f"hillmix_{study.slug}_entry"] = held.value + "x"
    assert consent(forger, study).status_code == 302
    assert Session.objects.get().participant.recruiter_pid is None
    # The genuine one carries the ids into the session and is then dropped.
    assert consent(browser, study).status_code == 302
    session = Session.objects.get(participant__recruiter_pid="pid-1")
    assert (session.recruiter_study_id, session.recruiter_session_id) == ("st-1", "se-1")
    assert browser.cookies[f"hillmix_{study.slug}_entry"].value == ""


def test_session_starts_are_rate_limited_per_address(make_study, settings):
    settings.HILLMIX_SESSION_STARTS_PER_MINUTE = 3
    study = make_study("construct")
    for _ in range(3):
        browser = Client(REMOTE_ADDR="10.1.2.3")
        browser.get(f"/s/{study.slug}/")
        assert consent(browser, study).status_code == 302
    crowded = Client(REMOTE_ADDR="10.1.2.3")
    crowded.get(f"/s/{study.slug}/")
    response = consent(crowded, study)
    assert response.status_code == 429 and b"wait a minute" in response.content
    assert Session.objects.count() == 3
    elsewhere = Client(REMOTE_ADDR="10.9.9.9")
    elsewhere.get(f"/s/{study.slug}/")
    assert consent(elsewhere, study).status_code == 302
    assert "10.1.2.3" not in str(list(Session.objects.values_list("start_address", flat=True)))


def test_deployed_access_log_leaves_out_query_strings(tmp_path):
    """gunicorn as deployed (gunicorn.conf.py) logs requests without recruiter ids."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "WEB_BIND": f"127.0.0.1:{port}",
        "WEB_WORKERS": "1",
        "DEBUG": "false",
        "SECRET_KEY": "x" * 50,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_COOKIES": "false",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db'}",
        "DJANGO_SETTINGS_MODULE": "hillmix_site.settings",
    }
    log = tmp_path / "access.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "hillmix_site.wsgi"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}/no-such-page/?PROLIFIC_PID=PID-SECRET-7&STUDY_ID=ST-SECRET"
        deadline = time.monotonic() + 60
        while "no-such-page" not in log.read_text() and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url, timeout=5)
            except urllib.error.HTTPError as error:
                assert error.code == 404
            except OSError:
                time.sleep(0.3)  # not listening yet
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    text = log.read_text()
    assert '"GET /no-such-page/" 404' in text
    assert "SECRET" not in text and "PROLIFIC_PID" not in text


def test_recruiter_ids_stay_out_of_pages_logs_and_default_exports(make_study, caplog, admin_client):
    pid, prolific_study, prolific_session = "PID-SECRET-42", "ST-SECRET", "SE-SECRET"
    secrets = [pid, prolific_study, prolific_session]
    study = make_study("select_shuffled", quiz=[], feedback_questions=["Anything?"])
    browser = Client()
    pages = []
    with caplog.at_level(logging.DEBUG):
        first = browser.get(
            f"/s/{study.slug}/?PROLIFIC_PID={pid}&STUDY_ID={prolific_study}"
            f"&SESSION_ID={prolific_session}",
            follow=True,
        )
        pages.append(first.content)
        pages.append(consent(browser, study, follow=True).content)
        pages.append(browser.post(f"/s/{study.slug}/instructions/", follow=True).content)
        session = Session.objects.get()
        for _ in range(session.trial_count):
            trial = browser.get(f"/s/{study.slug}/trial/")
            pages.append(trial.content)
            shown = trial.json()["trial"]
            ids = [im["choice"] for im in shown["images"]]
            answer = {
                "session": session.reference,
                "trial_index": shown["index"],
                "idempotency_key": str(uuid.uuid4()),
                "rt_ms": 700,
                "response": {"choice": ids[0], "order_shown": ids},
            }
            pages.append(
                browser.post(
                    f"/s/{study.slug}/judgments/",
                    json.dumps(answer),
                    content_type="application/json",
                ).content
            )
        pages.append(browser.post(f"/s/{study.slug}/feedback/", {"f0": "no"}, follow=True).content)
        browser.get(f"/s/{study.slug}/nonexistent/")  # a logged 404
        exports = [
            admin_client.get(f"/api/studies/{study.slug}/export/"),
            admin_client.get(f"/api/studies/{study.slug}/export/", {"as": "json"}),
            admin_client.get(f"/api/studies/{study.slug}/export/hmix/"),
            admin_client.get("/api/judgments/export/"),
        ]
    assert Session.objects.get().participant.recruiter_pid == pid  # kept, for payment
    assert b"Thank you" in pages[-1]
    for content in pages + [b"".join(e.streaming_content) for e in exports]:
        for secret in secrets:
            assert secret.encode() not in content
    for secret in secrets:
        assert secret not in caplog.text
    judgments = admin_client.get("/api/judgments/").content
    assert all(s.encode() not in judgments for s in secrets)


ROLES = ["anonymous", "participant", "researcher", "researcher+recruiter-ids", "admin"]


@pytest.fixture
def role_clients(make_study, django_user_model, role_user):
    study = make_study("construct", quiz=[])
    participant = Client()
    participant.get(f"/s/{study.slug}/?PROLIFIC_PID=matrix-pid")
    consent(participant, study)
    researcher = role_user("res", "Researcher")
    privileged = role_user("priv", "Researcher")
    privileged.user_permissions.add(Permission.objects.get(codename="view_recruiter_ids"))
    admin = django_user_model.objects.create_superuser("boss", "b@example.org", "pw")
    clients = {"anonymous": Client(), "participant": participant}
    for role, user in [
        ("researcher", researcher),
        ("researcher+recruiter-ids", privileged),
        ("admin", admin),
    ]:
        clients[role] = Client()
        clients[role].force_login(user)
    return study, clients


def test_endpoint_role_matrix(role_clients):
    study, clients = role_clients
    s = study.slug
    expected_api = {
        "anonymous": {401, 403},
        "participant": {401, 403},
        "researcher": {200},
        "researcher+recruiter-ids": {200},
        "admin": {200},
    }
    api = [
        "/api/studies/",
        f"/api/studies/{s}/",
        f"/api/studies/{s}/aggregates/stimuli/",
        "/api/conditions/",
        "/api/stimuli/",
        "/api/participants/",
        "/api/judgments/",
        "/api/judgments/export/",
        f"/api/studies/{s}/export/",
        "/api/aggregates/midpoints/",
        "/api/training-jobs/",
        "/api/schema/",
        "/api/docs/",
    ]
    dashboard = [
        f"/admin/elicitation/study/{study.pk}/dashboard/",
        "/admin/elicitation/study/overview/",
        "/admin/training/trainingjob/compare/",
    ]
    for role, client in clients.items():
        for url in api:
            assert client.get(url).status_code in expected_api[role], (role, url)
        for url in dashboard:
            status = client.get(url).status_code
            assert status == (200 if role in expected_api and 200 in expected_api[role] else 302), (
                role,
                url,
                status,
            )
        own_trial = client.get(f"/s/{s}/trial/").status_code
        assert own_trial == (200 if role == "participant" else 403), (role, own_trial)
        participants = client.get("/api/participants/")
        if participants.status_code == 200:
            shows_pid = "matrix-pid" in participants.content.decode()
            assert shows_pid == (role in ("researcher+recruiter-ids", "admin")), role
        assert client.post("/api/studies/", {}).status_code in (401, 403, 405), role


@pytest.mark.django_db
def test_a_nul_byte_in_an_address_is_a_4xx_for_everyone(make_study, admin_client):
    """PostgreSQL refuses text holding NUL, so an address whose path part reaches a
    lookup (an API object by slug or public id, a stimulus by its key) answered a
    superuser, or a user allowed to view stimuli, with a 500. Every address is
    refused with a 400 instead, whoever asks, and nothing is looked up."""
    study = make_study("infer", quiz=[])
    admin_client.raise_request_exception = False
    anonymous = Client(raise_request_exception=False)
    urls = [
        "/stimuli/a%00b.png",
        "/api/studies/%00/",
        "/api/studies/x%00/publish/",
        "/api/studies/x%00/export/",
        "/api/participants/%00/",
        f"/s/{study.slug}/img/%00.png",
        f"/s/{study.slug}/preview/%00/",
        "/media/datasets/%00.npz",
        "/admin/elicitation/study/%00/change/",
    ]
    for url in urls:
        for client in (admin_client, anonymous):
            status = client.get(url).status_code
            assert 400 <= status < 500, (url, status)
    assert admin_client.get("/stimuli/a%00b.png").status_code == 400
    assert admin_client.get("/api/participants/%00/").status_code == 400
    saved = admin_client.post(
        f"/s/{study.slug}%00/judgments/", "{}", content_type="application/json"
    )
    assert saved.status_code == 400 and "error" in saved.json()


@pytest.mark.django_db
def test_participant_replies_are_kept_from_shared_caches(make_study):
    """Every participant page and JSON reply depends on the browser's cookie (its
    trial, the completion code), but named no Cache-Control and no Vary: a shared
    cache on the way (a company or campus proxy) could keep one participant's page and
    hand it to the next who opens the same study address. Each says `private`."""
    study = make_study("construct", quiz=[], n_pairs=2, conditions=1, repeat_trials=0)
    url = f"/s/{study.slug}/"
    client = Client()
    replies = {"link": client.get(f"{url}?PROLIFIC_PID=cache-1&STUDY_ID=s&SESSION_ID=x")}
    replies["consent page"] = client.get(url)
    replies["consent"] = consent(client, study)
    replies["instructions"] = client.post(f"{url}instructions/")
    replies["trial page"] = client.get(url)
    replies["trial"] = client.get(f"{url}trial/")
    session = Session.objects.get()
    replies["save"] = client.post(
        f"{url}judgments/",
        json.dumps(construct_answer(session)),
        content_type="application/json",
    )
    replies["image failure"] = client.post(
        f"{url}image-failures/", json.dumps({"trial_index": 1}), content_type="application/json"
    )
    replies["withdraw page"] = client.get(f"{url}withdraw/")
    replies["preview"] = Client().get(f"{url}preview/{study.preview_key}/")
    replies["no session"] = Client().get(f"{url}trial/")
    for name, reply in replies.items():
        assert reply.status_code < 500, name
        assert "private" in reply.get("Cache-Control", ""), (name, reply.get("Cache-Control"))
    # What is the same for everyone stays cacheable: the scripts' messages, images.
    assert "public" in Client().get("/jsi18n/en/")["Cache-Control"]
