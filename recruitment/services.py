"""Writes: linking a study to Prolific, approving and rejecting its submissions, and the
bonus ledger.

The ledger's rule (Prolific's bonus set-up and its pay call are both not idempotent:
a repeated pay call pays again):

1. record_bonuses writes the intent (study, participant, cents, reason), once: the
   same participant and reason again is the same row, never a second bonus.
2. pay_bonuses takes the study's payment lock (a PostgreSQL advisory lock held by
   its connection: a second payer of the same study leaves at once, and a payer that
   crashed releases it with its connection), then
   a. marks the pending rows `creating` (rows locked with SELECT ... FOR UPDATE,
      committed) before asking Prolific to set them up, and records the bonus id
      (`created`) when the answer comes;
   b. marks `created` rows `paying` (committed) before the pay call, and `paid` when
      Prolific accepts it (or answers that it was paid already).
3. A row found `creating` or `paying` by a later run was left by a crash or a lost
   answer. Prolific's API has no lookup of bonus set-ups, so a `creating` row is
   never set up again blindly: it becomes `reconcile`. A `paying` row is `paid` when
   the participant's submission shows a paid bonus of its amount (the submission's
   `bonus_payments`), else `reconcile` too (Prolific pays asynchronously, so no
   bonus there yet proves nothing). A researcher settles `reconcile` rows after
   looking at the study's bonuses on Prolific (reconcile_bonus): "retry" (nothing
   was set up or paid: back to pending), "paid" (it was paid) or "cancel".
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from elicitation.models import Study

from . import credentials
from .models import BonusPayment, ProlificStudy
from .prolific import (
    BULK_LIMIT,
    InvalidRequest,
    OutcomeUnknown,
    ProlificClient,
    ProlificError,
    Submission,
    already_paid,
    validate_rejection,
)

logger = logging.getLogger(__name__)
State = BonusPayment.State


class NotConfigured(Exception):
    """No Prolific token, or the study is not linked to a Prolific study."""


class PaymentRunning(Exception):
    """Another payment run holds this study's payment lock."""


def client() -> ProlificClient:
    """A client with the lab's token (credentials.api_token) and PROLIFIC_API_URL.
    NotConfigured without a token."""
    token = credentials.api_token()
    if not token:
        raise NotConfigured("No Prolific API token: set PROLIFIC_API_TOKEN or store one.")
    return ProlificClient(
        token,
        settings.PROLIFIC_API_URL,
        requests_per_second=settings.PROLIFIC_REQUESTS_PER_SECOND,
    )


def link_study(study: Study, prolific_study_id: str) -> ProlificStudy:
    """Record which Prolific study `study` recruits from (ValueError when empty)."""
    prolific_study_id = prolific_study_id.strip()
    if not prolific_study_id or len(prolific_study_id) > 64 or "/" in prolific_study_id:
        raise ValueError("Give Prolific's study id (letters and digits).")
    link, _ = ProlificStudy.objects.update_or_create(
        study=study, defaults={"prolific_study_id": prolific_study_id}
    )
    return link


def prolific_study_id(study: Study) -> str:
    link = ProlificStudy.objects.filter(study=study).first()
    if link is None:
        raise NotConfigured(f"{study.slug} is not linked to a Prolific study.")
    return link.prolific_study_id


def submission_reference(submission_id: str) -> str:
    """An opaque name for a submission in the dashboard's forms (an HMAC of its id
    under SECRET_KEY): the page never carries the id itself, which is a recruiter id."""
    digest = hmac.new(
        settings.SECRET_KEY.encode(), f"prolific:{submission_id}".encode(), hashlib.sha256
    )
    return digest.hexdigest()[:20]


def resolve_references(submissions: list[Submission], references: list[str]) -> list[Submission]:
    """The study's submissions named by `references` (submission_reference); a
    reference naming none of them raises InvalidRequest."""
    by_reference = {submission_reference(s.id): s for s in submissions}
    unknown = [ref for ref in references if ref not in by_reference]
    if unknown:
        raise InvalidRequest(f"{len(unknown)} selected submission(s) are not in this study.")
    return [by_reference[ref] for ref in dict.fromkeys(references)]


# --- approvals and rejections -----------------------------------------------------


