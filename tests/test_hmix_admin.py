"""The H-Mix import as a researcher starts it from the admin."""

import pytest

from elicitation.models import Judgment, Study

pytestmark = pytest.mark.shared_data


def test_admin_action_imports_through_the_task(
    shared_data, client, role_user, db, django_capture_on_commit_callbacks
):
    hmix_folder = shared_data / "hmix"
    client.force_login(role_user("r", "Researcher"))
    page = client.get("/admin/elicitation/study/import-hmix/")
    assert page.status_code == 200
    bad = client.post("/admin/elicitation/study/import-hmix/", {"folder": "/nonexistent"})
    assert b"is not a folder of H-Mix files" in bad.content and not Study.objects.exists()
    # A real folder outside the import folders, and one inside them without the H-Mix
    # files, get the same answer as a missing one: the form reveals no server files.
    for folder in ["/etc", str(shared_data / "cifar10h")]:
        other = client.post("/admin/elicitation/study/import-hmix/", {"folder": folder})
        assert b"is not a folder of H-Mix files in the import folders" in other.content
    assert not Study.objects.exists()
    response = client.post("/admin/elicitation/study/import-hmix/", {"folder": str(hmix_folder)})
    assert response.status_code == 302
    assert Judgment.objects.filter(study__slug="hmix-soft-label").count() == 216
