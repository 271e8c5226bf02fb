"""Consent law: a participant's withdrawal, a researcher's erasure of a participant's
data and its export for an access request (both by recruiter id, GDPR arts. 15 and
17), and recruiter ids dropped a set number of days after a study closes (storage
limitation, art. 5(1)(e)). Every action is written to the audit log
(services.audit)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy

from ..models import (
    AuditLog,
    ImageLoadFailure,
    Judgment,
    Participant,
    Session,
    Study,
    unheld_secret_hash,
)
from ..selectors import participant_data
from . import audit
from .sessions import FlowError, rebuild_adaptive_posteriors


def withdraw(session: Session) -> dict:
    """The participant withdraws from the study: the session is marked withdrawn (it
    gives its place back, is never paid and never opens again: its secret is replaced
    by one no browser holds), and, if the study's on_withdrawal is `erase`, its answers,
    feedback, quiz log and image-load failures are deleted; with `keep` the answers
    given so far stay research data, as the consent page said. Returns
    {"erased": number of judgments deleted}. Raises FlowError (409) for a session
    already withdrawn."""
    with transaction.atomic():
        locked = Session.objects.select_for_update().select_related("study").get(pk=session.pk)
        if locked.withdrawn_at is not None:
            raise FlowError(
                gettext_lazy("You have already withdrawn from this study."), status=409
            )
        study = locked.study
        erase = study.on_withdrawal == Study.OnWithdrawal.ERASE
        erased = 0
        fields = {"withdrawn_at": timezone.now(), "token_hash": unheld_secret_hash()}
        if erase:
            erased, _ = Judgment.objects.filter(session=locked).delete()
            ImageLoadFailure.objects.filter(session=locked).delete()
            fields.update(feedback={}, quiz_log=[])
        Session.objects.filter(pk=locked.pk).update(**fields)
        if erased:
            rebuild_adaptive_posteriors(study)
        audit.record(
            None,
            AuditLog.Action.WITHDRAW,
            study=study,
            detail=f"participant {locked.participant.public_id}: "
            f"{'answers erased' if erase else 'answers kept'} ({erased} judgments erased)",
        )
    return {"erased": erased}


def _participant_by_pid(pid: str) -> Participant:
    pid = (pid or "").strip()
    participant = Participant.objects.filter(recruiter_pid=pid).first() if pid else None
    if participant is None:
        raise FlowError("No participant has this recruiter id.", status=404)
    return participant


def access_export(user, pid: str) -> dict:
    """Everything stored about the participant with recruiter id `pid`, for their
    access request (GDPR art. 15): selectors.participant_data. Audited. Raises
    FlowError 404 for an unknown recruiter id."""
    participant = _participant_by_pid(pid)
    data = participant_data(participant)
    audit.record(
        user,
        AuditLog.Action.ACCESS_EXPORT,
        detail=f"participant {participant.public_id}: "
        f"{len(data['sessions'])} sessions, {sum(len(s['judgments']) for s in data['sessions'])}"
        " judgments",
    )
    return data


def erase_participant(user, pid: str) -> dict:
    """Erase everything stored about the participant with recruiter id `pid` (GDPR
    art. 17): their judgments, image-load failures, sessions and the participant
    itself, in every study. Audited (by public id: the recruiter id is gone).
    Returns {"participant": public id, "sessions": n, "judgments": n}. Raises
    FlowError 404 for an unknown recruiter id, erasing nothing."""
    participant = _participant_by_pid(pid)
    with transaction.atomic():
        sessions = Session.objects.filter(participant=participant)
        studies = list(sessions.values_list("study_id", flat=True))
        judgments, _ = Judgment.objects.filter(session__in=sessions).delete()
        count = sessions.count()
        sessions.delete()  # image-load failures cascade
        participant.delete()
        if judgments:
            for study in Study.objects.filter(pk__in=studies):
                rebuild_adaptive_posteriors(study)
        result = {
            "participant": participant.public_id,
            "sessions": count,
            "judgments": judgments,
        }
        for study_id in studies or [None]:
            audit.record(
                user,
                AuditLog.Action.ERASE,
                study=study_id,
                detail=f"participant {participant.public_id} erased on request: "
                f"{count} sessions, {judgments} judgments",
            )
    return result


def drop_expired_recruiter_ids(
    now: datetime | None = None, days: int | None = None
) -> dict:
    """Drop recruiter ids (PROLIFIC_PID, STUDY_ID, SESSION_ID) `days` (default
    settings.HILLMIX_RECRUITER_ID_RETENTION_DAYS) after a study closed: the sessions
    of studies closed before `now - days` lose their recruiter study and session ids,
    and a participant whose every session is in such a study loses their PROLIFIC_PID
    (one still in an open or recently closed study keeps it: that study may still pay
    or resume them). Their data stays, pseudonymous. Idempotent. Returns
    {"studies": slugs touched, "sessions": n, "participants": n}."""
    now = now or timezone.now()
    days = settings.HILLMIX_RECRUITER_ID_RETENTION_DAYS if days is None else days
    cutoff = now - timedelta(days=days)
    expired = Study.objects.filter(status=Study.Status.CLOSED, closed_at__lte=cutoff)
    with transaction.atomic():
        with_ids = Session.objects.filter(study__in=expired).filter(
            ~Q(recruiter_study_id="") | ~Q(recruiter_session_id="")
        )
        touched = dict(
            expired.filter(sessions__in=with_ids).values_list("pk", "slug").distinct()
        )
        sessions = with_ids.update(recruiter_study_id="", recruiter_session_id="")
        kept = Session.objects.exclude(study__in=expired).values("participant_id")
        participants = Participant.objects.filter(
            recruiter_pid__isnull=False, sessions__study__in=expired
        ).exclude(pk__in=kept)
        for study_id, slug in expired.filter(
            sessions__participant__in=participants
        ).values_list("pk", "slug").distinct():
            touched[study_id] = slug
        dropped = Participant.objects.filter(pk__in=participants.values("pk")).update(
            recruiter_pid=None
        )
        for study_id in touched:
            audit.record(
                None,
                AuditLog.Action.DROP_RECRUITER_IDS,
                study=study_id,
                detail=f"recruiter ids dropped {days} days after the study closed",
            )
    return {"studies": sorted(touched.values()), "sessions": sessions, "participants": dropped}
