"""Researcher-facing pages of the foundation: admin forms and the demo command."""

import pytest
from django.core.management import call_command
from django.urls import reverse

from datasets.models import Dataset, StimulusSet
from elicitation.demo import demo_studies
from elicitation.models import Study


@pytest.fixture
def researcher(db, django_user_model):
    return django_user_model.objects.create_superuser("res", "res@example.org", "pw-123456")


def test_admin_pages_need_login(client, db):
    for name in [
        "admin:datasets_dataset_add",
        "admin:datasets_stimulusset_add",
        "admin:elicitation_study_changelist",
    ]:
        response = client.get(reverse(name))
        assert response.status_code == 302 and "/login/" in response["Location"]


def test_admin_imports_dataset_and_builds_stimulus_set(
    client, researcher, django_capture_on_commit_callbacks
):
    client.force_login(researcher)
    response = client.post(
        reverse("admin:datasets_dataset_add"), {"name": "digits", "kind": "demo", "split": "test"}
    )
    assert response.status_code == 302
    dataset = Dataset.objects.get(name="digits")
    response = client.post(
        reverse("admin:datasets_dataset_add"),
        {"name": "broken", "kind": "folder", "path": "/nonexistent", "split": "test"},
    )
    assert response.status_code == 200 and b"is not a folder" in response.content
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:datasets_stimulusset_add"),
            {
                "name": "admin-set",
                "dataset": dataset.pk,
                "kind": "grid",
                "mixing_policy": "mixup",
                "lams": "",
                "random_pairs": "3",
                "explicit_pairs": "",
                "seed": "0",
            },
        )
    assert response.status_code == 302
    stimulus_set = StimulusSet.objects.get(name="admin-set")
    assert stimulus_set.status == "succeeded" and stimulus_set.done == 33
    listing = client.get(reverse("admin:datasets_stimulusset_changelist"))
    assert b"33 / 33" in listing.content
    response = client.post(
        reverse("admin:datasets_stimulusset_add"),
        {
            "name": "bad-set",
            "dataset": dataset.pk,
            "kind": "grid",
            "mixing_policy": "mixup",
            "lams": "0.5, 2",
            "random_pairs": "3",
            "explicit_pairs": "",
            "seed": "0",
        },
    )
    assert b"lam must lie in" in response.content
    assert not StimulusSet.objects.filter(name="bad-set").exists()


def test_setup_demo_builds_playable_studies(client, db, capsys, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        call_command("setup_demo", "--base-url", "http://testserver")
    out = capsys.readouterr().out
    assert "http://testserver/s/demo-construct/" in out and "Researcher login: researcher /" in out
    assert "demo-grid: 66 stimuli" in out and "demo-single: 20 stimuli" in out
    call_command("setup_demo")  # a second run changes nothing but the password
    # One demo study per interface: the four of H-Mix, 2AFC and any added since.
    assert Study.objects.count() == len(demo_studies()) >= 5
    assert "http://testserver/s/demo-2afc/" in out
    for study in Study.objects.all():
        assert study.status == "live" and study.conditions.count() == 2
        page = client.get(f"/s/{study.slug}/")
        assert page.status_code == 200 and b"Consent" in page.content
