"""Adaptive studies (issue 18, DESIGN section 8): each next trial of a session is chosen
when it is served, and every saved judgment updates its pair's stored posterior.

- ``serve_next_trial``: for a session of an adaptive study at the end of its served
  trials (its first trial, a resumed session), the next one (pair and lam, or for
  Construct the pair and start value) with the largest expected information gain about
  the pairs' curves under the study's constraints, appended to the session's trial
  order in one guarded statement. Once served a trial never changes: a reload, a
  resumed session and the save all read it from the trial order, as in a fixed study.
- ``next_after_answer``: on PostgreSQL the save of an answer serves the next trial
  itself: it is chosen here before the save (the chooser does not need the answer in
  the database; adaptive Construct's staircase takes it in-process) and the save's one
  statement appends it (services.judgments), adding the answer's log-likelihood
  (``loglik_param``) to its pair's posterior in the same statement.
- ``update_posterior``: elsewhere (SQLite) the save's transaction adds the answer to
  its pair's row under that row's lock. Either way the stored posterior equals
  ``selectors.recomputed_posteriors`` (the prior plus every stored judgment of its
  pool whose session is not excluded) up to rounding.

Only stimuli of the study's stimulus set are shown: for 2AFC and Infer the chooser's
candidates are the set's lams and a (pair, lam) is available only where the session's
condition holds that stimulus; for Construct the candidates are the start values on the
set's grid; Select-Shuffled chooses only the pair.

Which judgments count: posteriors are kept per pool (PairPosterior.Pool,
adaptive_design.pool_of): live sessions add to and choose from the live pool, pilots
from the pilot pool, simulated participants from the simulated pool, so neither moves
the live posterior; previews choose from the live pool and add nothing. A session the
researcher excluded adds to none, and excluding or re-including one rebuilds its pool's
rows (services.study_admin.set_excluded).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from adaptive.model import DEFAULT_NOISE, InterfaceModel, PairPosteriors
from adaptive.serving import (
    ConstructStaircase,
    StudyChooser,
    known_midpoints,
    session_from_history,
)

from ..adaptive_design import (
    GRID,
    choice_pool,
    fill_noise,
    interface_model,
    judgment_loglik,
    loglik_sql_text,
    posterior_column,
    prior_log_posterior,
    read_log_posterior,
    study_noise,
)
from ..live import LiveSession, StudyCatalog, remember_trial_order
from ..models import Judgment, PairPosterior, Session, Study

# Re-read stored posteriors changed this long before the last read too: a save that
# stamped its row before the read may commit after it.
SYNC_OVERLAP_S = 10.0
# A process re-reads the stored posteriors at most this often: a choice from posteriors
# a quarter of a second old is as good, and saves a query or two on most choices.
SYNC_EVERY_S = 0.25
# Adaptive Construct stops a pair for a participant once their midpoint is known to
# this; the midpoint objective's tolerance.
CONSTRUCT_PRECISION = 0.05


# --- The per-process state of an adaptive study -----------------------------------------


@dataclass
class _StudyState:
    """An adaptive study's chooser in this process, for one version of the study row and
    one pool of posteriors."""

    version: object
    pool: str
    model: InterfaceModel
    pair_ids: list[int]
    index: dict[int, int]
    chooser: StudyChooser
    lock: threading.Lock = field(default_factory=threading.Lock)
    synced_at: float = 0.0
    # condition id -> ((pair index, candidate index) -> item position, available (P, C))
    conditions: dict[int, tuple[dict, np.ndarray]] = field(default_factory=dict)


_states: dict[tuple[int, str], _StudyState] = {}  # (study id, pool) ->
_states_lock = threading.Lock()


_models: dict[int, tuple[object, InterfaceModel]] = {}


def _model_of(catalog: StudyCatalog) -> InterfaceModel:
    """The study's likelihood table, per process and version of the study row (a save
    needs only this, not the chooser)."""
    study = catalog.study
    state = _states.get((study.pk, PairPosterior.Pool.LIVE))
    if state is not None and state.version == catalog.version is not None:
        return state.model
    cached = _models.get(study.pk)
    if cached is not None and cached[0] == catalog.version is not None:
        return cached[1]
    model = interface_model(study, catalog.grid)
    _models[study.pk] = (catalog.version, model)
    return model


def _state(catalog: StudyCatalog, pool: str = PairPosterior.Pool.LIVE) -> _StudyState:
    """The study's chooser over `pool`'s posteriors in this process (made, with the
    pool's rows where they are missing, at its first use per version of the study)."""
    study = catalog.study
    state = _states.get((study.pk, pool))
    if state is not None and state.version == catalog.version and catalog.version is not None:
        return state
    with _states_lock:
        prepare_posteriors(study, pool)
        pair_ids = sorted(
            PairPosterior.objects.filter(study=study, pool=pool).values_list("pair_id", flat=True)
        )
        index = {p: i for i, p in enumerate(pair_ids)}
        model = interface_model(study, catalog.grid)
        posteriors = PairPosteriors(len(pair_ids), GRID, np.exp(prior_log_posterior(study)))
        chooser = StudyChooser(
            posteriors,
            model,
            max_per_pair=study.adaptive_max_per_pair,
            budget=study.adaptive_budget,
            n_repeats=study.repeat_trials,
            repeat_spacing=study.adaptive_repeat_spacing,
            objective=study.adaptive_objective,
            tolerance=CONSTRUCT_PRECISION,
        )
        state = _StudyState(catalog.version, pool, model, pair_ids, index, chooser)
        _sync(study, state, full=True)
        _states[study.pk, pool] = state
    return state


def _sync(study: Study, state: _StudyState, full: bool = False) -> None:
    """Bring the chooser's posteriors in step with the stored ones of its pool: all of
    them (`full`), or those that moved: one query for the counts changed lately, one
    for the rows whose count differs (read as binary arrays on PostgreSQL)."""
    now = time.time()
    table = PairPosterior._meta.db_table
    vendor = connection.vendor
    with connection.cursor() as cursor:
        if full:
            changed = list(state.index)
        else:
            since = timezone.now() - timedelta(seconds=now - state.synced_at + SYNC_OVERLAP_S)
            cursor.execute(
                f"SELECT pair_id, judgment_count FROM {table} "
                "WHERE study_id = %s AND pool = %s AND updated_at >= %s",
                [study.pk, state.pool, connection.ops.adapt_datetimefield_value(since)],
            )
            counts = state.chooser.posteriors.n_judgments
            changed = [
                pair_id
                for pair_id, count in cursor.fetchall()
                if pair_id in state.index and counts[state.index[pair_id]] != count
            ]
        if changed:
            marks = ", ".join(["%s"] * len(changed))
            cursor.execute(
                f"SELECT pair_id, judgment_count, {posterior_column(vendor)} FROM {table} "
                f"WHERE study_id = %s AND pool = %s AND pair_id IN ({marks})",
                [study.pk, state.pool, *changed],
            )
            for pair_id, count, value in cursor.fetchall():
                state.chooser.set_posterior(
                    state.index[pair_id], read_log_posterior(value, vendor), count
                )
    state.synced_at = now


def _condition(catalog: StudyCatalog, state: _StudyState, condition_id: int) -> tuple:
    """The condition's items by (pair index, candidate index), and what is available."""
    found = state.conditions.get(condition_id)
    if found is not None:
        return found
    model = state.model
    n_c = len(model.candidates)
    items: dict[tuple[int, int], int] = {}
    available = np.zeros((len(state.pair_ids), n_c), dtype=bool)
    for position in catalog.positions(condition_id):
        item = catalog.item(condition_id, position)
        p = state.index.get(item.pair_id)
        if p is None:
            continue
        if item.stimulus_lam is None:  # grid interfaces: every start value of the pair
            for c in range(n_c):
                items[p, c] = position
            available[p] = True
        else:
            try:
                c = model.candidate_index(round(item.stimulus_lam, 4))
            except ValueError:
                continue
            items[p, c] = position
            available[p, c] = True
    state.conditions[condition_id] = (items, available)
    return items, available


# --- Serving ---------------------------------------------------------------------------------


def prepare_posteriors(study: Study, pool: str = PairPosterior.Pool.LIVE) -> None:
    """Give every pair of an adaptive study's conditions its prior posterior row in
    `pool` (once; concurrent calls are harmless)."""
    from datasets.models import Pair

    if not study.adaptive_noise:  # made without the admin: the defaults, stored
        study.adaptive_noise = copy.deepcopy(DEFAULT_NOISE)
        Study.objects.filter(pk=study.pk, adaptive_noise={}).update(
            adaptive_noise=study.adaptive_noise, updated_at=timezone.now()
        )
        study.adaptive_noise = Study.objects.get(pk=study.pk).adaptive_noise
    pair_ids = set(
        Pair.objects.filter(conditionitem__condition__study=study).values_list("id", flat=True)
    )
    have = set(
        PairPosterior.objects.filter(study=study, pool=pool).values_list("pair_id", flat=True)
    )
    missing = pair_ids - have
    if missing and connection.vendor == "postgresql":
        # One statement with the prior as one array literal: the ORM's bulk insert
        # adapted 1,616 floats per row, seconds for a study of 1,000 pairs.
        prior = prior_log_posterior(study)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {PairPosterior._meta.db_table} "
                "(study_id, pair_id, pool, log_posterior, judgment_count, updated_at) "
                "SELECT %s, p, %s, %s::float8[], 0, %s FROM unnest(%s::bigint[]) AS p "
                "ON CONFLICT DO NOTHING",
                [
                    study.pk,
                    pool,
                    "{" + ",".join(map(repr, prior.tolist())) + "}",
                    connection.ops.adapt_datetimefield_value(timezone.now()),
                    sorted(missing),
                ],
            )
    elif missing:
        prior = prior_log_posterior(study)
        PairPosterior.objects.bulk_create(
            [
                PairPosterior(study=study, pair_id=p, pool=pool, log_posterior=prior)
                for p in sorted(missing)
            ],
            ignore_conflicts=True,
        )


