"""Writes for the participant flow: sessions, consent to completion, judgments."""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from datasets.selectors import pairs_of_set, stimuli_of_set

from . import interfaces
from .answers import (
    Answer,
    AnswerError,
    Envelope,
    TrialContext,
    integer,
    read_envelope,
)
from .models import (
    Condition,
    ConditionItem,
    ImageLoadFailure,
    Judgment,
    Participant,
    Session,
    Study,
    secret_hash,
    session_reference,
)
from .selectors import (
    LiveSession,
    catalog_of,
    condition_is_full,
    grid_lams,
    least_filled_condition,
    live_session,
    participant_by_recruiter_pid,
    presumed_live_session,
    session_of,
)
from .study_rules import flow_errors

NO_SESSION = "No session for this study in this browser."


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
        super().__init__("You have already completed this study. Thank you!", status=409)


class StudyFull(FlowError):
    """Every condition has reached the study's target: the newcomer is sent back to the
    recruiter."""

    def __init__(self) -> None:
        super().__init__("This study is full: every place has been taken.", status=403)


def printable(text: str, keep: str = "") -> str:
    """Text without control characters (NUL cannot even be stored in PostgreSQL)."""
    return "".join(c for c in text if c >= " " or c in keep).strip()


@dataclass(frozen=True)
class RecruiterIds:
    pid: str = ""
    study_id: str = ""
    session_id: str = ""

    @classmethod
    def from_query(cls, query: dict) -> RecruiterIds:
        def clean(key: str) -> str:
            return printable(str(query.get(key, "")))[:100]

        return cls(clean("PROLIFIC_PID"), clean("STUDY_ID"), clean("SESSION_ID"))


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
            "Too many new sessions from your network; please wait a minute.", status=429
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
    participant = participant_by_recruiter_pid(recruiter.pid)
    existing = session_of(study, participant)
    if existing:
        return resume_session(existing, recruiter)
    if study.status != Study.Status.LIVE:
        raise FlowError("This study is not accepting participants.", status=403)
    key = address_key(address) if address else ""
    catalog = catalog_of(study)
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
                raise FlowError("This study has no conditions yet.", status=503)
            condition_id, filled = least
            if condition_is_full(study, filled):
                raise StudyFull()
            session = Session(
                study=study,
                participant=participant,
                condition_id=condition_id,
                recruiter_study_id=recruiter.study_id,
                recruiter_session_id=recruiter.session_id,
                start_address=key,
                trial_order=_trial_order(study, catalog.positions(condition_id), rng),
                **_first_attempt(study, quiz_answers),
            )
            session.new_secret()
            session.save(force_insert=True)
            return session
    except IntegrityError:
        # The same recruiter id started twice at once: the other request won, and its
        # browser holds the secret.
        raise FlowError(
            "Your session has just started in another window; please reload this page.",
            status=409,
        ) from None


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
            "This study was already started in another browser. Please continue it there, "
            "or open the study's link from your recruiter in this browser.",
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


# --- Judgments ----------------------------------------------------------------


@dataclass
class SaveResult:
    judgment: Judgment
    created: bool
    live: LiveSession  # the session after the save, for the next trial

    @property
    def finished(self) -> bool:
        session = self.live.session
        return session.position >= session.trial_count


def record_judgment(token: str, payload: dict, slug: str | None = None) -> SaveResult:
    """Validate and store one answer of the session whose secret is `token`, exactly
    once. The answer's `session` names the session its page showed (its reference).

    A replay of a stored idempotency key returns the stored row; an answer for any
    trial but the next expected one, or one that fails its interface's checks, is
    refused with nothing stored.
    """
    try:
        envelope = read_envelope(payload)
    except AnswerError as error:
        raise FlowError(str(error)) from None
    token_hash = secret_hash(token)
    if envelope.session != session_reference(token_hash):
        raise FlowError("This answer belongs to another session.", status=403)
    presumed = presumed_live_session(token_hash, slug, envelope.trial_index)
    if presumed is not None:
        saved = _save_presumed(presumed, envelope)
        if saved is not None:
            return saved
    # Not remembered, or not as remembered: from the session as it is now. Read twice
    # only when the study was edited between the read and the write.
    for _ in range(2):
        live = _live_or_refuse(token, slug)
        session = live.session
        if session.state != Session.State.TRIALS or envelope.trial_index != session.position:
            return _replay_or_refuse(live, envelope)
        answer = _read_answer(live, envelope)
        try:
            judgment = _store_judgment(live, envelope, answer)
        except IntegrityError:  # the key was used before (or just now, concurrently)
            return _replay_or_refuse(_live_or_refuse(token, slug), envelope)
        if judgment is not None:
            return SaveResult(judgment, True, live)
    raise FlowError("The study changed while this answer was saved; please send it again.", 409)


