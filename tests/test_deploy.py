"""Deployment hardening: the production settings pass Django's deploy checks, pages send
HSTS and a Content-Security-Policy they work under (participant pages, admin, API docs),
and the compose deployment keeps gunicorn behind the buffering TLS proxy."""

import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from django.urls import reverse

from elicitation.services import RecruiterIds, start_session
from tests.browser import watch_csp
from tests.test_dashboard import answer_all
from tests.test_flow import to_trials

ROOT = Path(__file__).resolve().parent.parent


def production_env(**extra: str) -> dict:
    """The environment README's deployment section documents (compose sets the same)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "SECURE_", "DEBUG", "HILLMIX_"))
    }
    env.update(
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="hillmix.example.org",
        CSRF_TRUSTED_ORIGINS="https://hillmix.example.org",
        BEHIND_TLS_PROXY="true",
        HILLMIX_TRUSTED_PROXIES="172.31.240.0/24",
        DJANGO_SETTINGS_MODULE="hillmix_site.settings",
    )
    env.update(extra)
    return env


def manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_the_deploy_checks():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout, result.stdout + result.stderr


def test_deploy_checks_still_catch_a_weakened_setting():
    """The check is live, not silenced wholesale: a short HSTS is a warning again."""
    env = production_env(SECURE_HSTS_SECONDS="3600", SECURE_HSTS_INCLUDE_SUBDOMAINS="false")
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode != 0 and "security.W005" in result.stderr + result.stdout


# The headers a production server sends, read in a subprocess with the production
# environment (settings are read once, at start).
HEADERS_SCRIPT = """
import json
from django.test import Client
out = {}
plain = Client(HTTP_HOST="hillmix.example.org")
out["plain"] = [plain.get("/").status_code, plain.get("/").get("Location")]
proxied = Client(HTTP_HOST="hillmix.example.org", HTTP_X_FORWARDED_PROTO="https")
for name, path in [("home", "/"), ("admin", "/admin/login/"), ("save", "/s/x/judgments/")]:
    response = proxied.get(path) if name != "save" else proxied.post(path)
    out[name] = {key: response.get(key) for key in
                 ["Strict-Transport-Security", "Content-Security-Policy", "X-Frame-Options",
                  "X-Content-Type-Options", "Referrer-Policy"]}
    out[name]["status"] = response.status_code
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def production_headers(django_db_setup):
    # The save's refusal reads the study's language: point the server at the test
    # database (migrated, with no study "x") rather than the development one.
    from django.db import connection

    db = connection.settings_dict
    database_url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    result = manage("shell", "-c", HEADERS_SCRIPT, env=production_env(DATABASE_URL=database_url))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_plain_http_is_redirected_to_https(production_headers):
    status, location = production_headers["plain"]
    assert status == 301 and location == "https://hillmix.example.org/"


def test_https_pages_send_a_year_of_hsts_with_subdomains(production_headers):
    for name in ["home", "admin"]:
        headers = production_headers[name]
        assert headers["status"] == 200, name
        assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"


def _policy(header: str) -> dict[str, list[str]]:
    directives = [part.split() for part in header.split(";") if part.strip()]
    return {name: values for name, *values in directives}


def test_participant_pages_get_the_strict_policy(production_headers):
    policy = _policy(production_headers["home"]["Content-Security-Policy"])
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["form-action"] == ["'self'"]
    assert policy["base-uri"] == ["'none'"]
    header = production_headers["home"]["Content-Security-Policy"]
    assert "unsafe-inline" not in header and "unsafe-eval" not in header
    assert (
        production_headers["save"]["Content-Security-Policy"]
        == (production_headers["home"]["Content-Security-Policy"])
    )


def test_staff_pages_allow_inline_styles_but_never_inline_scripts(production_headers):
    policy = _policy(production_headers["admin"]["Content-Security-Policy"])
    assert policy["style-src"] == ["'self'", "'unsafe-inline'"]
    assert policy["script-src"] == ["'self'"]


def test_debug_settings_still_run_on_plain_http():
    """The development defaults (make run) keep HTTP working: no redirect, no HSTS."""
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings as s; "
        "print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE)",
        env={k: v for k, v in production_env().items() if k not in ("DEBUG", "SECRET_KEY")},
    )
    assert result.stdout.strip().splitlines()[-1].split() == ["False", "0", "False"], result


# --- In the browser -------------------------------------------------------------------