def _history(catalog: StudyCatalog, state: _StudyState, session: Session, order: list) -> list:
    out = []
    for spec in order:
        item = catalog.item(session.condition_id, spec["item"])
        out.append(
            (
                state.index[item.pair_id],
                spec.get("value"),
                bool(spec.get("repeat")),
                spec.get("repeat_of"),
            )
        )
    return out


# Adaptive Construct: each session's answers so far, as this process last knew them
# (session id -> (trials they cover, pair id -> [(start lam, final lam)])). A save
# extends them in-process, so the next choice needs no query unless another process
# saved the session's last answer.
_construct_memo: dict[int, tuple[int, dict[int, list]]] = {}
CONSTRUCT_MEMO_MAX = 1024


def _construct_answers(session: Session) -> dict[int, list]:
    """Adaptive Construct: the participant's answers to the trials before
    `session.position`, pair id -> [(start lam, final lam)] (repeats aside). Shared:
    read it, never change it."""
    memo = _construct_memo.get(session.pk)
    if memo is not None and memo[0] == session.position:
        return memo[1]
    rows = Judgment.objects.filter(session_id=session.pk, is_repeat=False).values_list(
        "pair_id", "response", "lam"
    )
    answers: dict[int, list] = {}
    for pair_id, response, lam in rows:
        if lam is not None and response.get("start_lam") is not None:
            answers.setdefault(pair_id, []).append((response["start_lam"], lam))
    _remember_answers(session.pk, session.position, answers)
    return answers


