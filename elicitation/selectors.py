"""Reads for the participant flow."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db import connection
from django.utils import timezone

from adaptive.model import PairPosteriors

from . import interfaces
from .adaptive_design import (
    GRID,
    interface_model,
    judgment_loglik,
    kinds_in_pool,
    posterior_column,
    prior_log_posterior,
    read_log_posterior,
)
from .live import LiveSession, StudyCatalog, catalog_of, grid_lams, study_catalog
from .models import (
    Condition,
    Judgment,
    PairPosterior,
    Participant,
    Session,
    Study,
)


def study_by_slug(slug: str) -> Study | None:
    """The study at this address, from the per-process catalog (one small query checks
    it is current). Shared by requests: read it, never change it."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, updated_at FROM {Study._meta.db_table} WHERE slug = %s", [slug])
        row = cursor.fetchone()
    return study_catalog(*row).study if row else None


def study_language(slug: str) -> str:
    """The language of the study's participant pages (Study.language); the site's
    LANGUAGE_CODE for an unknown study (its 404 page)."""
    study = study_by_slug(slug)
    return study.language if study is not None else settings.LANGUAGE_CODE


def participant_by_recruiter_pid(pid: str) -> Participant | None:
    return Participant.objects.filter(recruiter_pid=pid).first() if pid else None


def session_of(study: Study, participant: Participant | None) -> Session | None:
    if participant is None:
        return None
    session = Session.objects.filter(study=study, participant=participant).first()
    if session is not None:
        session.participant = participant
    return session


def session_by_recruiter_pid(study: Study, pid: str) -> Session | None:
    # The participant first: a newcomer, the usual case, costs one small query.
    return session_of(study, participant_by_recruiter_pid(pid))


def least_filled_condition(study: Study) -> tuple[int, int] | None:
    """The id of the condition holding fewest sessions that can still yield usable data,
    and that number; the first by position on a tie; None if the study has no conditions.

    Counted: live sessions not excluded nor withdrawn that are complete, or unfinished
    and seen within the study's `stale_after_minutes` (psiTurk's cutoff for abandoned
    assignments). An excluded, withdrawn or abandoned session gives its place back;
    pilots and previews never hold one.

    Hand-written: every new participant runs it, under the study's lock."""
    fresh_since = timezone.now() - timedelta(minutes=study.stale_after_minutes)
    sql = (
        f"SELECT c.id, COUNT(s.id) FROM {Condition._meta.db_table} c "
        f"LEFT JOIN {Session._meta.db_table} s ON s.condition_id = c.id "
        "AND NOT s.excluded AND s.kind = 'live' AND s.withdrawn_at IS NULL "
        "AND (s.state = %s OR s.last_seen_at >= %s) "
        "WHERE c.study_id = %s GROUP BY c.id, c.position "
        "ORDER BY COUNT(s.id), c.position, c.id LIMIT 1"
    )
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(sql, [Session.State.COMPLETE, adapt(fresh_since), study.pk])
        row = cursor.fetchone()
    return (row[0], row[1]) if row else None


def condition_is_full(study: Study, filled: int) -> bool:
    """Whether a condition holding `filled` counted sessions has reached the study's
    target per condition (never, without a target)."""
    target = study.participants_per_condition
    return target is not None and filled >= target


def study_is_full(study: Study) -> bool:
    """Whether every condition has reached the study's target (one query, only for a
    study with a target): newcomers are then turned away before they read the consent."""
    if study.participants_per_condition is None:
        return False
    least = least_filled_condition(study)
    return least is not None and condition_is_full(study, least[1])


