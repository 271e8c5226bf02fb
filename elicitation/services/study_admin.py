"""Researcher actions on studies and sessions."""

from __future__ import annotations

from django.utils import timezone

from ..models import (
    Session,
    Study,
)
from ..study_rules import flow_errors
from .adaptive import fill_noise
from .sessions import FlowError, build_conditions

# --- Researcher actions ----------------------------------------------------------


def set_excluded(session: Session, excluded: bool) -> None:
    """Leave a participant's judgments out of aggregates and exports (or back in)."""
    Session.objects.filter(pk=session.pk).update(excluded=excluded)


def set_study_status(study: Study, status: str) -> None:
    """Open, close or return a study to draft. Opening checks that its flow can run
    (study_rules.flow_errors): a study stored before that check, or written around it,
    would fail every participant at consent. Raises FlowError, changing nothing."""
    if status not in Study.Status.values:
        raise FlowError(f"status must be one of {Study.Status.values}")
    if status in (Study.Status.LIVE, Study.Status.PILOT):  # piloting takes participants too
        stored = Study.objects.get(pk=study.pk)
        errors = flow_errors(
            stored.consent_items, stored.instruction_pages, stored.quiz, stored.feedback_questions
        )
        if errors:
            problems = "; ".join(f"{field}: {', '.join(m)}" for field, m in errors.items())
            raise FlowError(f"{study} cannot open until its flow is fixed ({problems})")
    Study.objects.filter(pk=study.pk).update(status=status, updated_at=timezone.now())


def save_study(study: Study) -> Study:
    """Store a new or edited study only if it can run (Study.clean: a valid flow and,
    once participants have started, nothing their sessions depend on changed).
    Raises django.core.exceptions.ValidationError, storing nothing."""
    # The flow's lists are judged by Study.clean (study_rules), which lets a closed
    # import have none; the fields' own "cannot be blank" would not.
    fill_noise(study)  # an adaptive study keeps the noise levels it was designed with
    study.full_clean(exclude=["consent_items", "instruction_pages"])
    study.save()
    return study


def _free_slug(base: str) -> str:
    max_length = Study._meta.get_field("slug").max_length
    for n in range(1, 1000):
        suffix = "-copy" if n == 1 else f"-copy-{n}"
        slug = base[: max_length - len(suffix)] + suffix
        if not Study.objects.filter(slug=slug).exists():
            return slug
    raise FlowError("no free slug for the copy: rename some copies first")


def copy_study(study: Study) -> Study:
    """A draft copy of a study (every setting, a new slug `<slug>-copy[-n]`, no
    participants) with its conditions built: how a researcher changes what running
    sessions depend on (study_rules.LOCKED_ONCE_STARTED) without breaking them.
    Raises FlowError when its conditions cannot be built (the copy is kept, as a
    draft without conditions, as the admin keeps a new study)."""
    copy = Study.objects.get(pk=study.pk)
    copy.pk = None
    copy.slug = _free_slug(study.slug)
    copy.status = Study.Status.DRAFT
    copy.save(force_insert=True)
    build_conditions(copy)
    return copy
