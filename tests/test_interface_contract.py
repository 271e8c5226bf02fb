"""The contract every registered interface keeps (elicitation.interfaces): its trials
are built and served blind, a valid answer is stored once (a retry is a replay),
invalid answers are refused with a 400 and store nothing, its judgment is exported and
analysed, and its trial page runs in a real browser under the CSP. New interfaces are
checked here without editing this file."""

import csv
import io
import json
import re
import uuid

import pytest
from django.urls import reverse

from elicitation import interfaces
from elicitation.models import Judgment, Session
from tests.browser import enter_study
from tests.test_blinding import Secrets, _first_trial

NAMES = interfaces.names()


def test_the_registry_holds_every_interface_once_with_its_parts():
    assert NAMES[:5] == ["construct", "select_shuffled", "infer", "soft_label", "afc"]
    assert len(set(NAMES)) == len(NAMES)
    for spec in interfaces.all():
        assert interfaces.get(spec.name) is spec and spec.label
        assert spec.demo and spec.demo["slug"].startswith("demo-")
    assert interfaces.choices()[0] == ("construct", "Construct")
    with pytest.raises(LookupError):
        interfaces.get("nonesuch")


def _start(client, study) -> dict:
    url = f"/s/{study.slug}/"
    client.get(f"{url}?PROLIFIC_PID=contract-{study.interface}")
    client.post(f"{url}consent/", {"consent_0": "on", "consent_1": "on"})
    return _first_trial(client.get(url).content.decode())


def _post(client, study, body: dict, response: dict, key: str | None = None):
    answer = {
        "session": body["session"],
        "trial_index": body["trial"]["index"],
        "idempotency_key": key or str(uuid.uuid4()),
        "rt_ms": 1500,
        "response": response,
    }
    return client.post(
        f"/s/{study.slug}/judgments/", json.dumps(answer), content_type="application/json"
    )


def _invalid_answers(valid: dict) -> list[dict]:
    """Nothing at all, and the valid answer with each of its fields made nonsense."""
    return [{}] + [{**valid, field: "?"} for field in valid]


@pytest.mark.django_db
@pytest.mark.parametrize("name", NAMES)
def test_an_interface_builds_serves_checks_stores_exports_and_analyses(
    make_study, client, role_user, name
):
    spec = interfaces.get(name)
    study = make_study(name, quiz=[], n_pairs=2, conditions=1, repeat_trials=0)
    secrets = Secrets(study)
    body = _start(client, study)
    secrets.check_trial_json(body, "first trial")
    trial = body["trial"]
    assert trial["interface"] == name
    assert ("class1" in trial) == spec.names_classes

    for bad in _invalid_answers(spec.example_answer(trial)):
        reply = _post(client, study, body, bad)
        assert reply.status_code == 400, (bad, reply.content)
        assert reply.json()["error"].startswith("response: "), reply.content
    assert not Judgment.objects.exists()

    key = str(uuid.uuid4())
    first = _post(client, study, body, spec.example_answer(trial), key)
    assert first.status_code == 201, first.content
    secrets.check_trial_json(first.json(), "reply")
    again = _post(client, study, body, spec.example_answer(trial), key)
    assert again.status_code == 200, again.content
    [judgment] = Judgment.objects.all()
    assert judgment.interface == name and judgment.trial_index == 0
    assert Session.objects.get().position == 1
    # What it yields for the label policies is defined (or deliberately nothing).
    evidence = spec.evidence(judgment.lam, judgment.confidence, judgment.response)
    assert evidence is None or evidence.kind in {"midpoint", "perceived", "soft"}

    client.force_login(role_user("contract", "Researcher"))
    export = client.get(f"/api/studies/{study.slug}/export/")
    assert export.status_code == 200
    text = b"".join(export.streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1 and rows[0]["interface"] == name
    hmix = client.get(f"/api/studies/{study.slug}/export/hmix/")
    if spec.hmix is None:
        assert hmix.status_code == 404  # no H-Mix layout: said so, never a 500
    else:
        assert hmix.status_code == 200
        lines = b"".join(hmix.streaming_content).decode().splitlines()
        assert lines[0].split(",") == spec.hmix.columns and len(lines) == 2

    charts = spec.dashboard_charts(study, False)
    assert charts and all(c.startswith("<svg") for c in charts)
    dashboard = client.get(reverse("admin:elicitation_study_dashboard", args=[study.pk]))
    assert dashboard.status_code == 200
    assert dashboard.content.decode().count("<svg") >= len(charts)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", NAMES)
def test_an_interface_trial_page_runs_in_a_browser(page, live_server, make_study, name):
    """Its JavaScript module loads under the CSP (the page fixture fails on a
    violation), renders the first trial, and shows it once its images are painted."""
    study = make_study(name, n_pairs=2)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    enter_study(page, live_server.url, study.slug, f"smoke-{name}")
    page.wait_for_selector(f'.trial[data-interface="{name}"][data-shown]')
    assert page.locator(".trial img").count() >= 1
    scripts = page.eval_on_selector_all("script[src]", "nodes => nodes.map(n => n.src)")
    assert any(re.search(rf"/js/interfaces/{name}\.[0-9a-f.]*js$|/{name}\.js$", s) for s in scripts)
    assert not errors, errors