def _save_presumed(live: LiveSession, envelope: Envelope) -> SaveResult | None:
    """The save from a remembered session, or None when anything was not as presumed
    (the checked path then stores it or says what is wrong)."""
    try:
        judgment = _store_judgment(live, envelope, _read_answer(live, envelope))
    except (FlowError, IntegrityError):
        return None
    return SaveResult(judgment, True, live) if judgment is not None else None


def _live_or_refuse(token: str, slug: str | None) -> LiveSession:
    live = live_session(token, slug)
    if live is None:
        raise FlowError(NO_SESSION, status=403)
    return live


def _replay_or_refuse(live: LiveSession, envelope: Envelope) -> SaveResult:
    """An answer that is not for the next open trial: a retry of a stored one, or a 409."""
    session = live.session
    replay = Judgment.objects.filter(idempotency_key=envelope.idempotency_key).first()
    if replay is not None:
        if replay.session_id != session.pk or replay.trial_index != envelope.trial_index:
            raise FlowError("This idempotency key was used for another answer.", status=409)
        return SaveResult(replay, False, live)
    if session.state != Session.State.TRIALS:
        raise FlowError(f"Trials are not open now (you are at: {session.state}).", status=409)
    raise FlowError(
        f"Trial {envelope.trial_index} is not the next one expected ({session.position}).",
        status=409,
    )


def _read_answer(live: LiveSession, envelope: Envelope) -> Answer:
    """The answer checked against what its trial showed, or a 400."""
    session, study = live.session, live.catalog.study
    interface = interfaces.get(study.interface)
    own_confidence = interface.own_confidence
    if own_confidence or not study.ask_confidence:
        if envelope.confidence is not None:
            raise FlowError("confidence: this study does not ask for a separate confidence")
    elif envelope.confidence is None:
        raise FlowError("confidence: this study asks for a confidence between 0 and 100")
    spec = session.trial_order[session.position]
    item = live.catalog.item(session.condition_id, spec["item"])
    context = TrialContext(
        trial=spec,
        grid=live.catalog.grid,
        class_names=study.stimulus_set.dataset.class_names,
        soft_label_gamma=study.soft_label_gamma,
        session_id=session.pk,
        trial_index=session.position,
        stimulus_lam=item.stimulus_lam,
    )
    try:
        answer = interface.read_answer(envelope.response, context)
    except AnswerError as error:
        raise FlowError(f"response: {error}") from None
    if not own_confidence and envelope.confidence is not None:
        answer = replace(answer, confidence=envelope.confidence / 100.0)
    return answer