@pytest.mark.browser
def test_the_violation_watcher_sees_what_the_policy_blocks(browser, live_server, db):
    """What the page fixtures rely on: an inline style and an inline script are reported."""
    context = browser.new_context()
    seen = watch_csp(context)
    page = context.new_page()
    page.goto(f"{live_server.url}/")
    page.evaluate(
        """() => {
        const div = document.createElement("div");
        div.setAttribute("style", "color: red");
        document.body.appendChild(div);
        const script = document.createElement("script");
        script.textContent = "window.ran = true";
        document.body.appendChild(script);
    }"""
    )
    page.wait_for_timeout(300)
    ran = page.evaluate("() => window.ran === true")
    context.close()
    assert not ran
    assert any("style-src" in line for line in seen), seen
    assert any("script-src" in line for line in seen), seen


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_admin_dashboard_compare_and_api_docs_work_under_the_policy(
    page, live_server, make_study, django_user_model
):
    """The `page` fixture fails the test on any CSP violation it saw."""
    django_user_model.objects.create_superuser("csp-admin", "a@example.org", "pw-csp-123456")
    study = make_study("construct", ask_confidence=True, feedback_questions=[])
    answer_all(to_trials(start_session(study, RecruiterIds("csp-person"))))
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "csp-admin")
    page.fill("#id_password", "pw-csp-123456")
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")

    page.goto(live_server.url + reverse("admin:elicitation_study_dashboard", args=[study.pk]))
    chart = page.locator(".charts svg").first
    chart.wait_for()
    # The plots are drawn (SVG with presentation attributes, elicitation.plots).
    assert chart.locator("polyline, circle, rect, line").count() > 0

    # Django's own admin scripts: a change form, and the user form's permission picker.
    page.goto(live_server.url + reverse("admin:elicitation_study_change", args=[study.pk]))
    page.wait_for_selector("input[name=_save]")
    admin_user = django_user_model.objects.get(username="csp-admin")
    page.goto(live_server.url + reverse("admin:auth_user_change", args=[admin_user.pk]))
    page.wait_for_selector(".selector-available")  # drawn by SelectFilter2.js

    page.goto(live_server.url + reverse("admin:training_trainingjob_compare"))
    page.select_option("select[name=comparison]", "")  # the static script submits it
    page.wait_for_url("**comparison=*")

    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "HILL-Mix API" in page.inner_text(".swagger-ui .info .title")


# --- The compose deployment and its proxy ---------------------------------------------


def test_compose_publishes_only_the_proxy():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"proxy"}
    assert set(services["proxy"]["networks"]) == {"front"}
    web = services["web"]
    assert web["environment"]["BEHIND_TLS_PROXY"] == "true"
    subnet = compose["networks"]["front"]["ipam"]["config"][0]["subnet"]
    assert web["environment"]["HILLMIX_TRUSTED_PROXIES"] == subnet
    mounts = " ".join(services["proxy"]["volumes"])
    assert "media" not in mounts  # media goes through Django's permission checks


def _nginx_conf() -> str:
    return (ROOT / "deploy" / "nginx.conf").read_text()


def test_proxy_forwards_the_client_and_scheme_and_buffers():
    conf = _nginx_conf()
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in conf
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in conf
    assert "proxy_request_buffering on;" in conf and "proxy_buffering on;" in conf
    assert "client_header_timeout" in conf
    assert "location /static/" in conf and "location /media/" not in conf
    assert "return 301 https://" in conf