def _remember_answers(session_id: int, covered: int, answers: dict[int, list]) -> None:
    if len(_construct_memo) >= CONSTRUCT_MEMO_MAX and session_id not in _construct_memo:
        del _construct_memo[next(iter(_construct_memo))]  # forget the oldest
    _construct_memo[session_id] = (covered, answers)


def _with_answer(answers: dict[int, list], answer: tuple | None) -> dict[int, list]:
    """`answers` and one more (pair id, start lam, final lam), as a new dict."""
    if answer is None:
        return answers
    pair_id, start, final = answer
    return {**answers, pair_id: [*answers.get(pair_id, []), (start, final)]}


def _by_index(state: _StudyState, answers: dict[int, list]) -> dict[int, list]:
    return {state.index[p]: a for p, a in answers.items() if p in state.index}


def _next_start(study: Study, state: _StudyState, pair: int, answers: list) -> float:
    """Adaptive Construct: the participant's staircase on `pair` chooses the start."""
    stairs = ConstructStaircase.for_pair(
        state.chooser.posteriors,
        pair,
        state.model.candidates,
        study_noise(study),
        precision=CONSTRUCT_PRECISION,
    )
    for start, final in answers:
        try:
            stairs.update(start, final)
        except ValueError:  # a start off the study's grid (not served adaptively)
            pass
    return stairs.next_start()


