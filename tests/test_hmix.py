"""The published H-Mix data through import, aggregates and exports."""

import csv
import io
import json

import numpy as np
import pandas as pd
import pytest
from django.db import transaction
from django.test import override_settings

from datasets.models import Stimulus
from elicitation import hmix
from elicitation.models import Judgment, Participant, Session, Study
from elicitation.services import hmix_study_slug, import_hmix
from tests.conftest import shared_data_dir

pytestmark = pytest.mark.shared_data

SOURCE_TRIALS = {"construct": 1440, "select_shuffled": 800, "infer": 4950, "soft_label": 216}


@pytest.fixture(scope="module")
def hmix_folder():
    folder = shared_data_dir() / "hmix"
    if not folder.is_dir():
        pytest.skip(f"shared H-Mix data not found at {folder} (set HILLMIX_SHARED_DATA)")
    return folder


@pytest.fixture(scope="module")
def imported(django_db_setup, django_db_blocker, hmix_folder, tmp_path_factory):
    """Import once for the module, inside a transaction rolled back at the end."""
    with (
        django_db_blocker.unblock(),
        override_settings(MEDIA_ROOT=tmp_path_factory.mktemp("hmix-media")),
    ):
        with transaction.atomic():
            report = import_hmix(hmix_folder)
            yield report
            transaction.set_rollback(True)


@pytest.fixture
def staff_client(client, role_user, imported, db):
    user = role_user("analyst", "Analyst")
    client.force_login(user)
    return client


def source_rows(folder, interface):
    with open(folder / hmix.FILES[interface], newline="") as handle:
        tasks = {hmix.TASKS[interface], hmix.REPEAT_PREFIX + hmix.TASKS[interface]}
        return [row for row in csv.DictReader(handle) if row["task"] in tasks]


def test_import_counts_per_interface(imported, hmix_folder, db):
    for interface, expected in SOURCE_TRIALS.items():
        study = Study.objects.get(slug=hmix_study_slug(interface))
        rows = source_rows(hmix_folder, interface)
        assert Judgment.objects.filter(study=study).count() == expected == len(rows)
        assert Session.objects.filter(study=study).count() == len({r["subject"] for r in rows})
        names = {c.name for c in study.conditions.all()}
        assert names == {r["condition"] for r in rows}
        repeats = Judgment.objects.filter(study=study, is_repeat=True).count()
        assert repeats == sum(r["task"].startswith("rerun_") for r in rows)
    subjects = set()
    for interface in SOURCE_TRIALS:
        subjects |= {r["subject"] for r in source_rows(hmix_folder, interface)}
    assert set(Participant.objects.values_list("public_id", flat=True)) == subjects
    infer = Stimulus.objects.filter(judgment__study__slug="hmix-infer").distinct().count()
    assert infer == 2070
    grid_pairs = Study.objects.get(slug="hmix-construct").stimulus_set.pairs.count()
    assert grid_pairs == 249
    assert imported["construct"] == {
        "status": "imported",
        "judgments": 1440,
        "participants": 45,
        "conditions": 9,
    }


def test_second_import_changes_nothing(imported, hmix_folder, db):
    before = (Judgment.objects.count(), Participant.objects.count(), Stimulus.objects.count())
    report = import_hmix(hmix_folder)
    assert all(r["status"] == "already imported" for r in report.values())
    assert (
        Judgment.objects.count(),
        Participant.objects.count(),
        Stimulus.objects.count(),
    ) == before


def test_aggregate_endpoint_reproduces_processed_file(staff_client, hmix_folder):
    published = json.loads((hmix_folder / "processed_hmix_inferences.json").read_text())
    response = staff_client.get("/api/studies/hmix-infer/aggregates/stimuli/", {"values": "1"})
    assert response.status_code == 200
    ours = response.json()
    assert set(ours) == set(published) and len(ours) == 2070
    for name, expected in published.items():
        for field, value in expected.items():
            if isinstance(value, float):
                assert ours[name][field] == pytest.approx(value, abs=1e-12), (name, field)
            else:
                assert (
                    ours[name][field] == pytest.approx(value)
                    if field.startswith("Predicted")
                    else ours[name][field] == value
                ), (name, field)


def test_confidence_by_lam_and_midpoints(staff_client):
    rows = staff_client.get("/api/studies/hmix-infer/aggregates/confidence-by-lam/").json()["rows"]
    assert [r["x"] for r in rows] == [0.1, 0.25, 0.5, 0.75, 0.9]
    assert sum(r["n"] for r in rows) == 2070
    assert all(0 <= r["mean"] <= 1 and r["std"] >= 0 for r in rows)
    midpoints = staff_client.get("/api/aggregates/midpoints/").json()
    assert midpoints["construct"]["n"] == 1440 and midpoints["select_shuffled"]["n"] == 800
    assert sum(c["count"] for c in midpoints["construct"]["counts"]) == 1440


