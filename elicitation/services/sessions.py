"""Participants' sessions: the flow's errors and recruiter ids, dealing a study into
conditions, starting and resuming sessions, consent to feedback."""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import unquote

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy

from datasets.selectors import pairs_of_set, stimuli_of_set

from .. import interfaces
from ..live import catalog_of, grid_lams
from ..models import (
    Condition,
    ConditionItem,
    Judgment,
    Participant,
    Session,
    Study,
)
from ..selectors import (
    condition_is_full,
    least_filled_condition,
    participant_by_recruiter_pid,
    session_of,
)
from .adaptive import prepare_posteriors

# Messages a participant can meet are translated, lazily: into the study's language,
# which the participant views activate.
NO_SESSION = gettext_lazy("No session for this study in this browser.")


class FlowError(Exception):
    """A participant request that cannot be honoured; `status` is the HTTP code to send."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class AlreadyCompleted(FlowError):
    """The recruiter id's session in this study is complete: it can be shown the study's
    completion page, never opened again."""

    def __init__(self) -> None:
        message = gettext_lazy("You have already completed this study. Thank you!")
        super().__init__(message, status=409)


class Withdrawn(FlowError):
    """The recruiter id's session in this study was withdrawn: it is never opened
    again."""

    def __init__(self) -> None:
        message = gettext_lazy("You have withdrawn from this study. Thank you for your time.")
        super().__init__(message, status=403)


class StudyFull(FlowError):
    """Every condition has reached the study's target: the newcomer is sent back to the
    recruiter."""

    def __init__(self) -> None:
        message = gettext_lazy("This study is full: every place has been taken.")
        super().__init__(message, status=403)


def printable(text: str, keep: str = "") -> str:
    """Text without control characters (NUL cannot even be stored in PostgreSQL)."""
    return "".join(c for c in text if c >= " " or c in keep).strip()


# A recruiter's placeholder left unfilled, as Prolific's own preview sends the study
# link: {{%PROLIFIC_PID%}}, {%STUDY_ID%}, %SESSION_ID%, or the same URL-encoded twice.
_PLACEHOLDER = re.compile(r"^(\{+\s*%?|%)[A-Za-z_ ]+(%?\s*\}+|%)$")


def is_placeholder(value: str) -> bool:
    """Whether a recruiter parameter is a placeholder its recruiter did not fill in
    (e.g. Prolific's `{{%PROLIFIC_PID%}}` in a study preview), never a real id."""
    value = value.strip()
    for _ in range(2):  # the link pasted already encoded, then encoded again
        if _PLACEHOLDER.match(value):
            return True
        value = unquote(value).strip()
    return bool(_PLACEHOLDER.match(value))


@dataclass(frozen=True)
class RecruiterIds:
    pid: str = ""
    study_id: str = ""
    session_id: str = ""
    # A preview (the study's preview link, or a recruiter link whose ids are unfilled
    # placeholders): a fresh session of kind preview, never resumed, no ids stored.
    preview: bool = False

    @classmethod
    def from_query(cls, query: dict) -> RecruiterIds:
        def clean(key: str) -> str:
            return printable(str(query.get(key, "")))[:100]

        ids = (clean("PROLIFIC_PID"), clean("STUDY_ID"), clean("SESSION_ID"))
        if any(is_placeholder(value) for value in ids if value):
            return cls(preview=True)
        return cls(*ids)


# --- Study set-up -------------------------------------------------------------


def build_conditions(study: Study, n_conditions: int | None = None) -> list[Condition]:
    """Split the study's stimulus set into n conditions (default: the study's
    condition_count), dealt round-robin.

    Grid interfaces get one item per pair; single interfaces one per stimulus.
    """
    n_conditions = n_conditions or study.condition_count
    study.stimulus_set.refresh_from_db(fields=["status"])  # a worker may have finished it
    if study.stimulus_set.status != "succeeded":
        raise FlowError(
            f"stimulus set {study.stimulus_set} is {study.stimulus_set.status}; "
            "build conditions once its images are ready"
        )
    if n_conditions < 1:
        raise FlowError("a study needs at least one condition")
    if study.sessions.exists():
        raise FlowError("conditions cannot change once participants have started")
    if study.is_grid:
        units = [(pair, None) for pair in pairs_of_set(study.stimulus_set)]
    else:
        units = [(s.pair, s) for s in stimuli_of_set(study.stimulus_set).order_by("pair", "lam")]
    if len(units) < n_conditions:
        raise FlowError(f"{len(units)} items cannot fill {n_conditions} conditions")
    with transaction.atomic():
        study.conditions.all().delete()
        conditions = [
            Condition.objects.create(study=study, name=f"c{i + 1}", position=i)
            for i in range(n_conditions)
        ]
        ConditionItem.objects.bulk_create(
            ConditionItem(
                condition=conditions[i % n_conditions],
                position=i // n_conditions,
                pair=pair,
                stimulus=stimulus,
            )
            for i, (pair, stimulus) in enumerate(units)
        )
    return conditions


# --- Starting and resuming ----------------------------------------------------


def _trial_order(study: Study, positions: list[int], rng: random.Random) -> list[dict]:
    """The condition's items (their positions) in a per-session random order, then
    repeats of earlier ones, with what each trial shows fixed now so a reload shows the
    same thing."""
    positions = list(positions)
    rng.shuffle(positions)
    repeats = rng.sample(positions, min(study.repeat_trials, len(positions)))
    order = [{"item": p, "repeat": False} for p in positions]
    order += [{"item": p, "repeat": True} for p in repeats]
    grid = grid_lams(study)
    interface = interfaces.get(study.interface)
    for spec in order:
        spec.update(interface.trial_spec(study, grid, rng))
    return order


def lock_study(study: Study) -> None:
    """Hold the study's row until the transaction ends, so new sessions are assigned one
    at a time. Not FOR UPDATE: that also blocks the key-share lock every saved answer's
    foreign key takes on the row. SQLite runs one writer at a time anyway."""
    lock = " FOR NO KEY UPDATE" if connection.features.has_select_for_no_key_update else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {Study._meta.db_table} WHERE id = %s{lock}", [study.pk])


def address_key(address: str) -> str:
    """A salted hash of a client address: enough to rate-limit, useless to identify."""
    return hashlib.sha256(f"{settings.SECRET_KEY}:{address}".encode()).hexdigest()


# pg_advisory_xact_lock's first key: this project's lock space for session starts.
_START_LOCK_SPACE = 0x484D  # "HM"


def _claim_start(key: str) -> None:
    """Refuse (429) a new session from the address hashed to `key` once it started
    HILLMIX_SESSION_STARTS_PER_MINUTE in the last minute. Inside the start's
    transaction, under a per-address lock on PostgreSQL held to its commit, so the
    count and the insert are one step: concurrent starts from one address cannot all
    pass a count none of them has added to yet. Other addresses never wait for it."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)",
                [_START_LOCK_SPACE, int(key[:8], 16) - 2**31],  # an int4 from the hash
            )
    recent = Session.objects.filter(
        start_address=key, started_at__gte=timezone.now() - timedelta(minutes=1)
    )
    if recent.count() >= settings.HILLMIX_SESSION_STARTS_PER_MINUTE:
        raise FlowError(
            gettext_lazy("Too many new sessions from your network; please wait a minute."),
            status=429,
        )


def start_session(
    study: Study,
    recruiter: RecruiterIds,
    address: str = "",
    quiz_answers: list[int | None] | None = None,
) -> Session:
    """A new session in the least-filled condition, or, for a recruiter id that has one
    in this study already, that session on `resume_session`'s terms. The session
    returned carries its new secret as `session.token` (the only time it is known: the
    database keeps its hash); set it as the browser's cookie.

    `quiz_answers` come with the consent from the page whose last screen is the quiz
    ([] in a study without one): a new session starts with them graded, in its trials
    if they pass. None: the quiz was not reached, the session starts at the
    instructions. `address` is the client's real address (hillmix_site.client_address):
    at most HILLMIX_SESSION_STARTS_PER_MINUTE starts per address and minute (429).

    The study row lock serialises assignment, so concurrent starts on PostgreSQL
    spread evenly over conditions. It is held for two statements and the commit: new
    participants arrive all at once when a study is posted.

    Raises FlowError: 403 closed study or a resume refused, 429 too many starts, 503 no
    conditions; StudyFull (403) when every condition has reached its target. Nothing is
    stored then.
    """
    participant = None if recruiter.preview else participant_by_recruiter_pid(recruiter.pid)
    existing = session_of(study, participant)
    if existing:
        return resume_session(existing, recruiter)
    kind = session_kind(study, recruiter)
    if not study.accepts_participants:
        raise FlowError(gettext_lazy("This study is not accepting participants."), status=403)
    key = address_key(address) if address else ""
    catalog = catalog_of(study)
    if study.is_adaptive:  # trials are chosen as they are served (services.adaptive)
        prepare_posteriors(study)
    rng = random.Random(secrets.randbits(64))
    try:
        with transaction.atomic():
            if key:
                _claim_start(key)
            participant = participant or Participant.objects.create(
                recruiter_pid=recruiter.pid or None
            )
            lock_study(study)
            least = least_filled_condition(study)
            if least is None:
                raise FlowError(gettext_lazy("This study has no conditions yet."), status=503)
            condition_id, filled = least
            if kind == Session.Kind.LIVE and condition_is_full(study, filled):
                raise StudyFull()
            session = Session(
                study=study,
                participant=participant,
                kind=kind,
                condition_id=condition_id,
                recruiter_study_id=recruiter.study_id,
                recruiter_session_id=recruiter.session_id,
                start_address=key,
                trial_order=(
                    []
                    if study.is_adaptive
                    else _trial_order(study, catalog.positions(condition_id), rng)
                ),
                **_first_attempt(study, quiz_answers),
            )
            session.new_secret()
            session.save(force_insert=True)
            return session
    except IntegrityError:
        # The same recruiter id started twice at once: the other request won, and its
        # browser holds the secret.
        raise FlowError(
            gettext_lazy(
                "Your session has just started in another window; please reload this page."
            ),
            status=409,
        ) from None


def session_kind(study: Study, recruiter: RecruiterIds) -> str:
    """What a new session is (Session.Kind): a preview for the preview link or
    unfilled placeholders, a pilot while the study is piloting, live otherwise. Only
    live sessions are research data (reports.counted)."""
    if recruiter.preview:
        return Session.Kind.PREVIEW
    if study.status == Study.Status.PILOT:
        return Session.Kind.PILOT
    return Session.Kind.LIVE


def delete_non_live_sessions(study: Study, kinds: list[str] | None = None) -> int:
    """Delete the study's pilot and preview sessions (or those of `kinds`, never
    live ones) with their judgments and image-load failures, and the participants
    left with no session; an adaptive study's pair posteriors are recomputed without
    the deleted judgments. Returns how many sessions were deleted. Raises FlowError
    (400) for an unknown kind or the live one, deleting nothing."""
    kinds = list(kinds or [Session.Kind.PILOT, Session.Kind.PREVIEW])
    if not kinds or any(k not in Session.Kind.values or k == Session.Kind.LIVE for k in kinds):
        raise FlowError("only pilot, preview or simulated sessions can be deleted")
    with transaction.atomic():
        # Locked first: an answer saved meanwhile waits, then finds its session gone,
        # instead of adding a judgment that protects the session from deletion.
        locked = dict(
            Session.objects.select_for_update()
            .filter(study=study, kind__in=kinds)
            .values_list("pk", "participant_id")
        )
        participant_ids = set(locked.values())
        sessions = Session.objects.filter(pk__in=list(locked))
        Judgment.objects.filter(session__in=sessions).delete()
        count, _ = sessions.delete()  # image-load failures cascade
        Participant.objects.filter(pk__in=participant_ids, sessions__isnull=True).delete()
        rebuild_adaptive_posteriors(study)
    return count


def rebuild_adaptive_posteriors(study: Study) -> None:
    """An adaptive study's stored pair posteriors recomputed from the judgments left
    (write_recomputed_posteriors), after judgments were deleted (pilots, a withdrawal,
    an erasure); every process re-reads them. Nothing for a fixed study."""
    if not study.is_adaptive:
        return
    from .adaptive import forget_state

    write_recomputed_posteriors(study)
    transaction.on_commit(lambda: forget_state(study.pk))


def write_recomputed_posteriors(
    study: Study, pool: str | None = None, pair_ids: list[int] | None = None
) -> None:
    """Store posteriors as recomputed from the study's judgments that count
    (selectors.recomputed_posteriors): every pool that has rows or whose sessions stored
    judgments (their rows made first, from the prior), or only `pool`'s rows of
    `pair_ids`. Call inside a transaction; this process's chooser forgets the study once
    it commits, the others re-read the rows whose count moved (services.adaptive)."""
    from ..adaptive_design import kinds_in_pool
    from ..models import PairPosterior
    from ..selectors import recomputed_posteriors
    from .adaptive import forget_state

    if pool is not None:
        pools = [pool]
    else:
        have = set(PairPosterior.objects.filter(study=study).values_list("pool", flat=True))
        pools = []
        for name in PairPosterior.Pool.values:
            if name not in have:
                kinds = kinds_in_pool(name)
                if not Judgment.objects.filter(study=study, session__kind__in=kinds).exists():
                    continue
                prepare_posteriors(study, name)
            pools.append(name)
    # The rows locked (in pool, pair order) before the judgments are read: a save that
    # stores its judgment after the read then adds it to the rebuilt row once the lock
    # is released, instead of adding it to the old row that the rebuild overwrites.
    rows = PairPosterior.objects.select_for_update().filter(study=study, pool__in=pools)
    if pair_ids is not None:
        rows = rows.filter(pair_id__in=pair_ids)
    list(rows.order_by("pool", "pair_id").values_list("pk", flat=True))
    now = timezone.now()
    for name in pools:
        for pair_id, (log_posterior, count) in recomputed_posteriors(study, name, pair_ids).items():
            PairPosterior.objects.filter(study=study, pair_id=pair_id, pool=name).update(
                log_posterior=log_posterior, judgment_count=count, updated_at=now
            )
    transaction.on_commit(lambda: forget_state(study.pk))


def resume_session(session: Session, recruiter: RecruiterIds) -> Session:
    """Open `session` in a browser that does not hold its secret, when the recruiter's
    ids prove more than the recruiter id alone: the same PROLIFIC_PID, STUDY_ID and
    SESSION_ID it started with (Prolific's SESSION_ID is new for every submission), all
    present. The session gets a new secret, returned as `session.token`; the browser
    that held the old one loses it. A recruiter id is seen by the recruiter, the lab
    and the participant's own links: never a credential on its own.

    Raises AlreadyCompleted (409) for a completed session (it never becomes writable
    again), FlowError 403 when the ids do not match.
    """
    if session.withdrawn_at is not None:
        raise Withdrawn()
    if session.state == Session.State.COMPLETE:
        raise AlreadyCompleted()
    stored = (
        session.participant.recruiter_pid or "",
        session.recruiter_study_id,
        session.recruiter_session_id,
    )
    given = (recruiter.pid, recruiter.study_id, recruiter.session_id)
    if not all(given) or not all(
        hmac.compare_digest(a.encode(), b.encode()) for a, b in zip(stored, given, strict=True)
    ):
        raise FlowError(
            gettext_lazy(
                "This study was already started in another browser. Please continue it "
                "there, or open the study's link from your recruiter in this browser."
            ),
            status=403,
        )
    session.new_secret()
    session.last_seen_at = timezone.now()
    session.save(update_fields=["token_hash", "last_seen_at"])
    return session


def _first_attempt(study: Study, quiz_answers: list[int | None] | None) -> dict:
    """A new session's fields for the quiz answers sent with the consent."""
    if quiz_answers is None:
        return {}
    if not study.quiz:
        return {"state": Session.State.TRIALS}
    attempt = _graded(study.quiz, quiz_answers)
    passed = attempt["passed"]
    return {
        "state": Session.State.TRIALS if passed else Session.State.INSTRUCTIONS,
        "quiz_attempts": 1,
        "quiz_log": [attempt],
    }


def _graded(quiz: list[dict], answers: list[int | None]) -> dict:
    """One attempt at the quiz, as the session's quiz log keeps it."""
    correct = [a == q["answer"] for a, q in zip(answers, quiz, strict=False)]
    passed = len(answers) == len(quiz) and all(correct)
    return {"answers": answers, "passed": passed, "at": timezone.now().isoformat()}


TOUCH_EVERY = timedelta(seconds=30)


def touch(session: Session) -> None:
    """Mark the session active (condition balancing counts recently seen sessions).
    A page shown right after a step (which marks it too) writes nothing, and the
    statement is hand-written: pages are shown several times per participant."""
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Session._meta.db_table} SET last_seen_at = %s "
            "WHERE id = %s AND last_seen_at < %s",
            [adapt(now), session.pk, adapt(now - TOUCH_EVERY)],
        )