def _slowloris_module():
    spec = importlib.util.spec_from_file_location(
        "slowloris_check", ROOT / "deploy" / "slowloris_check.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not Path("/usr/sbin/nginx").exists(), reason="nginx not installed")
def test_nginx_accepts_the_config_as_the_check_runs_it(tmp_path):
    """`nginx -t` on deploy/nginx.conf with local addresses and a throwaway certificate."""
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    check = _slowloris_module()
    check.make_certificate(tmp_path / "certs")
    (tmp_path / "static").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        check.render_nginx_conf(_nginx_conf(), http=1, https=2, upstream=3, tmp=tmp_path)
    )
    result = subprocess.run(
        ["/usr/sbin/nginx", "-t", "-c", str(conf), "-p", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


# --- The policy's middleware ------------------------------------------------------------


def _policy_of(path: str, **response_attrs) -> str:
    from django.http import HttpResponse
    from django.test import RequestFactory

    from hillmix_site.csp import PolicyByAreaMiddleware

    response = HttpResponse("ok")
    for name, value in response_attrs.items():
        setattr(response, name, value)
    middleware = PolicyByAreaMiddleware(lambda request: response)
    return middleware(RequestFactory().get(path))["Content-Security-Policy"]


def test_the_built_once_header_is_what_django_csp_builds(settings):
    from csp.utils import build_policy

    from hillmix_site.csp import STAFF_UPDATE

    assert _policy_of("/s/demo/") == build_policy()
    assert _policy_of("/admin/") == build_policy(update=STAFF_UPDATE)
    assert "unsafe-inline" not in _policy_of("/s/demo/")
    # A view's own decorator still shapes its policy.
    updated = _policy_of("/s/demo/", _csp_update={"img-src": ["https://cdn.example.org"]})
    assert "https://cdn.example.org" in updated
    # New settings (as a test's override) give a new header.
    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"default-src": ["'none'"]}}
    assert _policy_of("/s/demo/") == "default-src 'none'"


@pytest.fixture
def proxied_site(live_server):
    """nginx with deploy/nginx.conf (local addresses, a throwaway certificate) in front
    of the live server; yields (https base URL, http base URL, what Django received)."""
    import signal
    from urllib.parse import urlparse

    from django.core.signals import request_started

    if not Path("/usr/sbin/nginx").exists() or not shutil.which("openssl"):
        pytest.skip("nginx or openssl not installed")
    check = _slowloris_module()
    # Not pytest's tmp_path: nginx's workers (www-data when run as root) must read it.
    tmp_path = Path(tempfile.mkdtemp(prefix="hillmix-proxy-test-"))
    check.make_certificate(tmp_path / "certs")
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "probe.txt").write_text("from the static folder")
    http, https = check.free_port(), check.free_port()
    upstream = urlparse(live_server.url).port
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        check.render_nginx_conf(
            _nginx_conf(), http=http, https=https, upstream=upstream, tmp=tmp_path
        )
    )
    if os.geteuid() == 0:
        shutil.chown(tmp_path, "www-data")
    seen: list[dict] = []

    def record(sender, environ, **kwargs):
        seen.append({k: v for k, v in environ.items() if isinstance(v, str)})

    request_started.connect(record)
    nginx = subprocess.Popen(
        ["/usr/sbin/nginx", "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"],
        start_new_session=True,
    )
    try:
        check.wait_for_port(https, nginx)
        yield f"https://localhost:{https}", f"http://localhost:{http}", seen
    finally:
        request_started.disconnect(record)
        os.killpg(nginx.pid, signal.SIGTERM)
        nginx.wait(10)
        shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.django_db(transaction=True)
def test_the_proxy_tells_django_the_client_and_the_scheme_and_serves_only_static(
    proxied_site, settings
):
    import httpx

    from hillmix_site.client_address import client_address

    https, http, seen = proxied_site
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # The participant connects from another loopback address than the proxy's.
    participant = httpx.HTTPTransport(verify=False, local_address="127.0.0.3")
    with httpx.Client(transport=participant, timeout=10) as client:
        redirect = client.get(f"{http}/s/demo/?PROLIFIC_PID=p1")
        assert redirect.status_code == 301
        assert redirect.headers["location"] == "https://localhost/s/demo/?PROLIFIC_PID=p1"

        # A client's own X-Forwarded-For and -Proto are not what Django acts on.
        forged = {"X-Forwarded-For": "203.0.113.66", "X-Forwarded-Proto": "http"}
        home = client.get(f"{https}/", headers=forged)
        assert home.status_code == 200 and "Content-Security-Policy" in home.headers
        meta = seen[-1]
        assert meta["HTTP_X_FORWARDED_PROTO"] == "https"
        assert meta["REMOTE_ADDR"] == "127.0.0.1"  # the proxy
        assert meta["HTTP_X_FORWARDED_FOR"] == "203.0.113.66, 127.0.0.3"
        assert client_address(meta, ["127.0.0.1"]) == "127.0.0.3"

        before = len(seen)
        static = client.get(f"{https}/static/probe.txt")
        assert static.text == "from the static folder" and len(seen) == before
        assert static.headers["Strict-Transport-Security"].startswith("max-age=31536000")
        media = client.get(f"{https}/media/datasets/anything.npz")
        assert media.status_code in (403, 404) and len(seen) == before + 1  # Django decided