def approve(api: ProlificClient, submissions: list[Submission]) -> int:
    """Approve `submissions` through the bulk endpoint, in batches of BULK_LIMIT.
    Returns how many were sent."""
    ids = [s.id for s in submissions]
    if not ids:
        raise InvalidRequest("Select at least one submission.")
    for start in range(0, len(ids), BULK_LIMIT):
        api.bulk_approve(ids[start : start + BULK_LIMIT])
    return len(ids)


def reject(api: ProlificClient, submissions: list[Submission], message: str, category: str) -> int:
    """Reject each of `submissions` with `message` and `category` (checked before any
    is sent: InvalidRequest). Returns how many were rejected."""
    validate_rejection(message, category)
    if not submissions:
        raise InvalidRequest("Select at least one submission.")
    for submission in submissions:
        api.reject(submission.id, message, category)
    return len(submissions)


# --- the bonus ledger -------------------------------------------------------------


def record_bonuses(
    study: Study, lines: list[tuple[str, int]], reason: str, user=None
) -> list[BonusPayment]:
    """Record bonus intents ((PROLIFIC_PID, cents) pairs) for `study`, before anything
    is sent. A participant already recorded for `reason` keeps their row (the same
    intent again is not a second bonus); a different amount for it raises
    InvalidRequest and records nothing."""
    reason = reason.strip()
    if not reason or len(reason) > 100:
        raise InvalidRequest("Give a reason for the bonus (at most 100 characters).")
    if not lines:
        raise InvalidRequest("No participants to pay a bonus to.")
    for pid, cents in lines:
        if not pid or not isinstance(cents, int) or cents <= 0:
            raise InvalidRequest("Each bonus needs a participant and a positive amount.")
    rows = []
    with transaction.atomic():
        for pid, cents in lines:
            row, made = BonusPayment.objects.get_or_create(
                study=study,
                recruiter_pid=pid,
                reason=reason,
                defaults={"amount_cents": cents, "created_by": user},
            )
            if not made and row.amount_cents != cents:
                raise InvalidRequest(
                    f"A bonus of {row.amount_cents} cents is already recorded for one of "
                    f"these participants with reason {reason!r}; give another reason."
                )
            rows.append(row)
    return rows


# Test hook: called with the step's name between a ledger write and the next call to
# Prolific; tests make it raise to stand in for a crash there.
def checkpoint(step: str) -> None:
    return None


@contextmanager
def payment_lock(study: Study) -> Iterator[None]:
    """Hold `study`'s payment lock for the block (a session-level PostgreSQL advisory
    lock, released when the block ends or the connection dies); PaymentRunning when
    another connection holds it."""
    key = zlib.crc32(b"recruitment.bonus") & 0x7FFFFFFF
    if connection.vendor != "postgresql":  # pragma: no cover - the project runs PostgreSQL
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [key, study.pk])
        if not cursor.fetchone()[0]:
            raise PaymentRunning(f"Bonuses of {study.slug} are being paid right now.")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [key, study.pk])


@dataclass
class PaymentReport:
    """What one pay_bonuses run did, counted in ledger rows."""

    created: int = 0
    paid: int = 0
    reconcile: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def _move(ids: list[int], to: str, **values) -> None:
    BonusPayment.objects.filter(pk__in=ids).update(state=to, updated_at=timezone.now(), **values)


def _recover_interrupted(api: ProlificClient, study: Study, report: PaymentReport) -> None:
    """Rows a crash or a lost answer left `creating` or `paying` (module docstring, 3)."""
    with transaction.atomic():
        creating = list(
            BonusPayment.objects.select_for_update()
            .filter(study=study, state=State.CREATING)
            .values_list("pk", flat=True)
        )
        _move(
            creating,
            State.RECONCILE,
            error="Set-up sent but its answer was never recorded: check Prolific.",
        )
        report.reconcile += len(creating)
    paying = list(BonusPayment.objects.filter(study=study, state=State.PAYING).order_by("pk"))
    if not paying:
        return
    paid_by_pid = _paid_bonuses(api, study, {row.recruiter_pid for row in paying})
    for row in paying:
        with transaction.atomic():
            row = BonusPayment.objects.select_for_update().get(pk=row.pk)
            if row.state != State.PAYING:
                continue
            if row.amount_cents in paid_by_pid.get(row.recruiter_pid, []):
                paid_by_pid[row.recruiter_pid].remove(row.amount_cents)
                _move([row.pk], State.PAID, paid_at=timezone.now(), error="")
                report.paid += 1
            else:
                _move(
                    [row.pk],
                    State.RECONCILE,
                    error="Pay sent but its answer was never recorded: check Prolific.",
                )
                report.reconcile += 1


