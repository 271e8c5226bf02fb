"""Publishing studies as a dataset: Parquet judgments that pandas and the Hugging Face
`datasets` library read back equal to the database's counted rows, the stimuli as PNG
files, a dataset card, no recruiter id anywhere; the command, the API's zip with its
permission and audit entry; the H-Mix studies."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import override_settings

from elicitation import publishing
from elicitation.models import AuditLog, Judgment, Participant, Session, Study
from elicitation.reports import counted
from elicitation.services import import_hmix
from tests.test_api import answered_study  # noqa: F401  (a fixture)
from tests.test_hmix import SOURCE_TRIALS, hmix_folder  # noqa: F401  (a fixture)

HMIX_STUDIES = ["hmix-construct", "hmix-select-shuffled", "hmix-infer", "hmix-soft-label"]
COMPARED = ["study", "annotator_id", "trial_index", "is_repeat", "pair", "stimulus", "true_lam",
            "lam", "confidence", "rt_ms", "response"]  # fmt: skip


def source_rows(slugs: list[str]) -> list[dict]:
    """The counted judgments of the studies straight from the database, annotators
    numbered by participant in creation order: what a publication must hold."""
    judgments = counted(Judgment.objects.filter(study__slug__in=slugs))
    values = judgments.values_list(
        "study__slug", "session__participant_id", "trial_index", "is_repeat", "pair__name",
        "stimulus__name", "stimulus__lam", "lam", "confidence", "rt_ms", "response",
    )  # fmt: skip
    rows = list(values)
    number = {p: i for i, p in enumerate(sorted({r[1] for r in rows}))}
    return sorted(
        (
            dict(zip(COMPARED, (*r[:1], number[r[1]], *r[2:10], json.dumps(r[10], sort_keys=True)),
                     strict=True))
            for r in rows
        ),
        key=lambda r: (slugs.index(r["study"]), r["annotator_id"], r["trial_index"]),
    )  # fmt: skip


def plain(value):
    """A cell as plain Python: NaN and None alike, numpy scalars and arrays unwrapped."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def compared(records: list[dict]) -> list[dict]:
    return [{k: plain(r[k]) for k in COMPARED} for r in records]


