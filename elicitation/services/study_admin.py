"""Researcher actions on studies and sessions."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from datasets.models import Dataset

from ..live import OPEN_STATUSES, forget_live_studies, live_studies_showing_images_of
from ..models import (
    Judgment,
    Session,
    Study,
)
from ..study_rules import disclosure_conflicts, flow_errors
from .adaptive import fill_noise
from .sessions import FlowError, build_conditions, write_recomputed_posteriors

# --- Researcher actions ----------------------------------------------------------


def set_excluded(session: Session, excluded: bool) -> None:
    """Leave a participant's judgments out of aggregates, exports and, in an adaptive
    study, the posteriors of the session's pool, from which the next trials are chosen
    (or put them back in). The pool's rows of the pairs the session answered are
    rebuilt from the judgments that count in the same transaction, and
    every process's chooser re-reads them. Nothing happens for a session deleted since
    it was read."""
    from ..adaptive_design import pool_of

    with transaction.atomic():
        # The session's row first: its answers saved meanwhile wait for the toggle, then
        # see it (services.judgments reads `excluded` as it advances the session).
        locked = Session.objects.select_for_update().filter(pk=session.pk).first()
        if locked is None or locked.excluded == excluded:
            return
        Session.objects.filter(pk=locked.pk).update(excluded=excluded)
        study = Study.objects.get(pk=locked.study_id)
        pool = pool_of(locked.kind)
        if study.is_adaptive and pool is not None:
            answered = Judgment.objects.filter(session_id=locked.pk).values_list("pair_id")
            if pair_ids := sorted({p for (p,) in answered}):
                write_recomputed_posteriors(study, pool, pair_ids)


def open_conflicts(interface: str, stimulus_set_id: int, study_id: int | None) -> list[str]:
    """Why a study (`study_id`, None for a new one) of `interface` on the stimulus set
    may not take participants beside the studies taking them that show the same images
    (study_rules.disclosure_conflicts); empty: it may.

    Inside a transaction it first locks the images' dataset row until the transaction
    ends, so two studies that may not be open together cannot both open at once: call
    it in the transaction that opens the study."""
    if transaction.get_connection().in_atomic_block:
        list(Dataset.objects.select_for_update().filter(stimulus_sets=stimulus_set_id))
    others = live_studies_showing_images_of(stimulus_set_id, exclude=study_id)
    return disclosure_conflicts(interface, others)


def set_study_status(study: Study, status: str) -> None:
    """Open, close or return a study to draft. Opening checks that its flow can run
    (study_rules.flow_errors): a study stored before that check, or written around it,
    would fail every participant at consent; and that no open study showing the same
    images shows what this one hides, or hides what it shows (open_conflicts). Raises
    FlowError (409 for a conflicting study), changing nothing."""
    if status not in Study.Status.values:
        raise FlowError(f"status must be one of {Study.Status.values}")
    with transaction.atomic():
        stored = Study.objects.get(pk=study.pk)
        if status in (Study.Status.LIVE, Study.Status.PILOT):  # piloting takes participants too
            errors = flow_errors(
                stored.consent_items,
                stored.instruction_pages,
                stored.quiz,
                stored.feedback_questions,
            )
            if errors:
                problems = "; ".join(f"{field}: {', '.join(m)}" for field, m in errors.items())
                raise FlowError(f"{study} cannot open until its flow is fixed ({problems})")
        if status in OPEN_STATUSES and stored.status not in OPEN_STATUSES:
            conflicts = open_conflicts(stored.interface, stored.stimulus_set_id, stored.pk)
            if conflicts:
                raise FlowError(f"{study} cannot open: {'; '.join(conflicts)}.", status=409)
        Study.objects.filter(pk=study.pk).update(status=status, updated_at=timezone.now())
    forget_live_studies()


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
