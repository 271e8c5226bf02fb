"""The demo that `make run` serves: the bundled digits, stimulus sets, a researcher."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from datasets.models import Dataset, StimulusSet
from datasets.services import create_stimulus_set, import_dataset

DEMO_DATASET = "demo-digits"
RESEARCHER = "researcher"


@dataclass
class DemoLogin:
    username: str
    password: str


def ensure_demo_stimuli() -> dict[str, StimulusSet]:
    dataset = Dataset.objects.filter(name=DEMO_DATASET).first() or import_dataset(
        name=DEMO_DATASET, kind="demo"
    )
    wanted = {
        "demo-grid": {"kind": "grid", "n_pairs": 6, "seed": 1},
        "demo-single": {"kind": "single", "n_pairs": 4, "seed": 2},
    }
    sets = {}
    for name, spec in wanted.items():
        existing = StimulusSet.objects.filter(name=name).first()
        sets[name] = existing or create_stimulus_set(name=name, dataset=dataset, **spec)
    return sets


def reset_researcher_login() -> DemoLogin:
    """A staff superuser with a fresh random password, printed once by setup_demo."""
    password = secrets.token_urlsafe(9)
    user_model = get_user_model()
    with transaction.atomic():
        user, _ = user_model.objects.get_or_create(username=RESEARCHER)
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
    return DemoLogin(RESEARCHER, password)