def load_with_datasets(parquet: Path, work: Path) -> list[dict]:
    """The rows as `datasets.load_dataset("parquet", ...)` reads them. In a process of
    its own, from a folder outside the project: the project's Django app `datasets`
    would otherwise shadow the library of that name."""
    script = (
        "import json, sys\n"
        "from datasets import load_dataset\n"
        "ds = load_dataset('parquet', data_files=sys.argv[1], split='train', "
        "cache_dir=sys.argv[2])\n"
        "json.dump({'features': {k: str(v) for k, v in ds.features.items()}, "
        "'rows': ds.to_list()}, open(sys.argv[3], 'w'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")}
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=str(work / "hf"))
    out = work / "rows.json"
    subprocess.run(
        [sys.executable, "-c", script, str(parquet), str(work / "cache"), str(out)],
        cwd=work, env=env, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return json.loads(out.read_text())


def header_of(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def closed(study: Study) -> None:
    Study.objects.filter(pk=study.pk).update(status=Study.Status.CLOSED)
    study.refresh_from_db()


def every_byte(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.mark.django_db
def test_a_publication_holds_counted_judgments_anonymously(answered_study, tmp_path):  # noqa: F811
    study, sessions = answered_study
    closed(study)
    # A pilot and an excluded participant: neither is published.
    Session.objects.filter(pk=sessions[1].pk).update(excluded=True)
    out = tmp_path / "pub"
    call_command("publish_study", "--study", study.slug, "--out", str(out))
    frame = pd.read_parquet(out / publishing.DATA_FILE)
    assert compared(frame.to_dict("records")) == compared(source_rows([study.slug]))
    assert len(frame) == 2 and set(frame["annotator_id"]) == {0}
    Session.objects.filter(pk=sessions[0].pk).update(kind=Session.Kind.PILOT)
    call_command("publish_study", "--study", study.slug, "--out", str(tmp_path / "none"))
    assert len(pd.read_parquet(tmp_path / "none" / publishing.DATA_FILE)) == 0

    # The grid images each judgment showed, as PNG files with the stored bytes.
    row = frame.iloc[0]
    assert len(row["grid_files"]) == 11 and list(row["grid_lams"]) == sorted(row["grid_lams"])
    for path in row["grid_files"]:
        assert (out / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # No recruiter id, nor the platform's own public id, in any file.
    data = every_byte(out)
    for session in sessions:
        participant = Participant.objects.get(sessions=session)
        for secret in (participant.recruiter_pid, participant.public_id,
                       session.recruiter_study_id, session.recruiter_session_id):  # fmt: skip
            assert secret and secret.encode() not in data, secret
    card = (out / "README.md").read_text()
    header = header_of(card)
    assert header["license"] == publishing.DEFAULT_LICENSE
    assert header["configs"][0]["data_files"][0]["path"] == publishing.DATA_FILE
    (entry,) = header["studies"]
    assert entry["interface"] == "construct" and entry["judgments"] == 2
    assert entry["annotators"] == 1 and entry["consent_text"] == study.consent_text
    assert header["exclusion_rule"] == publishing.EXCLUSION_RULE
    assert [f["name"] for f in header["dataset_info"]["features"]] == [
        name for name, _, _ in publishing.COLUMNS
    ]


@pytest.mark.django_db
def test_the_command_refuses_unknown_and_repeated_studies(answered_study, tmp_path):  # noqa: F811
    study, _ = answered_study
    out = tmp_path / "out"
    with pytest.raises(CommandError, match="close .* before publishing"):
        call_command("publish_study", "--study", study.slug, "--out", str(out))
    closed(study)
    with pytest.raises(CommandError, match="no such study: nope"):
        call_command("publish_study", "--study", "nope", "--out", str(out))
    with pytest.raises(CommandError, match="named twice"):
        call_command("publish_study", "--study", study.slug, "--study", study.slug,
                     "--out", str(out))  # fmt: skip
    assert not out.exists()


@pytest.mark.django_db
def test_the_api_zip_needs_the_export_permission_and_is_audited(
    answered_study,  # noqa: F811
    role_user,
    django_user_model,
    client,
):
    study, _ = answered_study
    url = f"/api/studies/{study.slug}/publish/"
    user = role_user("analyst", "Analyst")
    assert user.has_perm("elicitation.export_judgments")
    client.force_login(user)
    # A live study's stimuli and lams would answer its current participants' trials.
    refused = client.get(url)
    assert refused.status_code == 409 and "close" in refused.json()["detail"]
    assert not AuditLog.objects.exists()
    closed(study)
    response = client.get(url, {"license": "cc-by-sa-4.0"})
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    bundle = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    names = bundle.namelist()
    assert f"{study.slug}/README.md" in names and f"{study.slug}/{publishing.DATA_FILE}" in names
    assert header_of(bundle.read(f"{study.slug}/README.md").decode())["license"] == "cc-by-sa-4.0"
    frame = pd.read_parquet(io.BytesIO(bundle.read(f"{study.slug}/{publishing.DATA_FILE}")))
    assert len(frame) == 4
    (entry,) = AuditLog.objects.filter(action=AuditLog.Action.EXPORT, study=study)
    assert entry.user == user and "publication" in entry.detail
    assert client.get(url, {"license": "<script>"}).status_code == 400
    dashboard = f"/admin/elicitation/study/{study.pk}/dashboard/"
    assert 'id="publish-dataset"' in client.get(dashboard).content.decode()
    # Viewing studies is not enough: publishing is an export.
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_study"))
    client.force_login(viewer)
    assert client.get(url).status_code == 403
    assert 'id="publish-dataset"' not in client.get(dashboard).content.decode()
    assert AuditLog.objects.filter(action=AuditLog.Action.EXPORT).count() == 1


@pytest.fixture(scope="module")
def hmix_media(django_db_setup, django_db_blocker, hmix_folder, tmp_path_factory):  # noqa: F811
    """tests/test_hmix.py's import, once for the module and rolled back at the end; its
    media folder (the stimulus images) is kept for the tests that publish them."""
    media = tmp_path_factory.mktemp("hmix-media")
    with django_db_blocker.unblock(), override_settings(MEDIA_ROOT=media):
        with transaction.atomic():
            import_hmix(hmix_folder)
            yield media
            transaction.set_rollback(True)


@pytest.mark.shared_data
@pytest.mark.django_db
def test_hmix_publication_reads_back_equal_with_pandas_and_datasets(hmix_media, settings, tmp_path):
    settings.MEDIA_ROOT = hmix_media
    out = tmp_path / "hmix"
    args = [a for slug in HMIX_STUDIES for a in ("--study", slug)]
    call_command("publish_study", *args, "--out", str(out))
    expected = source_rows(HMIX_STUDIES)
    assert len(expected) == sum(SOURCE_TRIALS.values())

    frame = pd.read_parquet(out / publishing.DATA_FILE)
    assert compared(frame.to_dict("records")) == expected
    assert frame.groupby("interface").size().to_dict() == SOURCE_TRIALS

    loaded = load_with_datasets(out / publishing.DATA_FILE, tmp_path)
    assert compared(loaded["rows"]) == expected
    assert loaded["features"]["grid_files"].startswith(("List(", "Sequence("))

    header = header_of((out / "README.md").read_text())
    assert {s["study"]: s["judgments"] for s in header["studies"]} == {
        f"hmix-{k.replace('_', '-')}": v for k, v in SOURCE_TRIALS.items()
    }
    # Every image a row names is in the publication.
    named = set(frame["stimulus_file"].dropna()) | {
        f for files in frame["grid_files"] for f in files if f
    }
    assert named and all((out / path).is_file() for path in named)