def _store_judgment(live: LiveSession, envelope: Envelope, answer: Answer) -> Judgment | None:
    """Store the answer and advance the session, or store nothing (None) when the
    session moved on since it was read: a concurrent save of the same trial won."""
    session, catalog = live.session, live.catalog
    study = catalog.study
    spec = session.trial_order[session.position]
    item = catalog.item(session.condition_id, spec["item"])
    now = timezone.now()
    judgment = Judgment(
        session_id=session.pk,
        study_id=study.pk,
        trial_index=session.position,
        interface=study.interface,
        pair_id=item.pair_id,
        stimulus_id=item.stimulus_id,
        is_repeat=bool(spec.get("repeat")),
        response=answer.response,
        lam=answer.lam,
        confidence=answer.confidence,
        rt_ms=envelope.rt_ms,
        client_started_at=envelope.client_started_at,
        client_answered_at=envelope.client_answered_at,
        idempotency_key=envelope.idempotency_key,
        created_at=now,
    )
    state, completed_at = session.state, None
    if session.position + 1 >= session.trial_count:
        state = Session.State.FEEDBACK if study.feedback_questions else Session.State.COMPLETE
        completed_at = now if state == Session.State.COMPLETE else None
    adapt = connection.ops.adapt_datetimefield_value
    # The position check makes the update the lock: answers of one session go one at a
    # time, and a second answer to the same trial finds nothing to update.
    advance = [
        *(state, adapt(now), adapt(completed_at)),
        *(session.pk, session.token_hash, session.position, study.pk, adapt(catalog.version)),
    ]
    row = [
        field.get_db_prep_save(getattr(judgment, field.attname), connection)
        for field in _JUDGMENT_FIELDS
    ]
    if connection.vendor == "postgresql":
        # Inside a caller's transaction (a script, a test) a savepoint keeps a refused
        # duplicate key from aborting it; a request runs in autocommit and needs none.
        savepoint = nullcontext() if transaction.get_autocommit() else transaction.atomic()
        with savepoint, connection.cursor() as cursor:
            if not getattr(connection, "save_answer_prepared", False):
                cursor.execute(_PREPARE_SAVE_ANSWER)
                connection.save_answer_prepared = True
            cursor.execute(_EXECUTE_SAVE_ANSWER, [*advance, *row])
            stored = cursor.fetchone()
    else:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_ADVANCE_SESSION, advance)
            stored = None
            if cursor.rowcount == 1:
                cursor.execute(f"{_INSERT_JUDGMENT} RETURNING id", row)
                stored = cursor.fetchone()
    if stored is None:
        return None
    judgment.pk = stored[0]
    judgment._state.adding, judgment._state.db = False, connection.alias
    session.position, session.state = session.position + 1, state
    return judgment


# Saving an answer is hand-written SQL: the ORM compiled its UPDATE and INSERT afresh
# for every answer, which cost more CPU than the rest of the save. On PostgreSQL both
# go in one statement (one round trip, no BEGIN/COMMIT); SQLite has no data-modifying
# CTEs, so there they are two statements in a transaction.
_ADVANCE_SESSION = (
    f"UPDATE {Session._meta.db_table} SET position = position + 1, state = %s, "
    f"last_seen_at = %s, completed_at = %s "
    # the secret too: a remembered session may have been given a new one since
    f"WHERE id = %s AND token_hash = %s AND position = %s "
    f"AND state = '{Session.State.TRIALS}' "
    # the study is still the version the answer was checked against
    f"AND EXISTS (SELECT 1 FROM {Study._meta.db_table} WHERE id = %s AND updated_at = %s)"
)
_JUDGMENT_FIELDS = [field for field in Judgment._meta.concrete_fields if not field.primary_key]
_JUDGMENT_COLUMNS = ", ".join(field.column for field in _JUDGMENT_FIELDS)
_JUDGMENT_VALUES = ", ".join(["%s"] * len(_JUDGMENT_FIELDS))
_INSERT_JUDGMENT = (
    f"INSERT INTO {Judgment._meta.db_table} ({_JUDGMENT_COLUMNS}) VALUES ({_JUDGMENT_VALUES})"
)
_ADVANCE_AND_INSERT = (
    f"WITH advanced AS ({_ADVANCE_SESSION} RETURNING id) "
    f"INSERT INTO {Judgment._meta.db_table} ({_JUDGMENT_COLUMNS}) "
    f"SELECT {_JUDGMENT_VALUES} FROM advanced RETURNING id"
)


def _numbered_params(sql: str) -> str:
    """`sql` with its %s placeholders as $1, $2, ... (the form PREPARE takes)."""
    pieces = sql.split("%s")
    return "".join(f"{piece}${n}" for n, piece in enumerate(pieces[:-1], 1)) + pieces[-1]


