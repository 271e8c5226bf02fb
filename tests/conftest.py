import os
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings as django_settings

from hillmix_site.celery import app as celery_app


def shared_data_dir() -> Path:
    return Path(django_settings.SHARED_DATA_DIR)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (or HILLMIX_SHARED_DATA); the test is skipped where it is absent."""
    path = shared_data_dir()
    if not (path / "hmix").is_dir():
        pytest.skip(f"shared H-Mix data not found at {path} (set HILLMIX_SHARED_DATA)")
    return path


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    """Each test writes its files into a fresh folder, so leftovers are visible."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = root
    return root


@pytest.fixture(autouse=True)
def eager_celery():
    """Tasks run in-process unless a test asks for a real worker."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture
def demo_dataset(db):
    from datasets.services import import_dataset

    return import_dataset(name="digits", kind="demo")


@pytest.fixture
def hmix_dataset(db, shared_data):
    from datasets.services import import_dataset

    return import_dataset(
        name="hmix-endpoints", kind="npz", path=shared_data / "hmix" / "hmix_endpoints.npz"
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def require_browser() -> bool:
    return os.environ.get("HILLMIX_REQUIRE_BROWSER") == "1"
