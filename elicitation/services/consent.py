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
from .sessions import NO_SESSION, FlowError, rebuild_adaptive_posteriors


def withdraw(session: Session) -> dict:
    """The participant withdraws from the study: the session is marked withdrawn (it
    gives its place back, is never paid and never opens again: its secret is replaced
    by one no browser holds), and, if the study's on_withdrawal is `erase`, its answers,
    feedback, quiz log and image-load failures are deleted; with `keep` the answers
    given so far stay research data, as the consent page said. Returns
    {"erased": number of judgments deleted}. Raises FlowError (409) for a session
    already withdrawn, 403 for one erased meanwhile."""
    with transaction.atomic():
        locked = (
            # Only the session's row: a lock on the study's row would hold every other
            # session's save at its judgment's foreign key check, after the save took
            # its pair's posterior row, which the rebuild below waits for (a deadlock).
            Session.objects.select_for_update(of=("self",))
            .select_related("study")
            .filter(pk=session.pk)
        ).first()
        if locked is None:  # erased (on request, or as a pilot) since the page was read
            raise FlowError(NO_SESSION, status=403)
        if locked.withdrawn_at is not None:
            raise FlowError(gettext_lazy("You have already withdrawn from this study."), status=409)
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
    itself, in every study. Their settled Prolific bonuses (paid, or never to be paid)
    stay in the ledger for the accounts, without the id (recruitment.services.
    pseudonymise_bonuses). Audited (by public id: the recruiter id is gone).
    Returns {"participant": public id or None, "sessions": n, "judgments": n,
    "bonuses": ledger rows pseudonymised}. Raises FlowError 404 for a recruiter id
    neither a participant nor a ledger row has, and 409 while a bonus of theirs is not
    settled (it needs the id to be paid or reconciled); nothing is erased then."""
    from recruitment.models import BonusPayment
    from recruitment.services import (
        forget_in_errors,
        pseudonymise_bonuses,
        unsettled_bonuses,
    )

    pid = (pid or "").strip()
    with transaction.atomic():
        # Locked: a second erasure of the same id waits here, then finds nothing (404).
        participant = (
            Participant.objects.select_for_update().filter(recruiter_pid=pid).first()
            if pid
            else None
        )
        ledger = BonusPayment.objects.select_for_update().filter(recruiter_pid=pid)
        ledger_studies = sorted(set(ledger.values_list("study_id", flat=True))) if pid else []
        if participant is None and not ledger_studies:
            raise FlowError("No participant has this recruiter id.", status=404)
        unsettled = unsettled_bonuses(pid).count()
        if unsettled:
            raise FlowError(
                f"{unsettled} Prolific bonus payment(s) of this participant are not settled "
                "(pending, being paid or needing reconciliation): pay, settle or cancel "
                "them on the study's Prolific page first. Nothing was erased.",
                status=409,
            )
        bonuses = pseudonymise_bonuses(ledger)
        forget_in_errors(pid)
        count = judgments = 0
        studies: list[int] = []
        public_id = None
        if participant is not None:
            public_id = participant.public_id
            # Locked first: an answer saved meanwhile waits, then finds its session
            # gone, instead of adding a judgment that protects the session (500).
            locked = dict(
                Session.objects.select_for_update()
                .filter(participant=participant)
                .values_list("pk", "study_id")
            )
            sessions = Session.objects.filter(pk__in=list(locked))
            studies = list(locked.values())
            judgments, _ = Judgment.objects.filter(session__in=sessions).delete()
            count = sessions.count()
            sessions.delete()  # image-load failures cascade
            participant.delete()
            if judgments:
                for study in Study.objects.filter(pk__in=studies):
                    rebuild_adaptive_posteriors(study)
        result = {
            "participant": public_id,
            "sessions": count,
            "judgments": judgments,
            "bonuses": bonuses,
        }
        who = f"participant {public_id}" if public_id else "a participant with no sessions"
        for study_id in sorted(set(studies) | set(ledger_studies)) or [None]:
            audit.record(
                user,
                AuditLog.Action.ERASE,
                study=study_id,
                detail=f"{who} erased on request: {count} sessions, {judgments} judgments, "
                f"{bonuses} bonus rows kept without the id",
            )
    return result


def drop_expired_recruiter_ids(now: datetime | None = None, days: int | None = None) -> dict:
    """Drop recruiter ids (PROLIFIC_PID, STUDY_ID, SESSION_ID) `days` (default
    settings.HILLMIX_RECRUITER_ID_RETENTION_DAYS) after a study closed: the sessions
    of studies closed before `now - days` lose their recruiter study and session ids,
    and a participant whose every session is in such a study loses their PROLIFIC_PID
    (one still in an open or recently closed study keeps it: that study may still pay
    or resume them). Settled Prolific bonuses of those studies (paid, or never to be
    paid) lose their PROLIFIC_PID too (recruitment.services.pseudonymise_bonuses);
    unsettled ones keep it until they are paid or cancelled. Their data stays,
    pseudonymous. Idempotent. Returns {"studies": slugs touched, "sessions": n,
    "participants": n, "bonuses": ledger rows pseudonymised}."""
    now = now or timezone.now()
    days = settings.HILLMIX_RECRUITER_ID_RETENTION_DAYS if days is None else days
    from recruitment.models import BonusPayment
    from recruitment.services import PSEUDONYM_PREFIX, SETTLED_STATES, pseudonymise_bonuses

    cutoff = now - timedelta(days=days)
    expired = Study.objects.filter(status=Study.Status.CLOSED, closed_at__lte=cutoff)
    with transaction.atomic():
        with_ids = Session.objects.filter(study__in=expired).filter(
            ~Q(recruiter_study_id="") | ~Q(recruiter_session_id="")
        )
        touched = dict(expired.filter(sessions__in=with_ids).values_list("pk", "slug").distinct())
        sessions = with_ids.update(recruiter_study_id="", recruiter_session_id="")
        kept = Session.objects.exclude(study__in=expired).values("participant_id")
        participants = Participant.objects.filter(
            recruiter_pid__isnull=False, sessions__study__in=expired
        ).exclude(pk__in=kept)
        for study_id, slug in (
            expired.filter(sessions__participant__in=participants)
            .values_list("pk", "slug")
            .distinct()
        ):
            touched[study_id] = slug
        dropped = Participant.objects.filter(pk__in=participants.values("pk")).update(
            recruiter_pid=None
        )
        ledger = BonusPayment.objects.filter(study__in=expired)
        for study_id, slug in (
            expired.filter(
                bonus_payments__in=ledger.filter(state__in=SETTLED_STATES).exclude(
                    recruiter_pid__startswith=PSEUDONYM_PREFIX
                )
            )
            .values_list("pk", "slug")
            .distinct()
        ):
            touched[study_id] = slug
        bonuses = pseudonymise_bonuses(ledger)
        for study_id in touched:
            audit.record(
                None,
                AuditLog.Action.DROP_RECRUITER_IDS,
                study=study_id,
                detail=f"recruiter ids dropped {days} days after the study closed",
            )
    return {
        "studies": sorted(touched.values()),
        "sessions": sessions,
        "participants": dropped,
        "bonuses": bonuses,
    }
