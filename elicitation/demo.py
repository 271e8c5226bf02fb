"""The demo that `make run` serves: the bundled digits, stimulus sets, a researcher."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from datasets.models import Dataset, StimulusSet
from datasets.services import create_stimulus_set, generate_stimuli, import_dataset

from . import interfaces
from .models import Study
from .services import build_conditions, set_study_status

DEMO_DATASET = "demo-digits"
RESEARCHER = "researcher"


@dataclass
class DemoLogin:
    username: str
    password: str


# The demo's stimulus sets. Interfaces that disclose the same things (InterfaceSpec
# shows / hides) share one; Construct (every image's lam in its step order) and the soft
# label (hides the classes 2AFC and Infer name) each get pairs of their own, or they
# could not be open beside the others (study_rules.disclosure_conflicts).
DEMO_SETS = {
    "demo-grid": {"kind": "grid", "n_pairs": 6, "seed": 1},
    "demo-single": {"kind": "single", "n_pairs": 4, "seed": 2},
    "demo-construct": {"kind": "grid", "n_pairs": 6, "seed": 3},
    "demo-soft-label": {"kind": "single", "n_pairs": 4, "seed": 4},
}


def demo_set_name(interface: str) -> str:
    """The demo stimulus set (DEMO_SETS) the demo study of `interface` shows."""
    spec = interfaces.get(interface)
    own = f"demo-{spec.name.replace('_', '-')}"
    return own if own in DEMO_SETS else ("demo-grid" if spec.grid else "demo-single")


def ensure_demo_stimuli() -> dict[str, StimulusSet]:
    dataset = Dataset.objects.filter(name=DEMO_DATASET).first() or import_dataset(
        name=DEMO_DATASET, kind="demo"
    )
    sets = {}
    for name, spec in DEMO_SETS.items():
        stimulus_set = StimulusSet.objects.filter(name=name).first() or create_stimulus_set(
            name=name, dataset=dataset, **spec
        )
        if stimulus_set.status != StimulusSet.Status.SUCCEEDED:
            # The demo must be playable at once, whether or not a worker is running.
            stimulus_set = generate_stimuli(stimulus_set.pk)
        sets[name] = stimulus_set
    return sets


def reset_researcher_login() -> DemoLogin:
    """A staff superuser with a fresh random password, printed once by setup_demo. The
    new password drops the API token issued under the old one (hillmix_site.auth), so a
    second `make run` leaves no old token working."""
    password = secrets.token_urlsafe(9)
    user_model = get_user_model()
    with transaction.atomic():
        user, _ = user_model.objects.get_or_create(username=RESEARCHER)
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
    return DemoLogin(RESEARCHER, password)


DEMO_INSTRUCTIONS = [
    "In this study you will see images that blend two handwritten digits.\n\n"
    "We want to know how 100 other people would see each image.",
    "Depending on the study you change an image with the keys G and H (or the buttons), "
    "pick one image from a row, move sliders, name the digits you see, or say which of two "
    "digits an image shows more of (keys F and J, or the buttons).\n\n"
    "Where the study asks how sure you are, move the confidence slider before you go on.\n\n"
    "There are no right or wrong answers.",
]
DEMO_QUIZ = [
    {
        "question": "What are we asking about?",
        "options": [
            "Which digit is clearest to me",
            "How 100 other people would see the image",
            "How fast I can answer",
        ],
        "answer": 1,
    },
]


def demo_studies() -> dict[str, dict]:
    """slug -> fields of the demo study of every interface that has one (its spec's
    `demo`: slug, title, ask_confidence)."""
    return {
        spec.demo["slug"]: {
            "title": spec.demo["title"],
            "interface": spec.name,
            "ask_confidence": spec.demo.get("ask_confidence", False),
        }
        for spec in interfaces.all()
        if spec.demo
    }


def ensure_demo_studies(sets: dict[str, StimulusSet]) -> list[Study]:
    """The demo study of every interface that has one, open. Each opens as a researcher's
    would (services.set_study_status), so the demo obeys the rules a real study does;
    a demo study from before the sets were kept apart moves to its own set while no one
    has taken it. Raises FlowError where a demo study cannot open."""
    studies = []
    for slug, spec in demo_studies().items():
        stimulus_set = sets[demo_set_name(spec["interface"])]
        study = Study.objects.filter(slug=slug).first()
        if study is None:
            study = Study.objects.create(
                slug=slug,
                stimulus_set=stimulus_set,
                status=Study.Status.DRAFT,
                consent_text="This is a demonstration of HILL-Mix. Your answers are stored "
                "under a random pseudonym and used only to test the platform.",
                consent_items=["I am 18 or older.", "I agree to take part."],
                instruction_pages=DEMO_INSTRUCTIONS,
                quiz=DEMO_QUIZ,
                feedback_questions=["Was anything unclear?"],
                repeat_trials=1,
                condition_count=2,
                completion_code="DEMO-DONE",
                **spec,
            )
            build_conditions(study)
        elif study.stimulus_set_id != stimulus_set.pk and not study.sessions.exists():
            Study.objects.filter(pk=study.pk).update(
                stimulus_set=stimulus_set, status=Study.Status.DRAFT
            )
            study.refresh_from_db()
            build_conditions(study)
        studies.append(study)
    for study in studies:
        set_study_status(study, Study.Status.LIVE)
        study.refresh_from_db()
    return studies
