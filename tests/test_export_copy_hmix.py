"""The COPY export of the H-Mix import writes the Python path's bytes. A module of its
own: the import's module-wide transaction stays open until the module ends, and
pytest-django runs transactional tests (test_export_copy's) after the others, which
would put them inside it."""

import pytest

from tests.test_export_copy import assert_same_bytes
from tests.test_hmix import hmix_folder, imported, staff_client  # noqa: F401 (fixtures)


@pytest.mark.shared_data
def test_copy_export_of_the_hmix_import_writes_the_python_path_bytes(
    staff_client,  # noqa: F811
    imported,  # noqa: F811
    db,
    monkeypatch,
):
    from elicitation.models import Study

    studies = Study.objects.filter(slug__startswith="hmix")
    assert studies.exists()
    for study in studies:
        assert_same_bytes(staff_client, study, monkeypatch, "_cursor_copy")
