"""Saving an answer: checked against the trial it answers (its interface's check),
stored once, the session advanced in the same statement; and images that did not load."""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass, replace

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from .. import interfaces
from ..adaptive_design import pool_of
from ..answers import (
    Answer,
    AnswerError,
    Envelope,
    TrialContext,
    integer,
    read_envelope,
)
from ..live import LiveSession, live_session, presumed_live_session, remember_trial_order
from ..models import (
    ImageLoadFailure,
    Judgment,
    PairPosterior,
    Session,
    Study,
    secret_hash,
    session_reference,
)
from ..selectors import planned_trials
from . import adaptive
from .sessions import NO_SESSION, FlowError

# --- Judgments ----------------------------------------------------------------


@dataclass
class SaveResult:
    judgment: Judgment
    created: bool
    live: LiveSession  # the session after the save, for the next trial

    @property
    def finished(self) -> bool:
        session = self.live.session
        return session.position >= planned_trials(session, self.live.catalog)


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
    if session.position >= len(session.trial_order):  # adaptive: chosen when served
        raise FlowError(f"Trial {session.position} has not been shown yet.", status=409)
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
    # PostgreSQL serves an adaptive session's next trial in the save's own statement:
    # chosen now, before the save (None: the trials end with this answer).
    serves = connection.vendor == "postgresql" and study.is_adaptive
    next_spec = adaptive.next_after_answer(live, answer.response, answer.lam) if serves else None
    if session.position + 1 >= planned_trials(session, catalog) or (serves and next_spec is None):
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
    pool = pool_of(session.kind) if study.is_adaptive else None
    if connection.vendor == "postgresql":
        # Inside a caller's transaction (a script, a test) a savepoint keeps a refused
        # duplicate key from aborting it; a request runs in autocommit and needs none.
        savepoint = nullcontext() if transaction.get_autocommit() else transaction.atomic()
        with savepoint, connection.cursor() as cursor:
            if not getattr(connection, "save_answer_prepared", False):
                cursor.execute(_PREPARE_SAVE_ANSWER)
                cursor.execute(_PREPARE_SAVE_ADAPTIVE_ANSWER)
                connection.save_answer_prepared = True
            if serves:
                # One statement: the session advanced and its next trial appended, the
                # judgment stored, its log-likelihood added to its pair's posterior in
                # the session's pool (none for a preview: pool NULL matches no row;
                # none for a session the researcher excluded).
                appended = json.dumps([] if next_spec is None else [next_spec])
                loglik = adaptive.loglik_param(
                    catalog, item.stimulus_lam, answer.response, answer.lam
                )
                added = [loglik, adapt(now), study.pk, item.pair_id, pool]
                params = [*advance[:3], appended, *advance[3:], *row, *added]
                cursor.execute(_EXECUTE_SAVE_ADAPTIVE_ANSWER, params)
            else:
                cursor.execute(_EXECUTE_SAVE_ANSWER, [*advance, *row])
            stored = cursor.fetchone()
        if stored is not None and serves and stored[2]:
            pool = None  # an excluded session: its answer added to no posterior
        if stored is not None and serves and pool is not None and stored[1] is None:
            # The pair had no posterior row in the pool yet (it joined the study's
            # conditions after the pool was made): made now, the answer added.
            adaptive.prepare_posteriors(study, pool)
            with transaction.atomic():
                adaptive.update_posterior(
                    catalog, item.pair_id, item.stimulus_lam, answer.response, answer.lam, pool
                )
    else:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"{_ADVANCE_SESSION} RETURNING excluded", advance)
            advanced = cursor.fetchone()
            stored = None
            if advanced is not None:
                cursor.execute(f"{_INSERT_JUDGMENT} RETURNING id", row)
                stored = cursor.fetchone()
                if pool is not None and not advanced[0]:  # excluded: adds to none
                    adaptive.update_posterior(
                        catalog, item.pair_id, item.stimulus_lam, answer.response, answer.lam, pool
                    )
    if stored is None:
        return None
    judgment.pk = stored[0]
    judgment._state.adding, judgment._state.db = False, connection.alias
    session.position, session.state = session.position + 1, state
    if serves:
        if next_spec is not None:
            session.trial_order = [*session.trial_order[: session.position], next_spec]
            remember_trial_order(session.token_hash, study.slug, session.trial_order)
        count = stored[1] if pool is not None else None
        adaptive.answer_saved(live, item, answer.response, answer.lam, pool, count)
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

# An adaptive study's save (PostgreSQL): the same, and in the same statement the next
# trial appended to the session's trial order (an empty array when its trials end) and
# the judgment's log-likelihood (a float8[] literal; '{}' adds nothing) added elementwise
# to its pair's posterior in the session's pool, only when the judgment was stored and
# the session is not excluded (read as the session's row is advanced, under its lock:
# an exclusion toggled meanwhile is seen, and its rebuild of the posteriors covers the
# rest). The posterior row's lock is its UPDATE's own: concurrent saves of one pair add
# up one at a time. The second column is the row's judgment count after it (None: no
# row took the answer), for this process's chooser to follow without reading the row
# back; the third whether the session is excluded.
_TABLE = PairPosterior._meta.db_table
_ADVANCE_AND_SERVE = _ADVANCE_SESSION.replace(
    "completed_at = %s ", "completed_at = %s, trial_order = trial_order || %s::jsonb ", 1
)
_ADVANCE_SERVE_INSERT_ADD = (
    f"WITH advanced AS ({_ADVANCE_AND_SERVE} "
    # the answered trial is the last served: the appended one is the next
    f"AND jsonb_array_length(trial_order) = position + 1 RETURNING id, excluded), "
    f"stored AS (INSERT INTO {Judgment._meta.db_table} ({_JUDGMENT_COLUMNS}) "
    f"SELECT {_JUDGMENT_VALUES} FROM advanced RETURNING id), "
    f"added AS (UPDATE {_TABLE} SET log_posterior = ("
    f"SELECT array_agg(a + coalesce(b, 0) ORDER BY i) "
    f"FROM unnest(log_posterior, %s::float8[]) WITH ORDINALITY AS t(a, b, i)), "
    f"judgment_count = judgment_count + 1, updated_at = %s "
    f"WHERE study_id = %s AND pair_id = %s AND pool = %s "
    f"AND EXISTS (SELECT 1 FROM stored) AND NOT (SELECT excluded FROM advanced) "
    f"RETURNING judgment_count) "
    f"SELECT id, (SELECT judgment_count FROM added), (SELECT excluded FROM advanced) "
    f"FROM stored"
)
_SAVE_ADAPTIVE_ANSWER = "hillmix_save_adaptive_answer"
_PREPARE_SAVE_ADAPTIVE_ANSWER = (
    f"PREPARE {_SAVE_ADAPTIVE_ANSWER} AS {_numbered_params(_ADVANCE_SERVE_INSERT_ADD)}"
)
_EXECUTE_SAVE_ADAPTIVE_ANSWER = (
    f"EXECUTE {_SAVE_ADAPTIVE_ANSWER} ({', '.join(['%s'] * _ADVANCE_SERVE_INSERT_ADD.count('%s'))})"
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
