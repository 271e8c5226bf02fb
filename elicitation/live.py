"""The per-process catalog of live studies, the sessions a process has seen, and the
names under which each open study serves its stimulus images.

Shared by the trial page (selectors.next_trial) and the save (services.judgments):
both read the session row with one hand-written query and everything else from here,
so a saved answer's path enters this module once and never the other side's.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass

from django.db import connection
from django.db.models.functions import Greatest, Least
from django.urls import reverse
from django.utils.crypto import salted_hmac

from datasets.models import Pair, Stimulus

from .models import ConditionItem, Session, Study, secret_hash


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
                grids.setdefault(pair_id, {})[round(lam, 4)] = study_image_url(self.study, key)
        return {
            row.position: TrialItem(
                pair_id=row.pair_id,
                stimulus_id=row.stimulus_id,
                class1=row.pair.class1,
                class2=row.pair.class2,
                images=grids.get(row.pair_id)
                or {round(row.stimulus.lam, 4): study_image_url(self.study, row.stimulus.key)},
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
    if field.name
    in {"id", "study", "condition", "token_hash", "state", "position", "trial_order", "kind"}
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


# --- Stimulus images, per study ----------------------------------------------------------
# A stimulus is shown under another opaque address in every study: with one address
# per stimulus, walking a study that names its classes (2AFC) or shows its grid in
# order (Construct) would map each address to what another study on the same images
# hides. Its bytes are the same everywhere, though: study_rules.disclosure_conflicts
# keeps such studies from being live together. A page loads up to 11 images, so
# serving one reads no database: which studies are live is re-read at most every
# LIVE_RECHECK_S per process (at once after a change in this process), each study's
# addresses once per process.

LIVE_RECHECK_S = 2.0  # how long another process may serve a study closed here
# The statuses of studies that take participants, so show them images
# (Study.accepts_participants).
OPEN_STATUSES = (Study.Status.LIVE, Study.Status.PILOT)


def image_key(study_id: int, stimulus_key: str) -> str:
    """The opaque name (22 URL-safe characters) of a stimulus's image in one study: an
    HMAC under SECRET_KEY of the study and the stimulus's own key, so nobody can tell
    two studies' names of one image apart from two images."""
    digest = salted_hmac("hillmix.study-image", f"{study_id}:{stimulus_key}").digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def study_image_url(study: Study, stimulus_key: str) -> str:
    """Where the participants of `study` fetch the stimulus stored under `stimulus_key`
    (hillmix_site.media.study_image): the only address they ever see for it."""
    return reverse("study-image", args=[study.slug, image_key(study.pk, stimulus_key)])


@dataclass(frozen=True)
class _LiveStudies:
    checked_at: float
    by_slug: dict[str, tuple[int, int]]  # slug -> (study id, stimulus set id)


_live_studies = _LiveStudies(checked_at=float("-inf"), by_slug={})
_image_files: dict[tuple[int, int], dict[str, str]] = {}  # (study, set) -> {name: file}


def forget_live_studies(**signal: object) -> None:
    """Re-read which studies are live on the next image request (a study was saved,
    opened or closed in this process; also a post_save/post_delete receiver)."""
    global _live_studies
    _live_studies = _LiveStudies(checked_at=float("-inf"), by_slug={})


def _live_by_slug() -> dict[str, tuple[int, int]]:
    global _live_studies
    live = _live_studies
    now = time.monotonic()
    if now - live.checked_at > LIVE_RECHECK_S:
        rows = Study.objects.filter(status__in=OPEN_STATUSES).values_list(
            "slug", "pk", "stimulus_set_id"
        )
        live = _live_studies = _LiveStudies(now, {slug: (pk, s) for slug, pk, s in rows})
    return live.by_slug


def live_image_file(slug: str, name: str) -> str | None:
    """The stored file of the image the study `slug` serves as `name` (image_key) while
    it takes participants (OPEN_STATUSES), else None."""
    study = _live_by_slug().get(slug)
    if study is None:
        return None
    files = _image_files.get(study)
    if files is None:
        study_id, set_id = study
        stimuli = Stimulus.objects.filter(pair__stimulus_set_id=set_id).exclude(image="")
        files = _image_files[study] = {
            image_key(study_id, key): image for key, image in stimuli.values_list("key", "image")
        }
    return files.get(name)


def live_studies_showing_images_of(stimulus_set_id: int, exclude: int | None) -> list[tuple]:
    """(slug, interface) of the studies taking participants (OPEN_STATUSES), other than
    `exclude`, that show images of the stimulus set or of another set mixing one of its
    pairs of source images (the same pixels, whatever the set): whom
    study_rules.disclosure_conflicts asks about."""
    live = Study.objects.filter(status__in=OPEN_STATUSES).exclude(pk=exclude)
    same_set = list(live.filter(stimulus_set_id=stimulus_set_id).values_list("slug", "interface"))

    def unordered(pairs):
        return set(
            pairs.annotate(lo=Least("id1", "id2"), hi=Greatest("id1", "id2")).values_list(
                "lo", "hi"
            )
        )

    mine = unordered(Pair.objects.filter(stimulus_set_id=stimulus_set_id))
    others = live.exclude(stimulus_set_id=stimulus_set_id).filter(
        stimulus_set__dataset__stimulus_sets=stimulus_set_id
    )
    shared = [
        (slug, interface)
        for slug, interface, set_id in others.values_list("slug", "interface", "stimulus_set_id")
        if mine & unordered(Pair.objects.filter(stimulus_set_id=set_id))
    ]
    return sorted(same_set + shared)


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
    kind: str  # a preview's answers leave an adaptive study's posteriors alone


_known_sessions: dict[tuple[str, str | None], _KnownSession] = {}
_known_lock = threading.Lock()


def _remember(token_hash: str, slug: str | None, session: Session) -> None:
    known = _KnownSession(
        session.pk, session.study_id, session.condition_id, session.trial_order, session.kind
    )
    with _known_lock:
        if len(_known_sessions) >= KNOWN_SESSIONS_MAX:  # forget the oldest
            del _known_sessions[next(iter(_known_sessions))]
        _known_sessions[token_hash, slug] = known


def remember_trial_order(token_hash: str, slug: str | None, trial_order: list) -> None:
    """An adaptive session's trial order grew by a served trial (services.adaptive):
    what this process remembers of the session follows, so its answer still saves
    without a read. Served trials never change, so a longer order is never wrong."""
    with _known_lock:
        for key in ((token_hash, slug), (token_hash, None)):
            known = _known_sessions.get(key)
            if known is not None:
                _known_sessions[key] = _KnownSession(
                    known.id, known.study_id, known.condition_id, trial_order, known.kind
                )


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
        "kind": known.kind,
    }
    session = Session.from_db(connection.alias, _LIVE_COLUMNS, [columns[c] for c in _LIVE_COLUMNS])
    session.study = catalog.study
    return LiveSession(session, catalog)
