"""Reads: a study's Prolific submissions side by side with the platform's own live
sessions and their quality flags."""

from __future__ import annotations

from dataclasses import dataclass

from elicitation import reports
from elicitation.models import Session, Study

from .models import BonusPayment
from .prolific import Submission


@dataclass
class SubmissionRow:
    """One Prolific submission and the live session it matches (by SESSION_ID, else
    by PROLIFIC_PID), with that session's quality row (elicitation.reports)."""

    submission: Submission
    reference: str
    session: Session | None
    quality: dict | None
    bonuses: list[BonusPayment]


def live_sessions(study: Study):
    """The study's live sessions (Session.Kind.LIVE): pilots, previews and simulated
    participants are nobody's submission."""
    return reports.quality_sessions(study).filter(kind=Session.Kind.LIVE)


def submission_rows(
    study: Study,
    submissions: list[Submission],
    thresholds: reports.QualityThresholds | None = None,
) -> tuple[list[SubmissionRow], list[Session]]:
    """Rows for `submissions` joined with the study's live sessions, and the live
    sessions no submission names (e.g. people who came without Prolific's link)."""
    from .services import submission_reference

    sessions = list(live_sessions(study).select_related("participant", "condition"))
    quality = {
        row["session"].pk: row
        for row in reports.quality_report(
            study,
            thresholds or reports.QualityThresholds(),
            live_sessions(study),
        )
    }
    by_session_id = {s.recruiter_session_id: s for s in sessions if s.recruiter_session_id}
    by_pid = {s.participant.recruiter_pid: s for s in sessions if s.participant.recruiter_pid}
    bonuses: dict[str, list[BonusPayment]] = {}
    for bonus in BonusPayment.objects.filter(study=study):
        bonuses.setdefault(bonus.recruiter_pid, []).append(bonus)
    rows, matched = [], set()
    for submission in submissions:
        session = by_session_id.get(submission.id) or by_pid.get(submission.participant_id)
        if session is not None:
            matched.add(session.pk)
        rows.append(
            SubmissionRow(
                submission=submission,
                reference=submission_reference(submission.id),
                session=session,
                quality=quality.get(session.pk) if session is not None else None,
                bonuses=bonuses.get(submission.participant_id, []),
            )
        )
    unmatched = [s for s in sessions if s.pk not in matched]
    return rows, unmatched


def ledger(study: Study):
    """The study's bonus ledger, oldest first."""
    return BonusPayment.objects.filter(study=study).order_by("created_at", "pk")