# Prepared once per connection: parsing and planning the save cost PostgreSQL as much
# as running it, for every answer.
_SAVE_ANSWER = "hillmix_save_answer"
_PREPARE_SAVE_ANSWER = f"PREPARE {_SAVE_ANSWER} AS {_numbered_params(_ADVANCE_AND_INSERT)}"
_EXECUTE_SAVE_ANSWER = (
    f"EXECUTE {_SAVE_ANSWER} ({', '.join(['%s'] * _ADVANCE_AND_INSERT.count('%s'))})"
)


def forget_prepared_statements(sender: object, connection: object, **kwargs: object) -> None:
    """A new database connection has none of the statements prepared on the last one
    (connected to Django's connection_created signal)."""
    connection.save_answer_prepared = False


# --- Images that did not load --------------------------------------------------

# A page logs a trial's failure once per attempt the participant makes; more than this
# per session is a page gone wrong (or a script), not information.
MAX_IMAGE_FAILURES_PER_SESSION = 50
MAX_IMAGE_LOAD_ATTEMPTS = 10


def record_image_failure(session: Session, payload: dict) -> ImageLoadFailure:
    """Log that the browser could not load the images of the session's current trial
    (`payload`: trial_index, failed = how many images, attempts = loads tried per image).

    Raises FlowError: 400 for a malformed payload, 409 for a trial that is not the one
    the session is at, 429 once the session has logged MAX_IMAGE_FAILURES_PER_SESSION.
    """
    try:
        trial_index = integer(payload, "trial_index", 0, 2**31 - 1)
        failed = integer(payload, "failed", 1, 1000)
        attempts = integer(payload, "attempts", 1, MAX_IMAGE_LOAD_ATTEMPTS)
    except AnswerError as error:
        raise FlowError(str(error)) from None
    if session.state != Session.State.TRIALS or trial_index != session.position:
        raise FlowError(f"Trial {trial_index} is not the one shown now.", status=409)
    if session.image_failures.count() >= MAX_IMAGE_FAILURES_PER_SESSION:
        raise FlowError("Enough image failures are logged for this session.", status=429)
    return ImageLoadFailure.objects.create(
        session=session, trial_index=trial_index, failed=failed, attempts=attempts
    )


# --- Importing the published H-Mix data ----------------------------------------

HMIX_NAMESPACE = uuid.UUID("5f1c3c1e-7d0a-4a8e-9a57-48d1c0a9e001")
HMIX_DATASET = "hmix-endpoints"


def hmix_study_slug(interface: str) -> str:
    return "hmix-" + interface.replace("_", "-")


def import_hmix(folder: str | Path) -> dict[str, dict]:
    """Load the four H-Mix CSVs and the endpoint images as datasets, stimulus sets,
    closed studies, conditions, participants, sessions and judgments.

    Subject ids become participants' pseudonymous ids; conditions and response times
    are kept. A study that is already imported is left alone, so a second import
    changes nothing.
    """
    from datasets.models import Dataset, Stimulus, StimulusSet
    from datasets.services import (
        create_stimulus_set,
        generate_stimuli,
        import_dataset,
        register_stimuli,
    )

    from . import hmix

    folder = Path(folder)
    trials = {interface: read(folder) for interface, read in hmix.READERS.items()}
    dataset = Dataset.objects.filter(name=HMIX_DATASET).first() or import_dataset(
        name=HMIX_DATASET, kind="npz", path=folder / "hmix_endpoints.npz"
    )
    grid_of = {i: interfaces.get(i).grid for i in trials}
    grid_pairs = list(dict.fromkeys(t.pair for i in trials if grid_of[i] for t in trials[i]))
    grid_set = StimulusSet.objects.filter(name="hmix-grid").first()
    if grid_set is None:
        grid_set = create_stimulus_set(
            name="hmix-grid", dataset=dataset, kind="grid", pairs=grid_pairs
        )
    if grid_set.status != StimulusSet.Status.SUCCEEDED:
        grid_set = generate_stimuli(grid_set.pk)
    single_set = StimulusSet.objects.filter(name="hmix-single").first() or register_stimuli(
        name="hmix-single",
        dataset=dataset,
        kind="single",
        entries=[(t.pair, t.stimulus_lam) for i in trials if not grid_of[i] for t in trials[i]],
    )
    stimulus_of = {
        (s.pair.name, round(s.lam, 4)): s
        for s in Stimulus.objects.filter(pair__stimulus_set=single_set).select_related("pair")
    }
    pair_of = {p.name: p for p in grid_set.pairs.all()}

    report = {}
    for interface, rows in trials.items():
        slug = hmix_study_slug(interface)
        if Study.objects.filter(slug=slug).exists():
            report[interface] = {"status": "already imported"}
            continue
        grid = grid_of[interface]
        with transaction.atomic():
            study = Study.objects.create(
                slug=slug,
                title=hmix.mapping(interface).title,
                interface=interface,
                stimulus_set=grid_set if grid else single_set,
                status=Study.Status.CLOSED,
                consent_text="Imported from the published H-Mix data (Collins et al., UAI 2023).",
            )

            unit = partial(_hmix_unit, grid, pair_of, stimulus_of)
            report[interface] = _import_hmix_study(study, rows, unit)
    return report