def choose_trial(
    catalog: StudyCatalog, session: Session, order: list, answered: tuple | None = None
) -> dict | None:
    """The next trial's spec for `session` (served so far: `order`), from the posteriors
    of the session's pool (adaptive_design.choice_pool), or None when the study's
    constraints allow none. Spec: {"item", "repeat", "value", ...} plus the interface's
    trial spec (Construct's start_lam is the chosen start value). `answered`: adaptive
    Construct's answer to the last served trial when it is not stored yet (pair id,
    start lam, final lam)."""
    import random

    from .. import interfaces
    from ..selectors import planned_trials

    study = catalog.study
    state = _state(catalog, choice_pool(session.kind))
    items, available = _condition(catalog, state, session.condition_id)
    with state.lock:
        if time.time() - state.synced_at >= SYNC_EVERY_S:
            _sync(study, state)
        constraints = session_from_history(state.chooser, _history(catalog, state, session, order))
        mask = available
        construct = study.interface == "construct"
        answers = (
            _by_index(state, _with_answer(_construct_answers(session), answered))
            if construct
            else {}
        )
        if answers:  # pairs whose midpoint for this participant is known: no more
            try:
                done = known_midpoints(
                    state.chooser.posteriors,
                    answers,
                    state.model.candidates,
                    study_noise(study),
                    precision=CONSTRUCT_PRECISION,
                )
            except ValueError:  # a start off the study's grid (not served adaptively)
                done = set()
            if done:
                mask = available.copy()
                mask[sorted(done)] = False
        # The repeats spread over the trials the session can have.
        constraints.budget = planned_trials(session, catalog)
        before = set(constraints.repeated)
        trial = state.chooser.choose(constraints, mask)
        left = constraints.n_repeats - sum(t.is_repeat for t in constraints.history)
        if trial is None and left > 0:  # nothing new to show: the repeats still due
            constraints.budget = len(constraints.history) + left
            trial = state.chooser.choose(constraints, mask)
        value = None if trial is None else trial.value
        if trial is not None and construct and not trial.is_repeat:
            value = _next_start(study, state, trial.pair, answers.get(trial.pair, []))
    if trial is None:
        return None
    if trial.is_repeat:
        [repeat_of] = constraints.repeated - before
        return {**order[repeat_of], "repeat": True, "repeat_of": repeat_of}
    rng = random.Random()
    c = 0 if value is None else state.model.candidate_index(value)
    spec = {"item": items[trial.pair, c], "repeat": False, "value": value}
    spec.update(interfaces.get(study.interface).trial_spec(study, catalog.grid, rng))
    if study.interface == "construct":
        spec["start_lam"] = value
    return spec


