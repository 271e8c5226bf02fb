"""Reads for the participant flow."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from datasets.models import Pair, Stimulus, stimulus_url

from . import interfaces
from .models import (
    Condition,
    ConditionItem,
    Participant,
    Session,
    Study,
    secret_hash,
)


def study_by_slug(slug: str) -> Study | None:
    """The study at this address, from the per-process catalog (one small query checks
    it is current). Shared by requests: read it, never change it."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, updated_at FROM {Study._meta.db_table} WHERE slug = %s", [slug])
        row = cursor.fetchone()
    return study_catalog(*row).study if row else None


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

    Counted: sessions not excluded that are complete, or unfinished and seen within the
    study's `stale_after_minutes` (psiTurk's cutoff for abandoned assignments). An
    excluded or abandoned session gives its place back.

    Hand-written: every new participant runs it, under the study's lock."""
    fresh_since = timezone.now() - timedelta(minutes=study.stale_after_minutes)
    sql = (
        f"SELECT c.id, COUNT(s.id) FROM {Condition._meta.db_table} c "
        f"LEFT JOIN {Session._meta.db_table} s ON s.condition_id = c.id "
        "AND NOT s.excluded AND (s.state = %s OR s.last_seen_at >= %s) "
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


def grid_lams(study: Study) -> list[float]:
    return sorted(float(x) for x in study.stimulus_set.lams)


# --- The trial hot path ------------------------------------------------------------
# Showing a trial and saving its answer happen for every participant every few
# seconds. They read the session row with one hand-written query and everything else
# from a per-process catalog of the study: building an ORM query costs about 1 ms
# here, several times the query itself.


@dataclass(frozen=True)
class TrialItem:
    """One condition item as the trial page shows it."""

    pair_id: int
    stimulus_id: int | None
    class1: str
    class2: str
    images: dict[float, str]  # lam -> opaque URL: the pair's grid, or the one stimulus shown
    stimulus_lam: float | None = None  # the shown stimulus's lam (single interfaces)


class StudyCatalog:
    """A study with its grid and its conditions' items, loaded once per process and
    version of the study row, and shared by its requests: read it, never change it.
    Stimulus sets are immutable once ready, and conditions cannot change once
    sessions exist, so only the study row itself can go stale."""

    def __init__(self, study: Study, version: object) -> None:
        self.study = study
        self.version = version
        self.grid = grid_lams(study)
        self._conditions: dict[int, dict[int, TrialItem]] = {}

    def item(self, condition_id: int, position: int) -> TrialItem:
        return self._items(condition_id)[position]

    def positions(self, condition_id: int) -> list[int]:
        """The positions of the condition's items."""
        return list(self._items(condition_id))

    def _items(self, condition_id: int) -> dict[int, TrialItem]:
        items = self._conditions.get(condition_id)
        if items is None:
            items = self._conditions[condition_id] = self._load_condition(condition_id)
        return items

    def _load_condition(self, condition_id: int) -> dict[int, TrialItem]:
        rows = list(
            ConditionItem.objects.filter(condition_id=condition_id).select_related(
                "pair", "stimulus"
            )
        )
        grids: dict[int, dict[float, str]] = {}
        if self.study.is_grid:
            stimuli = Stimulus.objects.filter(pair_id__in={r.pair_id for r in rows})
            for pair_id, lam, key in stimuli.values_list("pair_id", "lam", "key"):
                grids.setdefault(pair_id, {})[round(lam, 4)] = stimulus_url(key)
        return {
            row.position: TrialItem(
                pair_id=row.pair_id,
                stimulus_id=row.stimulus_id,
                class1=row.pair.class1,
                class2=row.pair.class2,
                images=grids.get(row.pair_id)
                or {round(row.stimulus.lam, 4): row.stimulus.served_url},
                stimulus_lam=row.stimulus.lam if row.stimulus_id else None,
            )
            for row in rows
        }


_catalogs: dict[int, StudyCatalog] = {}


def study_catalog(study_id: int, version: object) -> StudyCatalog:
    catalog = _catalogs.get(study_id)
    if catalog is None or catalog.version != version:
        study = Study.objects.select_related("stimulus_set__dataset").get(pk=study_id)
        catalog = _catalogs[study_id] = StudyCatalog(study, version)
    return catalog


def catalog_of(study: Study) -> StudyCatalog:
    """The catalog `study` was read from, or, for a study read some other way (a script,
    a test), one made for the occasion."""
    catalog = _catalogs.get(study.pk)
    if catalog is not None and catalog.study is study:
        return catalog
    return StudyCatalog(study, version=None)


@dataclass
class LiveSession:
    """The columns of a session the trial endpoints need, with its study's catalog."""

    session: Session
    catalog: StudyCatalog


# In the model's field order, as Model.from_db expects them.
_LIVE_COLUMNS = tuple(
    field.attname
    for field in Session._meta.concrete_fields
    if field.name in {"id", "study", "condition", "token_hash", "state", "position", "trial_order"}
)
_TRIAL_ORDER = _LIVE_COLUMNS.index("trial_order")


def _live_session(where: str, params: list) -> LiveSession | None:
    columns = ", ".join(f"s.{name}" for name in _LIVE_COLUMNS)
    sql = (
        f"SELECT {columns}, st.updated_at FROM {Session._meta.db_table} s "
        f"JOIN {Study._meta.db_table} st ON st.id = s.study_id WHERE {where}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    *values, version = row
    if isinstance(values[_TRIAL_ORDER], str | bytes):  # JSON as the driver hands it over
        values[_TRIAL_ORDER] = json.loads(values[_TRIAL_ORDER])
    session = Session.from_db(connection.alias, _LIVE_COLUMNS, values)
    catalog = study_catalog(session.study_id, version)
    session.study = catalog.study
    return LiveSession(session, catalog)


def live_session(token: str | None, slug: str | None = None) -> LiveSession | None:
    """The session whose secret is `token` (in the study `slug`, when given), for the
    participant pages and the trial endpoints: one query on the unique index of the
    secret's hash."""
    if not token:
        return None
    token_hash = secret_hash(token)
    if slug is None:
        live = _live_session("s.token_hash = %s", [token_hash])
    else:
        live = _live_session("s.token_hash = %s AND st.slug = %s", [token_hash, slug])
    if live is not None:
        _remember(token_hash, slug, live.session)
    return live


# --- Saving without reading the session first ------------------------------------------
# A session's id, study, condition and trial order are fixed when it starts; only its
# position and state move. So a save whose session this process has read before checks
# the answer against what it remembers and goes straight to its write, and the write's
# UPDATE confirms the rest (position, state, the study's version) in the same
# statement. One query fewer for nearly every answer.

KNOWN_SESSIONS_MAX = 1024  # a few KB each (the trial order); every worker sees everyone


@dataclass(frozen=True)
class _KnownSession:
    id: int
    study_id: int
    condition_id: int
    trial_order: list  # shared by requests: read it, never change it


_known_sessions: dict[tuple[str, str | None], _KnownSession] = {}
_known_lock = threading.Lock()


def _remember(token_hash: str, slug: str | None, session: Session) -> None:
    known = _KnownSession(session.pk, session.study_id, session.condition_id, session.trial_order)
    with _known_lock:
        if len(_known_sessions) >= KNOWN_SESSIONS_MAX:  # forget the oldest
            del _known_sessions[next(iter(_known_sessions))]
        _known_sessions[token_hash, slug] = known


def presumed_live_session(token_hash: str, slug: str | None, position: int) -> LiveSession | None:
    """The session whose secret hashes to `token_hash` as it is if `position` is its
    next trial, from what this process remembers (no query); None when it remembers
    nothing. Only for a write that confirms the position, the state, the secret (it may
    have been renewed) and the study's version itself."""
    known = _known_sessions.get((token_hash, slug))
    catalog = _catalogs.get(known.study_id) if known else None
    if catalog is None or not 0 <= position < len(known.trial_order):
        return None
    columns = {
        "id": known.id,
        "study_id": known.study_id,
        "condition_id": known.condition_id,
        "token_hash": token_hash,
        "trial_order": known.trial_order,
        "position": position,
        "state": Session.State.TRIALS,
    }
    session = Session.from_db(connection.alias, _LIVE_COLUMNS, [columns[c] for c in _LIVE_COLUMNS])
    session.study = catalog.study
    return LiveSession(session, catalog)


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
        "total": session.trial_count,
        "interface": study.interface,
        "ask_confidence": study.ask_confidence,
    }
    interface = interfaces.get(study.interface)
    if interface.names_classes:
        trial["class1"], trial["class2"] = item.class1, item.class2
    interface.serve(trial, spec, item, live.catalog.grid, session)
    return trial


def progress(session: Session) -> dict:
    return {"done": session.position, "total": session.trial_count}


# --- Stimulus images ---------------------------------------------------------------------
# A participant page loads up to 11 of them, so the lookup is one hand-written query.
_LIVE_STIMULUS_FILE = (
    f"SELECT s.image FROM {Stimulus._meta.db_table} s "
    f"JOIN {Pair._meta.db_table} p ON p.id = s.pair_id "
    f"WHERE s.key = %s AND EXISTS (SELECT 1 FROM {Study._meta.db_table} st "
    f"WHERE st.stimulus_set_id = p.stimulus_set_id AND st.status = '{Study.Status.LIVE}')"
)


def live_stimulus_file_name(key: str) -> str | None:
    """The stored file of the stimulus served under `key` if a live study shows its
    stimulus set, else None: stimuli of draft and closed studies are not public."""
    with connection.cursor() as cursor:
        cursor.execute(_LIVE_STIMULUS_FILE, [key])
        row = cursor.fetchone()
    return (row[0] or None) if row else None