@pytest.mark.parametrize("interface", ["construct", "select_shuffled", "infer", "soft_label"])
def test_hmix_export_reads_back_like_the_source(staff_client, hmix_folder, interface):
    slug = hmix_study_slug(interface)
    response = staff_client.get(f"/api/studies/{slug}/export/hmix/")
    assert response.status_code == 200 and response.streaming
    exported = pd.read_csv(io.BytesIO(b"".join(response.streaming_content)), dtype=str)
    source = pd.read_csv(hmix_folder / hmix.FILES[interface], dtype=str)
    source = source[
        source["task"].isin([hmix.TASKS[interface], hmix.REPEAT_PREFIX + hmix.TASKS[interface]])
    ]
    columns = list(exported.columns)
    if interface == "soft_label":
        columns.remove("response")  # key order of the JSON differs; compared parsed below
    numeric = {"rt", "start_value", "final_value", "mixtureCoeff", "id1", "id2"}

    def normalise(frame):
        frame = frame[columns].copy()
        for column in numeric & set(columns):
            frame[column] = frame[column].astype(float)
        return frame.sort_values(columns).reset_index(drop=True)

    assert len(exported) == len(source) == SOURCE_TRIALS[interface]
    pd.testing.assert_frame_equal(normalise(exported), normalise(source))
    if interface == "soft_label":
        parsed = sorted(json.dumps(json.loads(r), sort_keys=True) for r in exported["response"])
        original = sorted(json.dumps(json.loads(r), sort_keys=True) for r in source["response"])
        assert parsed == original


def test_top2_clamp_agrees_with_published_individual_labels(hmix_folder):
    published = json.loads((hmix_folder / "hmix_individ_soft_labels.json").read_text())
    ours: dict[str, list] = {}
    for trial in hmix.read_soft_label(hmix_folder):
        name = f"mixed_{trial.stimulus_lam}_{trial.pair.name}.png"
        ours.setdefault(name, []).append(np.array(trial.response["soft_label"]))
    agree = total = 0
    for name, labels in published.items():
        candidates = list(ours[name])
        for label in labels:
            total += 1
            match = next(
                (i for i, c in enumerate(candidates) if np.allclose(c, label, atol=1e-9)), None
            )
            if match is not None:
                agree += 1
                candidates.pop(match)
    print(
        f"\nTop-2 Clamp agreement with hmix_individ_soft_labels.json: "
        f"{agree}/{total} = {agree / total:.1%}"
    )
    assert total == 216
    assert agree / total >= 0.94


def test_sql_aggregates_equal_the_python_definition_on_hmix(imported, db):
    from tests.test_aggregates_sql import compare_all

    for interface in SOURCE_TRIALS:
        compare_all(Study.objects.get(slug=hmix_study_slug(interface)))


PAPER_CONFIDENCE = [
    ([0.1, 0.9], "0.79", "0.17"),
    ([0.25, 0.75], "0.72", "0.20"),
    ([0.5], "0.63", "0.20"),
]
PAPER_MIDPOINTS = {"construct": "0.522", "select_shuffled": "0.511"}


def test_paper_view_shows_the_papers_figures(staff_client):
    """Issue 19 item 6: the H-Mix paper's confidence by pooled lam and mean midpoints,
    through the API and on the dashboard, to the digits the paper prints."""
    from django.urls import reverse

    infer = staff_client.get("/api/studies/hmix-infer/aggregates/paper/").json()
    rows = infer["confidence_by_pooled_lam"]
    assert [(r["lams"], f"{r['mean']:.2f}", f"{r['std']:.2f}") for r in rows] == PAPER_CONFIDENCE
    assert sum(r["n"] for r in rows) == 2070 and infer["midpoints"] == {}
    page = staff_client.get(
        reverse("admin:elicitation_study_dashboard", args=[Study.objects.get(slug="hmix-infer").pk])
    ).content.decode()
    for lams, mean, std in PAPER_CONFIDENCE:
        assert f"{mean} &plusmn; {std}" in page, (lams, mean, std)
    for interface, figure in PAPER_MIDPOINTS.items():
        study = Study.objects.get(slug=hmix_study_slug(interface))
        view = staff_client.get(f"/api/studies/{study.slug}/aggregates/paper/").json()
        midpoint = view["midpoints"][interface]
        assert f"{midpoint['mean']:.3f}" == figure
        assert midpoint["low"] < midpoint["mean"] < midpoint["high"]
        assert midpoint["n"] == SOURCE_TRIALS[interface]  # repeats count as judgments
        page = staff_client.get(
            reverse("admin:elicitation_study_dashboard", args=[study.pk])
        ).content.decode()
        assert f"<td>{figure}</td>" in page and 'id="paper-midpoints"' in page