def serve_next_trial(live: LiveSession) -> None:
    """For a session of an adaptive study whose served trials are all answered: choose
    the next one and append it to its trial order, or end its trials when none is
    allowed. `live.session` is updated. Nothing happens for fixed studies or a session
    with an unanswered served trial.

    On PostgreSQL the append is one statement that holds only while the session is as
    it was read (position, state, trial order's length): of two requests of one session,
    one serves and the other reads what it served. Elsewhere under the row's lock."""
    session, catalog = live.session, live.catalog
    study = catalog.study
    if not study.is_adaptive or session.state != Session.State.TRIALS:
        return
    if session.position < len(session.trial_order):
        return
    if connection.vendor != "postgresql":
        return _serve_locked(live)
    from ..selectors import planned_trials

    order = session.trial_order
    spec = None
    if session.position < planned_trials(session, catalog):
        spec = choose_trial(catalog, session, order)
    table = Session._meta.db_table
    guard = (
        "WHERE id = %s AND position = %s AND state = %s AND jsonb_array_length(trial_order) = %s"
    )
    where = [session.pk, session.position, Session.State.TRIALS, len(order)]
    with connection.cursor() as cursor:
        if spec is None:
            new_state = _end_state(study)
            cursor.execute(
                f"UPDATE {table} SET {_END_SET} {guard}", [*_end_values(new_state), *where]
            )
        else:
            cursor.execute(
                f"UPDATE {table} SET trial_order = trial_order || %s::jsonb {guard}",
                [json.dumps([spec]), *where],
            )
        if cursor.rowcount == 1:
            if spec is None:
                session.state = new_state
            else:
                session.trial_order = [*order, spec]
                remember_trial_order(session.token_hash, study.slug, session.trial_order)
            return
        # Another request of this session moved it: show what it is now.
        cursor.execute(
            f"SELECT trial_order, position, state FROM {table} WHERE id = %s", [session.pk]
        )
        row = cursor.fetchone()
    if row is not None:
        _read_back(session, row)


_END_SET = "state = %s, last_seen_at = %s, completed_at = %s"


def _end_state(study: Study) -> str:
    """Where a session goes when its trials end."""
    return Session.State.FEEDBACK if study.feedback_questions else Session.State.COMPLETE


def _end_values(new_state: str) -> list:
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    return [new_state, adapt(now), adapt(now if new_state == Session.State.COMPLETE else None)]


def _read_back(session: Session, row: tuple) -> None:
    order, position, state = row
    if isinstance(order, str | bytes):
        order = json.loads(order)
    session.trial_order, session.position, session.state = order, position, state


def _serve_locked(live: LiveSession) -> None:
    """serve_next_trial where there is no JSON array length (SQLite): under the row's
    lock (SQLite runs one writer at a time)."""
    from ..selectors import planned_trials

    session, catalog = live.session, live.catalog
    study = catalog.study
    table = Session._meta.db_table
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT trial_order, position, state FROM {table} WHERE id = %s{lock}", [session.pk]
        )
        row = cursor.fetchone()
        if row is None:
            return
        _read_back(session, row)
        order = session.trial_order
        if session.state != Session.State.TRIALS or session.position < len(order):
            return
        spec = None
        if session.position < planned_trials(session, catalog):
            spec = choose_trial(catalog, session, order)
        if spec is None:  # nothing more to learn from this participant: trials end
            new_state = _end_state(study)
            cursor.execute(
                f"UPDATE {table} SET {_END_SET} WHERE id = %s",
                [*_end_values(new_state), session.pk],
            )
            session.state = new_state
            return
        order = [*order, spec]
        cursor.execute(
            f"UPDATE {table} SET trial_order = %s WHERE id = %s", [json.dumps(order), session.pk]
        )
        session.trial_order = order


# --- The stored posteriors -----------------------------------------------------------------


def update_posterior(
    catalog: StudyCatalog, pair_id: int, stimulus_lam, response: dict, lam, pool: str
) -> None:
    """Add one saved judgment to its pair's stored posterior in `pool` where the save
    cannot do it in its own statement (SQLite). Call inside the save's transaction: the
    row stays locked until it commits, so concurrent saves of one pair add up one at a
    time and a rolled-back save adds nothing."""
    study = catalog.study
    loglik = judgment_loglik(_model_of(catalog), study.interface, stimulus_lam, response, lam)
    table = PairPosterior._meta.db_table
    field = PairPosterior._meta.get_field("log_posterior")
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    where = "WHERE study_id = %s AND pair_id = %s AND pool = %s"
    select = f"SELECT log_posterior FROM {table} {where}{lock}"
    with connection.cursor() as cursor:
        cursor.execute(select, [study.pk, pair_id, pool])
        row = cursor.fetchone()
        if row is None:  # a pair the study gained no row for yet
            prepare_posteriors(study, pool)
            cursor.execute(select, [study.pk, pair_id, pool])
            row = cursor.fetchone()
        log_post = field.to_python(row[0])
        if loglik is not None:
            log_post = log_post + loglik
            log_post = log_post - log_post.max()
        cursor.execute(
            f"UPDATE {table} SET log_posterior = %s, judgment_count = judgment_count + 1, "
            f"updated_at = %s {where}",
            [
                field.get_db_prep_value(log_post, connection),
                connection.ops.adapt_datetimefield_value(timezone.now()),
                study.pk,
                pair_id,
                pool,
            ],
        )