def _hmix_unit(grid: bool, pair_of: dict, stimulus_of: dict, trial) -> tuple:
    """The (pair, stimulus) a trial showed: the pair alone for grid interfaces."""
    if grid:
        return (pair_of[trial.pair.name], None)
    stimulus = stimulus_of[(trial.pair.name, round(trial.stimulus_lam, 4))]
    return (stimulus.pair, stimulus)


def _import_hmix_study(study: Study, rows: list, unit) -> dict:
    by_condition: dict[str, list] = {}
    by_subject: dict[str, list] = {}
    for row in rows:
        by_condition.setdefault(row.condition, []).append(row)
        by_subject.setdefault(row.subject, []).append(row)
    conditions, positions = {}, {}
    for i, name in enumerate(sorted(by_condition, key=lambda c: (len(c), c))):
        condition = Condition.objects.create(study=study, name=name, position=i)
        conditions[name] = condition
        units = list(dict.fromkeys(unit(r) for r in by_condition[name]))
        ConditionItem.objects.bulk_create(
            ConditionItem(condition=condition, position=k, pair=pair, stimulus=stimulus)
            for k, (pair, stimulus) in enumerate(units)
        )
        positions[name] = {u: k for k, u in enumerate(units)}
    sessions, trial_index = {}, {}
    for subject, subject_rows in by_subject.items():
        participant, _ = Participant.objects.get_or_create(public_id=subject)
        condition_name = subject_rows[0].condition
        ordered = sorted(subject_rows, key=lambda r: r.source_index)
        sessions[subject] = Session.objects.create(
            study=study,
            participant=participant,
            condition=conditions[condition_name],
            trial_order=[
                {
                    "item": positions[condition_name][unit(r)],
                    "repeat": r.is_repeat,
                    "source_index": r.source_index,
                }
                for r in ordered
            ],
            position=len(ordered),
            state=Session.State.COMPLETE,
            completed_at=timezone.now(),
        )
        trial_index.update({(subject, r.source_index): k for k, r in enumerate(ordered)})
    # File order, so the aggregates list answers in the order H-Mix did.
    Judgment.objects.bulk_create(
        Judgment(
            session=sessions[r.subject],
            study=study,
            trial_index=trial_index[(r.subject, r.source_index)],
            interface=study.interface,
            pair=unit(r)[0],
            stimulus=unit(r)[1],
            is_repeat=r.is_repeat,
            response=r.response,
            lam=r.lam,
            confidence=r.confidence,
            rt_ms=r.rt_ms,
            idempotency_key=uuid.uuid5(
                HMIX_NAMESPACE, f"{study.interface}:{r.subject}:{r.source_index}"
            ),
        )
        for r in rows
    )
    return {
        "status": "imported",
        "judgments": len(rows),
        "participants": len(by_subject),
        "conditions": len(conditions),
    }


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
    if status == Study.Status.LIVE:
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