def _paid_bonuses(api: ProlificClient, study: Study, pids: set[str]) -> dict[str, list[int]]:
    """Per PROLIFIC_PID in `pids`, the bonuses Prolific shows paid on their
    submissions to the study (cents)."""
    paid: dict[str, list[int]] = {}
    for submission in api.iter_submissions(prolific_study_id(study)):
        if submission.participant_id not in pids:
            continue
        detail = api.get_submission(submission.id)
        amounts = [int(round(float(a))) for a in detail.get("bonus_payments") or []]
        paid.setdefault(submission.participant_id, []).extend(amounts)
    return paid


def pay_bonuses(api: ProlificClient, study: Study, user=None) -> PaymentReport:
    """Set up and pay every pending bonus of `study` (module docstring): one bulk
    set-up per BULK_LIMIT rows, then one pay call per bulk bonus id, each step
    committed to the ledger before the next request. Rows left by an earlier crash
    are recovered first. PaymentRunning when another run holds the study's lock;
    NotConfigured when the study has no Prolific study."""
    report = PaymentReport()
    target = prolific_study_id(study)
    with payment_lock(study):
        _recover_interrupted(api, study, report)
        while True:
            with transaction.atomic():
                rows = list(
                    BonusPayment.objects.select_for_update()
                    .filter(study=study, state=State.PENDING)
                    .order_by("pk")[:BULK_LIMIT]
                )
                if not rows:
                    break
                ids = [row.pk for row in rows]
                _move(ids, State.CREATING, error="")
            checkpoint("before_create")
            try:
                bonus_id = api.create_bonuses(
                    target, [(row.recruiter_pid, row.amount_cents) for row in rows]
                )
            except OutcomeUnknown as error:
                _move(ids, State.RECONCILE, error=f"Set-up answer lost: {error}")
                report.reconcile += len(ids)
                report.errors.append(str(error))
                continue
            except ProlificError as error:
                if error.status == 429 or error.status >= 500:
                    # Refused before acting on it (429 after every retry): pending again.
                    _move(ids, State.PENDING, error=str(error))
                    report.errors.append(str(error))
                    break
                _move(ids, State.FAILED, error=str(error))
                report.failed += len(ids)
                report.errors.append(str(error))
                continue
            checkpoint("after_create")
            _move(ids, State.CREATED, bonus_id=bonus_id)
            report.created += len(ids)
            checkpoint("after_record")
        _pay_created(api, study, report, user)
    return report


def _pay_created(api: ProlificClient, study: Study, report: PaymentReport, user) -> None:
    bonus_ids = list(
        BonusPayment.objects.filter(study=study, state=State.CREATED)
        .values_list("bonus_id", flat=True)
        .distinct()
    )
    for bonus_id in bonus_ids:
        with transaction.atomic():
            ids = list(
                BonusPayment.objects.select_for_update()
                .filter(study=study, state=State.CREATED, bonus_id=bonus_id)
                .values_list("pk", flat=True)
            )
            if not ids:
                continue
            _move(ids, State.PAYING)
        checkpoint("before_pay")
        try:
            api.pay_bonuses(bonus_id)
        except OutcomeUnknown as error:
            # Left `paying`: the next run pays nothing again and looks for the
            # payment on the participants' submissions (_recover_interrupted).
            _move(ids, State.PAYING, error=f"Pay answer lost: {error}")
            report.errors.append(str(error))
            continue
        except ProlificError as error:
            if already_paid(error):
                pass  # paid by an earlier call: record it as paid below
            elif error.status == 429:
                _move(ids, State.CREATED, error=str(error))  # not acted on: pay later
                report.errors.append(str(error))
                continue
            else:
                _move(ids, State.RECONCILE, error=str(error))
                report.reconcile += len(ids)
                report.errors.append(str(error))
                continue
        checkpoint("after_pay")
        _move(ids, State.PAID, paid_at=timezone.now(), error="")
        report.paid += len(ids)
        _audit(user, study, f"paid bonus {bonus_id} to {len(ids)} participant(s)")