def next_trial(live: LiveSession) -> dict | None:
    """What the trial page needs to show the next trial, or None when all are done.

    Blind: nothing beyond what the page shows on purpose (DESIGN section 7). Images
    come under opaque URLs; no lam, no pair or source ids. The two classes are named
    where the interface names them (not for Soft categorical label, which offers all
    classes); the rest is the interface's (its spec's `serve`)."""
    session, study = live.session, live.catalog.study
    if session.state != Session.State.TRIALS or session.position >= session.trial_count:
        return None
    spec = session.trial_order[session.position]
    item = live.catalog.item(session.condition_id, spec["item"])
    trial = {
        "index": session.position,
        "total": planned_trials(session, live.catalog),
        "interface": study.interface,
        "ask_confidence": study.ask_confidence,
    }
    interface = interfaces.get(study.interface)
    if interface.names_classes:
        trial["class1"], trial["class2"] = item.class1, item.class2
    interface.serve(trial, spec, item, live.catalog.grid, session)
    return trial


def progress(session: Session) -> dict:
    total = session.trial_count
    if session.study.is_adaptive:
        total = planned_trials(session, catalog_of(session.study))
    return {"done": session.position, "total": total}


_planned: dict[tuple, int] = {}


def planned_trials(session: Session, catalog: StudyCatalog) -> int:
    """How many trials the session has: its trial order's length in a fixed study; in
    an adaptive one (whose trials are chosen as they are served) the study's budget, at
    most what its constraints allow (each of the condition's pairs shown at most
    adaptive_max_per_pair times, plus the repeats). An adaptive session may end sooner
    when nothing is left to learn from it (services.adaptive)."""
    study = catalog.study
    if not study.is_adaptive:
        return session.trial_count
    key = (study.pk, catalog.version, session.condition_id)
    planned = _planned.get(key) if catalog.version is not None else None
    if planned is None:
        positions = catalog.positions(session.condition_id)
        pairs = {catalog.item(session.condition_id, p).pair_id for p in positions}
        planned = min(
            study.adaptive_budget,
            len(pairs) * study.adaptive_max_per_pair + study.repeat_trials,
        )
        if catalog.version is not None:
            _planned[key] = planned
    return planned


# --- Data requests --------------------------------------------------------------------


def participant_data(participant: Participant) -> dict:
    """Everything stored about one participant, for their access request (GDPR art. 15):
    the participant (public and recruiter id), each session (study, condition, kind,
    state, recruiter study and session ids, consent-to-completion times, quiz log,
    feedback, withdrawal) with its judgments (every stored field) and image-load
    failures, and their Prolific bonus payments (study, cents, reason, state, times).
    JSON-serialisable (datetimes as ISO 8601). Never the session secret's
    hash nor the salted address hash (neither is about the person)."""
    from recruitment.models import BonusPayment

    from .models import ImageLoadFailure, Judgment

    def when(value) -> str | None:
        return value.isoformat() if value else None

    sessions = []
    for session in participant.sessions.select_related("study", "condition").order_by("pk"):
        judgments = [
            {
                "trial_index": j.trial_index,
                "interface": j.interface,
                "pair": j.pair.name,
                "stimulus": j.stimulus.name if j.stimulus else None,
                "is_repeat": j.is_repeat,
                "response": j.response,
                "lam": j.lam,
                "confidence": j.confidence,
                "rt_ms": j.rt_ms,
                "client_started_at": j.client_started_at,
                "client_answered_at": j.client_answered_at,
                "created_at": when(j.created_at),
            }
            for j in Judgment.objects.filter(session=session)
            .select_related("pair", "stimulus")
            .order_by("trial_index")
        ]
        failures = [
            {"trial_index": f.trial_index, "failed": f.failed, "attempts": f.attempts,
             "created_at": when(f.created_at)}
            for f in ImageLoadFailure.objects.filter(session=session)
        ]
        sessions.append(
            {
                "study": session.study.slug,
                "study_title": session.study.title,
                "condition": session.condition.name,
                "kind": session.kind,
                "state": session.state,
                "position": session.position,
                "recruiter_study_id": session.recruiter_study_id,
                "recruiter_session_id": session.recruiter_session_id,
                "quiz_attempts": session.quiz_attempts,
                "quiz_log": session.quiz_log,
                "feedback": session.feedback,
                "excluded": session.excluded,
                "started_at": when(session.started_at),
                "last_seen_at": when(session.last_seen_at),
                "completed_at": when(session.completed_at),
                "withdrawn_at": when(session.withdrawn_at),
                "judgments": judgments,
                "image_load_failures": failures,
            }
        )
    return {
        "participant": {
            "public_id": participant.public_id,
            "recruiter_pid": participant.recruiter_pid,
            "created_at": when(participant.created_at),
        },
        "sessions": sessions,
        "bonus_payments": [
            {
                "study": bonus.study.slug,
                "amount_cents": bonus.amount_cents,
                "reason": bonus.reason,
                "state": bonus.state,
                "created_at": when(bonus.created_at),
                "paid_at": when(bonus.paid_at),
            }
            for bonus in BonusPayment.objects.filter(recruiter_pid=participant.recruiter_pid)
            .select_related("study")
            .order_by("pk")
        ]
        if participant.recruiter_pid
        else [],
    }


