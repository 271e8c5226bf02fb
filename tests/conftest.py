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


@pytest.fixture
def make_stimulus_set(db, demo_dataset, django_capture_on_commit_callbacks):
    from datasets.services import create_stimulus_set

    def make(name: str = "grid", kind: str = "grid", n_pairs: int = 4, seed: int = 0):
        with django_capture_on_commit_callbacks(execute=True):
            stimulus_set = create_stimulus_set(
                name=name, dataset=demo_dataset, kind=kind, n_pairs=n_pairs, seed=seed
            )
        stimulus_set.refresh_from_db()
        return stimulus_set

    return make


@pytest.fixture
def make_study(db, make_stimulus_set):
    """A live study on a fresh stimulus set, conditions built."""
    from elicitation.models import Study
    from elicitation.services import build_conditions

    def make(
        interface: str = "construct",
        slug: str | None = None,
        n_pairs: int = 4,
        conditions: int = 2,
        **fields,
    ):
        from elicitation import interfaces

        grid = interfaces.get(interface).grid
        slug = slug or f"study-{interface}".replace("_", "-")
        stimulus_set = make_stimulus_set(
            name=f"set-{slug}", kind="grid" if grid else "single", n_pairs=n_pairs
        )
        defaults = dict(
            title=f"Test {interface}",
            status="live",
            consent_text="Consent text.",
            consent_items=["I am 18 or older.", "I agree."],
            instruction_pages=["Page one.", "Page two."],
            quiz=[{"question": "Pick B", "options": ["A", "B"], "answer": 1}],
            feedback_questions=["Anything unclear?"],
            repeat_trials=1,
            condition_count=conditions,
            completion_code="DONE-123",
        )
        defaults.update(fields)
        study = Study.objects.create(
            slug=slug, interface=interface, stimulus_set=stimulus_set, **defaults
        )
        build_conditions(study)
        return study

    return make


@pytest.fixture
def role_user(db, django_user_model):
    """make(username, role, password="pw"): a staff user in one of the shipped role
    groups (hillmix_site.roles: "Analyst", "Researcher"). The groups come from a
    migration; a transactional test's flush removes them, so they are made again here."""
    from django.apps import apps
    from django.contrib.auth.models import Group

    from hillmix_site.roles import create_role_groups

    def make(username: str, role: str, password: str = "pw"):
        if not Group.objects.filter(name=role).exists():
            create_role_groups(apps)
        user = django_user_model.objects.create_user(username, password=password, is_staff=True)
        user.groups.add(Group.objects.get(name=role))
        return user

    return make


pytest_plugins = ["tests.browser", "tests.worker"]


@pytest.fixture(autouse=True)
def fresh_choosers():
    """Every test starts and ends with no adaptive chooser held in this process
    (services.adaptive keeps one per study and pool)."""
    from elicitation.services import adaptive

    adaptive.forget_state()
    yield
    adaptive.forget_state()


@pytest.fixture
def staff(client, role_user):
    """The test client logged in as a Researcher."""
    client.force_login(role_user("r", "Researcher"))
    return client