def _advance(session: Session, expected: str, new_state: str, **fields) -> None:
    if session.state != expected:
        raise FlowError(f"This step is not open now (you are at: {session.state}).", status=409)
    session.state = new_state
    session.last_seen_at = timezone.now()
    for name, value in fields.items():
        setattr(session, name, value)
    session.save(update_fields=["state", "last_seen_at", *fields])


def finish_instructions(session: Session) -> None:
    """Start the trials of a study without a quiz; with one, passing it does."""
    if session.study.quiz:
        raise FlowError("Answer the quiz to continue.", status=409)
    _advance(session, Session.State.INSTRUCTIONS, Session.State.TRIALS)


def submit_quiz(session: Session, answers: list[int | None]) -> bool:
    """Record an attempt (the quiz is the instructions page's last screen); all correct
    opens the trials, any wrong sends back to the instructions."""
    quiz = session.study.quiz
    if not quiz:
        raise FlowError("This study has no quiz.", status=409)
    # A session read for the participant pages leaves these out: one query, not one each.
    if unread := session.get_deferred_fields() & {"quiz_attempts", "quiz_log"}:
        session.refresh_from_db(fields=unread)
    attempt = _graded(quiz, answers)
    _advance(
        session,
        Session.State.INSTRUCTIONS,
        Session.State.TRIALS if attempt["passed"] else Session.State.INSTRUCTIONS,
        quiz_attempts=session.quiz_attempts + 1,
        quiz_log=[*session.quiz_log, attempt],
    )
    return attempt["passed"]


def submit_feedback(session: Session, answers: dict[str, str]) -> None:
    cleaned = {
        printable(str(k))[:200]: printable(str(v), keep="\n\t")[:5000] for k, v in answers.items()
    }
    _advance(
        session,
        Session.State.FEEDBACK,
        Session.State.COMPLETE,
        feedback=cleaned,
        completed_at=timezone.now(),
    )