# --- Adaptive studies' posteriors ------------------------------------------------------


def stored_posteriors(
    study: Study, pool: str = PairPosterior.Pool.LIVE
) -> dict[int, tuple[np.ndarray, int]]:
    """pair id -> (stored log posterior (G,) with its maximum subtracted, judgment
    count) of the study's `pool` (PairPosterior.Pool; the live one is what "the study's
    posterior" means everywhere)."""
    vendor = connection.vendor
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT pair_id, {posterior_column(vendor)}, judgment_count "
            f"FROM {PairPosterior._meta.db_table} WHERE study_id = %s AND pool = %s",
            [study.pk, pool],
        )
        rows = cursor.fetchall()
    out = {}
    for pair_id, value, count in rows:
        log_post = read_log_posterior(value, vendor)
        out[pair_id] = (log_post - log_post.max(), count)
    return out


def recomputed_posteriors(
    study: Study, pool: str = PairPosterior.Pool.LIVE, pair_ids: list[int] | None = None
) -> dict[int, tuple[np.ndarray, int]]:
    """pair id -> (log posterior (G,), judgment count) of the study's `pool` recomputed
    from the prior and every judgment stored by a session of the pool
    (adaptive_design.kinds_in_pool) that the researcher has not excluded (the exclusion
    rule, reports.counted, for the live pool), for the pairs the pool has rows for and
    those its judgments name, or only `pair_ids` when given; each log posterior has its
    maximum subtracted."""
    model = interface_model(study, grid_lams(study))
    prior = prior_log_posterior(study)
    posterior_rows = PairPosterior.objects.filter(study=study, pool=pool)
    judgments = Judgment.objects.filter(
        study=study, session__kind__in=kinds_in_pool(pool), session__excluded=False
    )
    if pair_ids is not None:
        posterior_rows = posterior_rows.filter(pair_id__in=pair_ids)
        judgments = judgments.filter(pair_id__in=pair_ids)
    out = {p: (prior.copy(), 0) for p in posterior_rows.values_list("pair_id", flat=True)}
    rows = judgments.values_list("pair_id", "stimulus__lam", "response", "lam")
    for pair_id, stimulus_lam, response, lam in rows:
        log_post, count = out.get(pair_id, (prior.copy(), 0))
        loglik = judgment_loglik(model, study.interface, stimulus_lam, response, lam)
        if loglik is not None:
            log_post = log_post + loglik
        out[pair_id] = (log_post, count + 1)
    return {p: (lp - lp.max(), n) for p, (lp, n) in out.items()}


def pair_posteriors(study: Study) -> tuple[list[int], PairPosteriors]:
    """The stored live posteriors as adaptive.model.PairPosteriors (rows in pair id
    order), for reading midpoints and curves with their bands."""
    stored = stored_posteriors(study)
    pair_ids = sorted(stored)
    post = PairPosteriors(len(pair_ids), GRID)
    for i, p in enumerate(pair_ids):
        log_post, count = stored[p]
        row = log_post - log_post.max()
        post.log_post[i] = row
        probs = np.exp(row)
        post.probs[i] = probs / probs.sum()
        post.n_judgments[i] = count
    return pair_ids, post
