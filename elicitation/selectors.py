"""Reads for the participant flow."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from datasets.models import Stimulus

from .models import Condition, ConditionItem, Interface, Session, Study


def study_by_slug(slug: str) -> Study | None:
    return Study.objects.select_related("stimulus_set__dataset").filter(slug=slug).first()


def session_by_id(slug: str, session_id: int | None) -> Session | None:
    """A session of the study `slug`, with its study, stimulus set and dataset."""
    if session_id is None:
        return None
    return (
        Session.objects.select_related("study__stimulus_set__dataset")
        .filter(pk=session_id, study__slug=slug)
        .first()
    )


def session_by_recruiter_pid(study: Study, pid: str) -> Session | None:
    if not pid:
        return None
    return (
        Session.objects.select_related("participant", "condition")
        .filter(study=study, participant__recruiter_pid=pid)
        .first()
    )


def condition_loads(study: Study) -> QuerySet[Condition]:
    """Conditions with `load`: completed sessions plus in-progress ones seen recently."""
    fresh_since = timezone.now() - timedelta(minutes=study.stale_after_minutes)
    holding = Q(sessions__state=Session.State.COMPLETE) | Q(sessions__last_seen_at__gte=fresh_since)
    return (
        Condition.objects.filter(study=study)
        .annotate(load=Count("sessions", filter=holding))
        .order_by("load", "position", "pk")
    )


def grid_lams(study: Study) -> list[float]:
    return sorted(float(x) for x in study.stimulus_set.lams)


def trial_item(session: Session, trial_index: int) -> tuple[dict, ConditionItem]:
    spec = session.trial_order[trial_index]
    item = ConditionItem.objects.select_related("pair", "stimulus").get(
        condition_id=session.condition_id, position=spec["item"]
    )
    return spec, item


def next_trial(session: Session) -> dict | None:
    """What the trial page needs to show the next trial, or None when all are done."""
    if session.state != Session.State.TRIALS or session.position >= session.trial_count:
        return None
    spec, item = trial_item(session, session.position)
    pair = item.pair
    trial = {
        "index": session.position,
        "total": session.trial_count,
        "interface": session.study.interface,
        "class1": pair.class1,
        "class2": pair.class2,
        "ask_confidence": session.study.ask_confidence,
    }
    if session.study.is_grid:
        urls = {
            round(s.lam, 4): s.image.url
            for s in Stimulus.objects.filter(pair=pair).only("lam", "image")
        }
        if "start_lam" in spec:
            trial["start_lam"] = spec["start_lam"]
            trial["images"] = [{"lam": lam, "url": urls[round(lam, 4)]} for lam in sorted(urls)]
        else:
            trial["images"] = [{"lam": lam, "url": urls[round(lam, 4)]} for lam in spec["order"]]
    else:
        trial["image"] = item.stimulus.image.url
        if session.study.interface == Interface.SOFT_LABEL:
            trial["class_names"] = session.study.stimulus_set.dataset.class_names
    return trial


def progress(session: Session) -> dict:
    return {"done": session.position, "total": session.trial_count}