def reconcile_bonus(row_id: int, study: Study, outcome: str, user=None) -> BonusPayment:
    """Settle a `reconcile` (or `failed`) row of `study` after looking at Prolific:
    outcome "retry" (nothing was set up or paid: pending again, paid by the next
    run), "paid" (Prolific shows it paid) or "cancel" (never to be paid; the row
    stays, so the same intent cannot be recorded again). InvalidRequest otherwise."""
    if outcome not in ("retry", "paid", "cancel"):
        raise InvalidRequest("Choose retry, paid or cancel.")
    with transaction.atomic():
        row = BonusPayment.objects.select_for_update().filter(pk=row_id, study=study).first()
        if row is None or row.state not in (State.RECONCILE, State.FAILED):
            raise InvalidRequest("Only a bonus that needs reconciliation can be settled.")
        if outcome != "cancel" and is_pseudonymised(row):
            raise InvalidRequest(
                "This participant's id was dropped (erasure or retention): the bonus can "
                "only be cancelled."
            )
        if outcome == "retry":
            row.state, row.bonus_id = State.PENDING, ""
        elif outcome == "paid":
            row.state, row.paid_at = State.PAID, timezone.now()
        else:
            row.state = State.FAILED
        row.error = f"settled by {user.get_username() if user else 'the system'}: {outcome}"
        row.save()
    _audit(user, study, f"bonus {row.pk} settled: {outcome}")
    return row


# --- the ledger under consent law ----------------------------------------------------

# Settled rows: Prolific paid them, or nothing was set up and none will be paid (a
# refused set-up or a cancelled bonus). Every other state may still move money, so
# the participant's id is still needed to pay or reconcile it.
SETTLED_STATES = (State.PAID, State.FAILED)
# A ledger row whose PROLIFIC_PID was dropped carries this and its own key instead
# (unique, so one_bonus_per_reason still holds); never a Prolific id, which is hex.
PSEUDONYM_PREFIX = "removed-"


def is_pseudonymised(row: BonusPayment) -> bool:
    """Whether `row`'s PROLIFIC_PID was dropped (pseudonymise_bonuses)."""
    return row.recruiter_pid.startswith(PSEUDONYM_PREFIX)


def unsettled_bonuses(recruiter_pid: str):
    """The ledger rows of `recruiter_pid` (any study) that may still move money, locked
    (SELECT ... FOR UPDATE) when run inside a transaction."""
    return BonusPayment.objects.filter(recruiter_pid=recruiter_pid).exclude(
        state__in=SETTLED_STATES
    )


def pseudonymise_bonuses(rows) -> int:
    """Drop the PROLIFIC_PID of the settled ledger rows among `rows` (a BonusPayment
    queryset), keeping study, amount, reason, state, bonus id and times for the
    accounts: each gets PSEUDONYM_PREFIX and its own key instead, and loses its note
    (Prolific's refusals name ids). Rows not settled keep
    their id (it is needed to pay or reconcile them). Returns the number of rows
    changed; idempotent."""
    from django.db.models import CharField, Value
    from django.db.models.functions import Cast, Concat

    return (
        rows.filter(state__in=SETTLED_STATES)
        .exclude(recruiter_pid__startswith=PSEUDONYM_PREFIX)
        .update(
            recruiter_pid=Concat(Value(PSEUDONYM_PREFIX), Cast("pk", CharField())),
            # Prolific's refusals name the ids of the batch ("Invalid ids: [...]").
            error="",
            updated_at=timezone.now(),
        )
    )


def forget_in_errors(recruiter_pid: str) -> int:
    """Remove `recruiter_pid` from the notes of every ledger row (Prolific's refusal of
    a bulk set-up names every id of the batch, so other participants' rows can carry
    it). Returns the number of rows changed."""
    from django.db.models import Value
    from django.db.models.functions import Replace

    if not recruiter_pid:
        return 0
    return BonusPayment.objects.filter(error__contains=recruiter_pid).update(
        error=Replace("error", Value(recruiter_pid), Value("(removed)"))
    )


def redact_errors(rows: list[BonusPayment], recruiter_pids: set[str]) -> None:
    """Hide `recruiter_pids` in the notes of `rows` (in memory, for a page shown to a
    user who may not see recruiter ids)."""
    for row in rows:
        for pid in recruiter_pids:
            if pid and pid in row.error:
                row.error = row.error.replace(pid, "(hidden)")


def _audit(user, study: Study, detail: str) -> None:
    from elicitation.models import AuditLog
    from elicitation.services import audit

    audit.record(user, AuditLog.Action.PAYMENT, study=study, detail=detail)
