"""What researchers read: one exclusion rule everywhere, CSV cells a spreadsheet will not
run as formulas."""

import csv
import io
import json

import pytest
from django.db.models import Value
from django.db.models.functions import Concat
from django.urls import reverse

from datasets.models import Pair
from elicitation.exports import csv_lines, csv_safe
from elicitation.models import Session
from tests.test_api import answered_study  # noqa: F401 (fixture)


@pytest.fixture
def researcher(client, django_user_model):
    """A user holding every permission (what each endpoint needs is another test's)."""
    user = django_user_model.objects.create_superuser("res", "res@example.org", "pw-123456")
    client.force_login(user)
    return user


def _csv(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_every_export_and_aggregate_applies_the_same_exclusion_rule(
    answered_study,  # noqa: F811
    client,
    researcher,
):
    study, sessions = answered_study
    excluded, kept = (s.participant.public_id for s in sessions)
    Session.objects.filter(pk=sessions[0].pk).update(excluded=True)

    def participants(rows):
        return {r["participant"] for r in rows}

    study_export = _csv(client.get(f"/api/studies/{study.slug}/export/"))
    judgment_export = _csv(client.get("/api/judgments/export/", {"study": study.slug}))
    judgment_json = json.loads(
        b"".join(client.get("/api/judgments/export/", {"as": "json"}).streaming_content)
    )
    listed = client.get("/api/judgments/", {"study": study.slug}).json()["results"]
    for rows in (study_export, judgment_export, judgment_json, listed):
        assert participants(rows) == {kept}
    hmix = _csv(client.get(f"/api/studies/{study.slug}/export/hmix/"))
    assert {r["subject"] for r in hmix} == {kept}
    midpoints = client.get("/api/aggregates/midpoints/", {"study": study.slug}).json()
    assert midpoints["construct"]["n"] == 2

    # include_excluded brings them back, the same way everywhere.
    every = {"include_excluded": "1"}
    assert participants(_csv(client.get(f"/api/studies/{study.slug}/export/", every))) == {
        excluded,
        kept,
    }
    assert participants(_csv(client.get("/api/judgments/export/", every))) == {excluded, kept}
    assert participants(client.get("/api/judgments/", every).json()["results"]) == {
        excluded,
        kept,
    }
    only_excluded = client.get("/api/judgments/", {**every, "excluded": "true"}).json()
    assert participants(only_excluded["results"]) == {excluded}
    midpoints = client.get("/api/aggregates/midpoints/", {"study": study.slug, **every}).json()
    assert midpoints["construct"]["n"] == 4

    # The dashboard: the same rule, the same parameter.
    dashboard = reverse("admin:elicitation_study_dashboard", args=[study.pk])

    def dashboard_n(**params):
        page = client.get(dashboard, params)
        assert page.status_code == 200
        return sum(row["n"] for row in page.context["class_pairs"])

    assert dashboard_n() == 2 and dashboard_n(include_excluded="1") == 4
    assert client.get(dashboard, {"include_excluded": "maybe"}).status_code == 400
    # A value that is not a boolean is refused, not read as "no".
    for url in ("/api/judgments/export/", "/api/judgments/", f"/api/studies/{study.slug}/export/"):
        assert client.get(url, {"include_excluded": "maybe"}).status_code == 400, url


def test_openapi_schema_documents_include_excluded(client, researcher, db):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    for path in (
        "/api/judgments/",
        "/api/judgments/export/",
        "/api/studies/{slug}/export/",
        "/api/studies/{slug}/export/hmix/",
        "/api/studies/{slug}/aggregates/stimuli/",
        "/api/aggregates/midpoints/",
    ):
        names = {p["name"] for p in schema["paths"][path]["get"].get("parameters", [])}
        assert "include_excluded" in names, path


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ("=1+2", "'=1+2"),
        ("+SUM(A1)", "'+SUM(A1)"),
        ("-2+3", "'-2+3"),
        ("@cmd", "'@cmd"),
        ("\tcat", "'\tcat"),
        ("\rcat", "'\rcat"),
        ("\t1", "'\t1"),
        ("-0.5", "-0.5"),
        ("+1e3", "+1e3"),
        (-0.5, -0.5),
        ("cat", "cat"),
        ("", ""),
        (None, None),
    ],
)
def test_csv_safe_neutralises_formulas_but_not_numbers(cell, written):
    assert csv_safe(cell) == written


def test_csv_lines_escape_header_and_cells():
    text = "".join(csv_lines(["=h", "n"], [["=1+2", -0.5], ["@x", 3]]))
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["'=h", "n"], ["'=1+2", "-0.5"], ["'@x", "3"]]


def test_class_names_from_folders_reach_exports_as_text(
    answered_study,  # noqa: F811
    client,
    researcher,
):
    study, _ = answered_study
    Pair.objects.filter(stimulus_set=study.stimulus_set).update(
        class1="=1+2", class2="@SUM(A1)", name=Concat(Value("=HYPERLINK"), "name")
    )
    for url in (
        f"/api/studies/{study.slug}/export/",
        "/api/judgments/export/",
        f"/api/studies/{study.slug}/export/hmix/",
    ):
        text = b"".join(client.get(url).streaming_content).decode()
        cells = [c for row in csv.reader(io.StringIO(text)) for c in row]
        assert not any(c[:1] in "=+@\t\r" for c in cells if c), url
        assert not any(c.startswith("-") and not _number(c) for c in cells), url
    rows = _csv(client.get(f"/api/studies/{study.slug}/export/"))
    assert {(r["class1"], r["class2"]) for r in rows} == {("'=1+2", "'@SUM(A1)")}
    assert all(r["pair"].startswith("'=HYPERLINK") for r in rows)
    # JSON keeps the names as they are: it is not read by spreadsheets.
    records = json.loads(
        b"".join(client.get(f"/api/studies/{study.slug}/export/", {"as": "json"}).streaming_content)
    )
    assert records[0]["class1"] == "=1+2"


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