def next_after_answer(live: LiveSession, answer_response: dict, answer_lam) -> dict | None:
    """The trial to serve after the answer to `live.session`'s current trial (chosen
    before the answer is saved: the save appends it in its own statement), or None when
    its trials end with this answer (the last planned one, or nothing the constraints
    allow). Adaptive Construct's staircase takes the answer in-process."""
    from ..selectors import planned_trials

    session, catalog = live.session, live.catalog
    if session.position + 1 >= planned_trials(session, catalog):
        return None
    order = session.trial_order[: session.position + 1]
    answered = None
    spec = order[-1]
    if catalog.study.interface == "construct" and not spec.get("repeat"):
        answered = _construct_observation(catalog, session, spec, answer_response, answer_lam)
    return choose_trial(catalog, session, order, answered)


def _construct_observation(catalog, session, spec, response: dict, lam) -> tuple | None:
    """(pair id, start lam, final lam) of a Construct answer, as _construct_answers
    reads a stored one; None when it has none."""
    if lam is None or response.get("start_lam") is None:
        return None
    pair_id = catalog.item(session.condition_id, spec["item"]).pair_id
    return (pair_id, response["start_lam"], lam)


def answer_saved(
    live: LiveSession, item, response: dict, lam, pool: str | None, count: int | None
) -> None:
    """After the save of the answer to trial `live.session.position - 1` (the session
    already advanced; `item`: its condition item): this process's chooser of `pool`
    takes the answer in memory when the stored row's judgment count after it (`count`)
    is one past the chooser's, so the next re-read finds the row unchanged instead of
    reading it back (a chooser that is behind or ahead re-reads it as before); adaptive
    Construct's answers in this process cover it too."""
    session, catalog = live.session, live.catalog
    study = catalog.study
    state = _states.get((study.pk, pool)) if pool is not None and count is not None else None
    if state is not None and state.version == catalog.version is not None:
        p = state.index.get(item.pair_id)
        loglik = judgment_loglik(state.model, study.interface, item.stimulus_lam, response, lam)
        with state.lock:
            post = state.chooser.posteriors
            if p is not None and int(post.n_judgments[p]) == count - 1:
                row = post.log_post[p] if loglik is None else post.log_post[p] + loglik
                state.chooser.set_posterior(p, row, count)
    if study.interface != "construct":
        return
    position = session.position - 1
    memo = _construct_memo.get(session.pk)
    if memo is None or memo[0] != position:
        return
    spec = session.trial_order[position]
    answered = None
    if not spec.get("repeat"):
        answered = _construct_observation(catalog, session, spec, response, lam)
    _remember_answers(session.pk, position + 1, _with_answer(memo[1], answered))


def loglik_param(catalog: StudyCatalog, stimulus_lam, response: dict, lam) -> str:
    """The answer's log-likelihood over the grid as the save's float8[] text parameter
    (adaptive_design.loglik_sql_text; '{}' adds nothing)."""
    study = catalog.study
    return loglik_sql_text(_model_of(catalog), study.interface, stimulus_lam, response, lam)


def forget_state(study_id: int | None = None) -> None:
    """Drop this process's chooser of a study (or of all): the next choice rebuilds it
    from the stored posteriors (tests, and a study whose posteriors were rebuilt)."""
    with _states_lock:
        if study_id is None:
            _states.clear()
            _models.clear()
        else:
            for key in [k for k in _states if k[0] == study_id]:
                del _states[key]
            _models.pop(study_id, None)
        _construct_memo.clear()


__all__ = [
    "GRID",
    "answer_saved",
    "choose_trial",
    "loglik_param",
    "next_after_answer",
    "fill_noise",
    "forget_state",
    "prepare_posteriors",
    "serve_next_trial",
    "update_posterior",
]
