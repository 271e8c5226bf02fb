"""Reads for researchers: progress, aggregates, data quality, export rows.

Kept apart from selectors.py (the participant flow's reads) because these scan
whole studies; the numbers themselves come from the pure analytics module.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta

import orjson
import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from datasets.models import Pair, Stimulus

from . import analytics, interfaces
from .models import Judgment, Session, Study


def counted(judgments: QuerySet[Judgment], include_excluded: bool = False) -> QuerySet[Judgment]:
    """The exclusion rule, the one every export, aggregate and dashboard applies: only
    live sessions are research data (pilots, previews and simulated participants never
    are), and the judgments of participants a researcher excluded are left out unless
    `include_excluded` asks for them."""
    live = judgments.filter(session__kind=Session.Kind.LIVE)
    return live if include_excluded else live.filter(session__excluded=False)


# The session kinds whose figures the dashboard draws, each kind on its own (never
# mixed): live sessions are research data; a pilot's and simulated participants' figures
# let a researcher check a study before it goes live.
FIGURE_KINDS: tuple[str, ...] = (Session.Kind.LIVE, Session.Kind.PILOT, Session.Kind.SIMULATED)


def of_kind(
    judgments: QuerySet[Judgment], kind: str = Session.Kind.LIVE, include_excluded: bool = False
) -> QuerySet[Judgment]:
    """The judgments of one session kind (FIGURE_KINDS), for figures that show that kind
    alone: live ones under the exclusion rule (`counted`); pilot or simulated sessions'
    only theirs, which are never research data, with excluded sessions left out unless
    `include_excluded` asks for them. ValueError for another kind (preview sessions are
    no one's data)."""
    if kind == Session.Kind.LIVE:
        return counted(judgments, include_excluded)
    if kind not in FIGURE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(FIGURE_KINDS)}, not {kind!r}")
    own = judgments.filter(session__kind=kind)
    return own if include_excluded else own.filter(session__excluded=False)


def figure_kind_param(value: str | None) -> str:
    """The dashboard's `curves_kind` query parameter: which sessions' curves and
    reliability to show, live (absent or empty), pilot or simulated. ValueError for
    anything else (answered with a 400)."""
    kind = (value or Session.Kind.LIVE).strip().lower()
    if kind not in FIGURE_KINDS:
        raise ValueError(f"curves_kind must be one of {', '.join(FIGURE_KINDS)}, not {value!r}")
    return kind


def flag_param(name: str, value: str | None) -> bool:
    """A boolean query parameter, read the same way by the API and the dashboard:
    1/true/yes/on or 0/false/no/off/absent, in any case. Raises ValueError naming the
    parameter for anything else (answered with a 400)."""
    text = (value or "").strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, not {value!r}")


def include_excluded_param(value: str | None) -> bool:
    """The `include_excluded` query parameter of the exclusion rule (flag_param)."""
    return flag_param("include_excluded", value)


def study_judgments(study: Study, include_excluded: bool = False) -> QuerySet[Judgment]:
    """A study's judgments under the exclusion rule (`counted`)."""
    return counted(Judgment.objects.filter(study=study), include_excluded)


# --- progress -------------------------------------------------------------------


def counted_sessions(sessions: QuerySet[Session]) -> QuerySet[Session]:
    """The sessions that are research participants: live (not pilots, previews or
    simulated) and not withdrawn. What progress, the quality report and payments list
    by default; `counted` is the same rule for judgments."""
    return sessions.filter(kind=Session.Kind.LIVE, withdrawn_at__isnull=True)


def session_kinds(study: Study) -> dict:
    """How many of the study's sessions are of each kind (Session.Kind), and how many
    live ones were withdrawn: {"live": n, "pilot": n, "preview": n, "simulated": n,
    "withdrawn": n}."""
    counts = dict.fromkeys(Session.Kind.values, 0)
    rows = Session.objects.filter(study=study).values_list("kind").annotate(n=Count("pk"))
    counts.update(dict(rows))
    counts["withdrawn"] = Session.objects.filter(study=study, withdrawn_at__isnull=False).count()
    return counts


def study_progress_in_python(study: Study) -> list[dict]:
    """Per condition: started, completed, abandoned (idle past the stale limit),
    in progress, and the median completion time in minutes; research participants only
    (counted_sessions). The definition study_progress computes in the database."""
    stale_before = timezone.now() - timedelta(minutes=study.stale_after_minutes)
    rows = {
        c.pk: {
            "condition": c.name,
            "started": 0,
            "completed": 0,
            "abandoned": 0,
            "in_progress": 0,
            "durations": [],
        }
        for c in study.conditions.all()
    }
    sessions = counted_sessions(Session.objects.filter(study=study)).values_list(
        "condition_id", "state", "last_seen_at", "started_at", "completed_at"
    )
    for condition_id, state, last_seen, started, completed in sessions:
        row = rows[condition_id]
        row["started"] += 1
        if state == Session.State.COMPLETE:
            row["completed"] += 1
            if completed and started:
                row["durations"].append((completed - started).total_seconds() / 60)
        elif last_seen < stale_before:
            row["abandoned"] += 1
        else:
            row["in_progress"] += 1
    for row in rows.values():
        durations = row.pop("durations")
        row["median_minutes"] = round(statistics.median(durations), 1) if durations else None
    return list(rows.values())


def study_progress(study: Study) -> list[dict]:
    """Per condition (in the study's condition order): started, completed, abandoned
    (idle past the stale limit), in progress, and the median completion time in minutes
    (rounded to 0.1); research participants only (counted_sessions). One GROUP BY per
    study in PostgreSQL (study_progress_in_python is the definition)."""
    if not _in_database():
        return study_progress_in_python(study)
    stale_before = timezone.now() - timedelta(minutes=study.stale_after_minutes)
    complete = Session.State.COMPLETE
    sessions = counted_sessions(Session.objects.filter(study=study)).order_by()
    source, params = sessions.values("condition_id", "state", "last_seen_at", "started_at",
                                     "completed_at").query.sql_with_params()  # fmt: skip
    # percentile_cont(0.5) is statistics.median: the middle value, or the mean of the two.
    sql = f"""
        SELECT s.condition_id, count(*),
               count(*) FILTER (WHERE s.state = %s),
               count(*) FILTER (WHERE s.state <> %s AND s.last_seen_at < %s),
               count(*) FILTER (WHERE s.state <> %s AND s.last_seen_at >= %s),
               percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY extract(epoch FROM s.completed_at - s.started_at) / 60
               ) FILTER (WHERE s.state = %s AND s.completed_at IS NOT NULL)
        FROM ({source}) AS s GROUP BY s.condition_id
    """
    numbers = {
        row[0]: row[1:]
        for row in _fetch(
            sql,
            (complete, complete, stale_before, complete, stale_before, complete, *params),
        )
    }
    rows = []
    for condition in study.conditions.all():
        started, completed, abandoned, in_progress, median = numbers.get(
            condition.pk, (0, 0, 0, 0, None)
        )
        rows.append(
            {
                "condition": condition.name,
                "started": started,
                "completed": completed,
                "abandoned": abandoned,
                "in_progress": in_progress,
                "median_minutes": None if median is None else round(float(median), 1),
            }
        )
    return rows


def progress_totals(progress: list[dict]) -> dict:
    keys = ["started", "completed", "abandoned", "in_progress"]
    return {k: sum(row[k] for row in progress) for k in keys}


# --- aggregates -----------------------------------------------------------------


def stimulus_aggregates_in_python(study: Study, include_excluded: bool = False) -> dict[str, dict]:
    """Per stimulus, the layout of H-Mix's processed_hmix_inferences.json."""
    rows = (
        study_judgments(study, include_excluded)
        .filter(stimulus__isnull=False, lam__isnull=False)
        .order_by("pk")
        .values_list(
            "stimulus__name",
            "stimulus__lam",
            "lam",
            "confidence",
            "pair__class1",
            "pair__class2",
            "pair__name",
        )
    )
    grouped: dict[str, dict] = {}
    for name, true_lam, lam, confidence, class1, class2, pair_name in rows.iterator():
        entry = grouped.setdefault(
            name,
            {
                "true": true_lam,
                "lams": [],
                "conf": [],
                "classes": [class1, class2],
                "pair": pair_name,
            },
        )
        entry["lams"].append(lam)
        entry["conf"].append(confidence)
    result = {}
    for name, entry in grouped.items():
        aggregate = analytics.stimulus_aggregate(entry["true"], entry["lams"], entry["conf"])
        aggregate["Endpoints"] = entry["classes"]
        aggregate["Class Pair"] = f"{entry['pair']}.png"
        result[name] = aggregate
    return result


def confidence_by_true_lam_in_python(study: Study, include_excluded: bool = False) -> list[dict]:
    """Mean and std over per-stimulus mean confidences, for each true lam."""
    per_stimulus = confidence_per_stimulus_in_python(study, include_excluded)
    lams = [lam for lam, _ in per_stimulus]
    means = [confidence for _, confidence in per_stimulus]
    return [m.__dict__ for m in analytics.mean_std_by(lams, means)]


def perceived_by_true_lam_in_python(study: Study, include_excluded: bool = False) -> list[dict]:
    rows = list(
        study_judgments(study, include_excluded)
        .filter(stimulus__isnull=False, lam__isnull=False)
        .values_list("stimulus__lam", "lam")
    )
    return [m.__dict__ for m in analytics.mean_std_by([r[0] for r in rows], [r[1] for r in rows])]


def midpoint_distribution_in_python(
    studies: QuerySet[Study], include_excluded: bool = False
) -> dict:
    """Per grid interface: how often each lam was chosen as the 50/50 point."""
    result = {}
    for interface in sorted(interfaces.names(grid=True)):
        lams, grid = [], set()
        for study in studies.filter(interface=interface).select_related("stimulus_set"):
            grid.update(float(x) for x in study.stimulus_set.lams)
            lams += list(
                study_judgments(study, include_excluded)
                .filter(lam__isnull=False)
                .values_list("lam", flat=True)
            )
        if lams:
            result[interface] = {
                "n": len(lams),
                "counts": analytics.midpoint_histogram(lams, sorted(grid)),
            }
    return result


def class_pair_midpoint_table_in_python(study: Study, include_excluded: bool = False) -> list[dict]:
    rows = (
        study_judgments(study, include_excluded)
        .filter(lam__isnull=False)
        .values_list("pair__class1", "pair__class2", "lam")
    )
    return analytics.class_pair_midpoints(rows.iterator())


def soft_label_summary(study: Study, include_excluded: bool = False) -> list[dict]:
    """Per stimulus of a soft-label study: analytics.soft_label_stimulus (mean label on
    class 1, class 2 and the rest, entropy, agreement with the mixup label) plus the
    stimulus name, sorted by true lam then name. Judgments without a stored soft label
    are skipped."""
    class_names = list(study.stimulus_set.dataset.class_names)
    index = {name: i for i, name in enumerate(class_names)}
    grouped: dict[str, dict] = {}
    rows = (
        study_judgments(study, include_excluded)
        .filter(stimulus__isnull=False)
        .order_by("pk")
        .values_list("stimulus__name", "stimulus__lam", "pair__class1", "pair__class2", "response")
    )
    for name, true_lam, class1, class2, response in rows.iterator(chunk_size=EXPORT_CHUNK):
        label = (response or {}).get("soft_label")
        if not label or len(label) != len(class_names) or not {class1, class2} <= index.keys():
            continue
        entry = grouped.setdefault(
            name, {"lam": true_lam, "class1": index[class1], "class2": index[class2], "labels": []}
        )
        entry["labels"].append(label)
    summary = [
        {
            "stimulus": name,
            **analytics.soft_label_stimulus(e["lam"], e["class1"], e["class2"], e["labels"]),
        }
        for name, e in grouped.items()
    ]
    return sorted(summary, key=lambda row: (row["true_lam"], row["stimulus"]))


# --- aggregates in the database ---------------------------------------------------
#
# The functions above are the definition of each aggregate (one pass in Python over the
# study's judgments); the ones below compute the same numbers with GROUP BY in
# PostgreSQL, so a study with a million judgments answers in about a second. Tests hold
# them equal to 1e-9 on H-Mix and on generated data. Other databases (SQLite, for a
# quick local try) take the Python path.

# What each judgment contributes to an aggregate, named once: the perceived (Infer) or
# chosen (grid) lam of the pair's first image and the confidence 0-1 are the columns an
# interface fills in; the rest locate the stimulus and its pair.
AGGREGATE_COLUMNS = {
    "j_id": F("pk"),
    "j_session": F("session_id"),
    "j_stimulus": F("stimulus_id"),
    "j_pair": F("pair_id"),
    "j_true_lam": F("stimulus__lam"),
    "j_perceived": F("lam"),
    "j_confidence": F("confidence"),
    "j_class1": F("pair__class1"),
    "j_class2": F("pair__class2"),
}


def _in_database() -> bool:
    return connection.vendor == "postgresql"


def _source(judgments: QuerySet[Judgment], *names: str) -> tuple[str, tuple]:
    """The SELECT of `judgments` (its filters and the exclusion rule as the ORM writes
    them) with the AGGREGATE_COLUMNS `names` as its columns, to wrap in a GROUP BY."""
    query = judgments.order_by().values(**{n: AGGREGATE_COLUMNS[n] for n in names}).query
    return query.sql_with_params()


def _fetch(sql: str, params: tuple | list | dict, binary: bool = False) -> list[tuple]:
    """Run an aggregate; `binary` fetches in PostgreSQL's binary format (Django's cursor
    speaks text), which loads large float arrays several times faster."""
    # JIT compiling these one-pass aggregates costs more than it saves (measured at a
    # million judgments: 1.3 s with it, 0.4 s without); SET LOCAL ends with the block.
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")
            if not binary:
                cursor.execute(sql, params)
                return cursor.fetchall()
        with psycopg.Cursor(connection.connection) as raw:
            raw.execute(sql, params, binary=True)
            return raw.fetchall()


# Python's round(x, 6), the key the Python path groups lams by.
_KEY = "round(({})::numeric, 6)::float8"


@dataclass(frozen=True)
class StimulusGroup:
    """One stimulus's judgments (counted, with the stimulus set) reduced to the numbers
    every per-stimulus figure needs. "Perceived" is the lam an interface stores (Infer's
    perceived lam; None where it stores none)."""

    stimulus_id: int
    name: str
    true_lam: float
    class1: str
    class2: str
    pair: str
    first_id: int | None  # first judgment with a perceived lam (the H-Mix file's order)
    n: int  # judgments with a perceived lam
    mean: float | None  # their mean perceived lam
    var: float | None  # its population variance
    weighted: float | None  # mean perceived lam x confidence, when every one has one
    n_confidence: int  # judgments with a confidence (perceived lam or not)
    confidence: float | None  # their mean confidence


_SHARED_GROUPS: ContextVar[dict | None] = ContextVar("shared_stimulus_groups", default=None)


@contextmanager
def shared_stimulus_groups() -> Iterator[None]:
    """Within the block, stimulus_groups runs its GROUP BY once per (study, exclusion
    rule) and hands every later caller the same rows: a page that draws several
    per-stimulus figures (the dashboard) scans the judgments once. Outside a block
    every call reads the database afresh."""
    token = _SHARED_GROUPS.set({})
    try:
        yield
    finally:
        _SHARED_GROUPS.reset(token)


def stimulus_groups(study: Study, include_excluded: bool = False) -> list[StimulusGroup]:
    """Per stimulus with counted judgments (PostgreSQL only): one GROUP BY over the
    study's judgments, the stimulus and its pair joined to the groups afterwards (a
    thousand rows, not a million). Feeds stimulus_aggregates (summary),
    perceived_by_true_lam, confidence_by_true_lam and confidence_by_pooled_lam."""
    memo = _SHARED_GROUPS.get()
    key = (study.pk, include_excluded)
    if memo is not None and key in memo:
        return memo[key]
    judgments = study_judgments(study, include_excluded).filter(stimulus__isnull=False)
    source, params = _source(judgments, "j_id", "j_stimulus", "j_perceived", "j_confidence")
    # count(x)/avg(x) skip NULLs: each figure's own filter (perceived lam, confidence)
    # without a pass per figure; perceived x confidence is NULL unless both are there.
    sql = f"""
        SELECT a.*, s.name, s.lam, p.class1, p.class2, p.name
        FROM (
            SELECT j.j_stimulus, min(j.j_id) FILTER (WHERE j.j_perceived IS NOT NULL),
                   count(j.j_perceived), avg(j.j_perceived), var_pop(j.j_perceived),
                   count(j.j_perceived * j.j_confidence),
                   avg(j.j_perceived * j.j_confidence),
                   count(j.j_confidence), avg(j.j_confidence)
            FROM ({source}) AS j GROUP BY j.j_stimulus
        ) AS a
        JOIN {Stimulus._meta.db_table} AS s ON s.id = a.j_stimulus
        JOIN {Pair._meta.db_table} AS p ON p.id = s.pair_id
    """
    groups = []
    for (stimulus_id, first_id, n, mean, var, n_weighted, weighted, n_conf, conf,
         name, true_lam, class1, class2, pair) in _fetch(sql, params):  # fmt: skip
        groups.append(
            StimulusGroup(
                stimulus_id, name, true_lam, class1, class2, pair, first_id, n, mean, var,
                weighted if n and n_weighted == n else None, n_conf, conf,
            )  # fmt: skip
        )
    if memo is not None:
        memo[key] = groups
    return groups


def stimulus_aggregates(
    study: Study, include_excluded: bool = False, values: bool = True
) -> dict[str, dict]:
    """Per stimulus, the layout of H-Mix's processed_hmix_inferences.json (population
    std, repeats count as judgments), keyed by stimulus name in order of first judgment.
    See stimulus_aggregates_in_python for the definition. `values=False` leaves out the
    two lists of every judgment's perceived lam and confidence (most of the bytes: 38 MB
    at a million judgments) and gives their count, "Judgments", instead: computed from
    stimulus_groups without reading a value per judgment."""
    if not _in_database():
        result = stimulus_aggregates_in_python(study, include_excluded)
        return result if values else {k: _summary(v) for k, v in result.items()}
    if not values:
        groups = sorted(
            (g for g in stimulus_groups(study, include_excluded) if g.n),
            key=lambda g: g.first_id,
        )
        return {
            g.name: {
                "True Mixing Factor": g.true_lam,
                "Judgments": g.n,
                "Std Dev": math.sqrt(max(g.var, 0.0)),
                "Re-Label Diff": g.true_lam - g.mean,
                "Weighted Re-Label": g.weighted,
                "Weighted Re-Label Diff": None if g.weighted is None else g.true_lam - g.weighted,
                "Endpoints": [g.class1, g.class2],
                "Class Pair": f"{g.pair}.png",
            }
            for g in groups
        }
    judgments = study_judgments(study, include_excluded).filter(
        stimulus__isnull=False, lam__isnull=False
    )
    source, params = _source(judgments, "j_id", "j_stimulus", "j_perceived", "j_confidence")
    sql = f"""
        SELECT s.name, s.lam, p.class1, p.class2, p.name, a.lams, a.confs, a.mean, a.std,
               a.weighted
        FROM (
            SELECT j.j_stimulus AS stimulus_id, min(j.j_id) AS first_id,
                   array_agg(j.j_perceived ORDER BY j.j_id) AS lams,
                   array_agg(j.j_confidence ORDER BY j.j_id) AS confs,
                   avg(j.j_perceived) AS mean, stddev_pop(j.j_perceived) AS std,
                   CASE WHEN count(j.j_confidence) = count(*)
                        THEN avg(j.j_perceived * j.j_confidence) END AS weighted
            FROM ({source}) AS j GROUP BY j.j_stimulus
        ) AS a
        JOIN {Stimulus._meta.db_table} AS s ON s.id = a.stimulus_id
        JOIN {Pair._meta.db_table} AS p ON p.id = s.pair_id
        ORDER BY a.first_id
    """
    result = {}
    # The lists are most of the work at a million judgments: fetched as binary arrays.
    for name, true_lam, class1, class2, pair, lams, confs, mean, std, weighted in _fetch(
        sql, params, binary=True
    ):
        result[name] = {
            "True Mixing Factor": true_lam,
            "Predicted Mixing Factor": lams,
            "Predicted Confidence": confs,
            "Std Dev": std,
            "Re-Label Diff": true_lam - mean,
            "Weighted Re-Label": weighted,
            "Weighted Re-Label Diff": None if weighted is None else true_lam - weighted,
            "Endpoints": [class1, class2],
            "Class Pair": f"{pair}.png",
        }
    return result




def _summary(aggregate: dict) -> dict:
    """A stimulus of stimulus_aggregates without its lists (values=False's layout)."""
    summary = {"True Mixing Factor": aggregate["True Mixing Factor"]}
    summary["Judgments"] = len(aggregate["Predicted Mixing Factor"])
    lists = ("True Mixing Factor", "Predicted Mixing Factor", "Predicted Confidence")
    summary.update((k, v) for k, v in aggregate.items() if k not in lists)
    return summary


def stimulus_aggregates_json(
    study: Study, include_excluded: bool = False, values: bool = True
) -> bytes:
    """stimulus_aggregates as JSON, encoded by orjson: the million floats of a large
    study's lists take it a tenth of the standard encoder's time (same shortest
    round-trip digits)."""
    return orjson.dumps(stimulus_aggregates(study, include_excluded, values))


def confidence_by_true_lam(study: Study, include_excluded: bool = False) -> list[dict]:
    """Per true lam (rounded to 6 places): n stimuli, mean and population std over the
    stimuli's mean confidences, sorted by lam."""
    if not _in_database():
        return confidence_by_true_lam_in_python(study, include_excluded)
    groups = [g for g in stimulus_groups(study, include_excluded) if g.n_confidence]
    rows = analytics.mean_std_by([g.true_lam for g in groups], [g.confidence for g in groups])
    return [m.__dict__ for m in rows]


def perceived_by_true_lam(study: Study, include_excluded: bool = False) -> list[dict]:
    """Per true lam (rounded to 6 places): n judgments, mean and population std of the
    perceived lam, sorted by lam."""
    if not _in_database():
        return perceived_by_true_lam_in_python(study, include_excluded)
    # The stimuli's groups pooled per rounded true lam (no rounding per judgment).
    groups = [g for g in stimulus_groups(study, include_excluded) if g.n]
    pooled = analytics.pool_groups(
        [g.true_lam for g in groups], [g.n for g in groups], [g.mean for g in groups],
        [g.var for g in groups],
    )  # fmt: skip
    return [m.__dict__ for m in pooled]


# Pools groups (k, n, mean m, population variance v) per key k into n, mean and
# population std: mean = sum(n m) / N, variance = sum(n (v + (m - mean)^2)) / N.
_POOLED = """
    WITH g AS ({groups}),
    t AS (SELECT k, sum(n)::float8 AS n, sum(n * m) / sum(n)::float8 AS m FROM g GROUP BY k)
    SELECT t.k, t.n::bigint, t.m, sqrt(sum(g.n * (g.v + (g.m - t.m) ^ 2)) / t.n)
    FROM t JOIN g ON g.k = t.k GROUP BY t.k, t.n, t.m ORDER BY t.k
"""


def midpoint_distribution(studies: QuerySet[Study], include_excluded: bool = False) -> dict:
    """Per grid interface: n and how often each lam (of the studies' grids, plus any
    other chosen) was chosen as the 50/50 point."""
    if not _in_database():
        return midpoint_distribution_in_python(studies, include_excluded)
    result = {}
    for interface in sorted(interfaces.names(grid=True)):
        of_interface = studies.filter(interface=interface)
        grid = {
            round(float(x), 6)
            for lams in of_interface.values_list("stimulus_set__lams", flat=True)
            for x in lams or []
        }
        judgments = counted(
            Judgment.objects.filter(study__in=of_interface.values("pk"), lam__isnull=False),
            include_excluded,
        )
        source, params = _source(judgments, "j_perceived")
        key = _KEY.format("j.j_perceived")
        counts = dict.fromkeys(grid, 0)
        for lam, n in _fetch(f"SELECT {key}, count(*) FROM ({source}) AS j GROUP BY 1", params):
            counts[lam] = n
        total = sum(counts.values())
        if total:
            result[interface] = {
                "n": total,
                "counts": [{"lam": k, "count": v} for k, v in sorted(counts.items())],
            }
    return result


def class_pair_midpoint_table(study: Study, include_excluded: bool = False) -> list[dict]:
    """Per unordered class pair (names in code-point order): n, mean and population std
    of the midpoint or perceived lam as the weight of class_a
    (analytics.canonical_midpoint)."""
    if not _in_database():
        return class_pair_midpoint_table_in_python(study, include_excluded)
    judgments = study_judgments(study, include_excluded).filter(lam__isnull=False)
    source, params = _source(judgments, "j_pair", "j_perceived")
    # Grouped by pair first (the class names joined to a few hundred groups, not to every
    # judgment), then both orders of a class pair pooled; a reversed pair's midpoints
    # are 1 - lam (mean 1 - m, same variance). COLLATE "C": Python compares strings by
    # code point.
    groups = f"""
        SELECT CASE WHEN c1 COLLATE "C" <= c2 THEN ARRAY[c1, c2] ELSE ARRAY[c2, c1] END AS k,
               n, CASE WHEN c1 COLLATE "C" <= c2 THEN m ELSE 1.0 - m END AS m, v
        FROM (
            SELECT p.class1 AS c1, p.class2 AS c2, g.n, g.m, g.v
            FROM (
                SELECT j.j_pair, count(*) AS n, avg(j.j_perceived) AS m,
                       var_pop(j.j_perceived) AS v
                FROM ({source}) AS j GROUP BY j.j_pair
            ) AS g JOIN {Pair._meta.db_table} AS p ON p.id = g.j_pair
        ) AS o
    """
    sql = _POOLED.format(groups=groups).replace("ORDER BY t.k", 'ORDER BY t.k COLLATE "C"')
    return [
        {"class_a": a, "class_b": b, "n": n, "mean": m, "std": sd}
        for (a, b), n, m, sd in _fetch(sql, params)
    ]


# --- the paper's view ------------------------------------------------------------------


def confidence_by_pooled_lam(study: Study, include_excluded: bool = False) -> list[dict]:
    """The H-Mix paper's confidence table: stimuli pooled over symmetric true lams (0.1
    with 0.9, 0.25 with 0.75, 0.5 alone), per pool the mean over stimuli of the
    per-stimulus mean confidence and its population std over stimuli; `lams` lists the
    pooled true lams, `x` is the smaller. H-Mix: 0.79 +- 0.17, 0.72 +- 0.20,
    0.63 +- 0.20."""
    if _in_database():
        groups = stimulus_groups(study, include_excluded)
        rows = [(g.true_lam, g.confidence) for g in groups if g.n_confidence]
    else:
        per_stimulus_rows = confidence_per_stimulus_in_python(study, include_excluded)
        rows = [(round(lam, 6), conf) for lam, conf in per_stimulus_rows]
    pooled = analytics.pool_symmetric([lam for lam, _ in rows], [c for _, c in rows])
    return [{"x": x, "lams": lams, "mean": s.mean, "std": s.std, "n": s.n} for x, lams, s in pooled]


def confidence_per_stimulus_in_python(
    study: Study, include_excluded: bool = False
) -> list[tuple[float, float]]:
    """(true lam, mean confidence) per stimulus with confidences, in Python."""
    per_stimulus: dict[int, list[float]] = defaultdict(list)
    true_lams = {}
    rows = (
        study_judgments(study, include_excluded)
        .filter(stimulus__isnull=False, confidence__isnull=False)
        .values_list("stimulus_id", "stimulus__lam", "confidence")
    )
    for stimulus_id, true_lam, confidence in rows.iterator():
        per_stimulus[stimulus_id].append(confidence)
        true_lams[stimulus_id] = true_lam
    return [(true_lams[k], sum(v) / len(v)) for k, v in per_stimulus.items()]


def paper_view(study: Study, include_excluded: bool = False) -> dict:
    """The H-Mix paper's figures for one study: confidence pooled over symmetric true
    lams (empty without confidences) and, for a grid study, the mean midpoint with its
    95% interval (empty otherwise)."""
    return {
        "study": study.slug,
        "confidence_by_pooled_lam": confidence_by_pooled_lam(study, include_excluded),
        "midpoints": midpoint_means(Study.objects.filter(pk=study.pk), include_excluded),
    }


def midpoint_means(studies: QuerySet[Study], include_excluded: bool = False) -> dict:
    """Per grid interface: n, mean chosen midpoint (weight of the pair's first image,
    repeats included) and its 95% t interval (analytics.mean_interval). H-Mix: 0.522
    Construct, 0.511 Select-Shuffled."""
    result = {}
    for interface in sorted(interfaces.names(grid=True)):
        judgments = counted(
            Judgment.objects.filter(
                study__in=studies.filter(interface=interface).values("pk"), lam__isnull=False
            ),
            include_excluded,
        )
        source, params = _source(judgments, "j_perceived")
        if _in_database():
            ((n, mean, std),) = _fetch(
                "SELECT count(*), avg(j.j_perceived), stddev_samp(j.j_perceived) "
                f"FROM ({source}) AS j",
                params,
            )
        else:
            lams = list(judgments.values_list("lam", flat=True))
            n = len(lams)
            mean = float(sum(lams) / n) if n else None
            std = float(statistics.stdev(lams)) if n > 1 else None
        if n:
            low, high = analytics.mean_interval(mean, std, n)
            result[interface] = {
                "label": interfaces.get(interface).label,
                "n": n,
                "mean": mean,
                "low": low,
                "high": high,
            }
    return result


# --- data quality ----------------------------------------------------------------


@dataclass(frozen=True)
class QualityThresholds:
    max_quiz_attempts: int = settings.HILLMIX_QUALITY["max_quiz_attempts"]
    min_median_rt_ms: float = settings.HILLMIX_QUALITY["min_median_rt_ms"]
    max_repeat_disagreement: float = settings.HILLMIX_QUALITY["max_repeat_disagreement"]


def quality_sessions(study: Study, kind: str | None = None) -> QuerySet[Session]:
    """The sessions of a study in the quality report's order (first started first):
    research participants (counted_sessions), or, with `kind`, the sessions of that
    Session.Kind (withdrawn ones included)."""
    sessions = Session.objects.filter(study=study)
    sessions = counted_sessions(sessions) if kind is None else sessions.filter(kind=kind)
    return sessions.order_by("started_at", "pk")


def quality_report_in_python(
    study: Study, thresholds: QualityThresholds, sessions: QuerySet[Session] | None = None
) -> list[dict]:
    """One row per session with its flags: many quiz attempts, very fast answers,
    repeat trials that disagree with the first answer."""
    by_session: dict[int, list] = defaultdict(list)
    rows = (
        Judgment.objects.filter(study=study)
        .order_by("trial_index")
        .values_list("session_id", "pair_id", "stimulus_id", "lam", "rt_ms", "is_repeat")
    )
    for session_id, *rest in rows.iterator():
        by_session[session_id].append(rest)
    report = []
    if sessions is None:
        sessions = quality_sessions(study)
    for session in sessions.select_related("participant", "condition"):
        answers = by_session.get(session.pk, [])
        first_answer = {}
        repeats = []
        for pair_id, stimulus_id, lam, _rt, is_repeat in answers:
            key = (pair_id, stimulus_id)
            if is_repeat and key in first_answer and lam is not None:
                repeats.append((lam, first_answer[key]))
            elif not is_repeat and lam is not None:
                first_answer.setdefault(key, lam)
        median_rt = statistics.median([a[3] for a in answers]) if answers else None
        disagreement = analytics.repeat_disagreement(repeats)
        report.append(_quality_row(session, len(answers), median_rt, disagreement, thresholds))
    return report


def _quality_row(
    session: Session,
    answers: int,
    median_rt: float | None,
    disagreement: float | None,
    thresholds: QualityThresholds,
) -> dict:
    """A session's row of the quality report, with the flags its numbers earn."""
    flags = []
    if session.quiz_attempts > thresholds.max_quiz_attempts:
        flags.append(f"{session.quiz_attempts} quiz attempts")
    if median_rt is not None and median_rt < thresholds.min_median_rt_ms:
        flags.append(f"median response {median_rt:.0f} ms")
    if disagreement is not None and disagreement > thresholds.max_repeat_disagreement:
        flags.append(f"repeats differ by {disagreement:.2f}")
    return {
        "session": session,
        "participant": session.participant.public_id,
        "condition": session.condition.name,
        "state": session.state,
        "answers": answers,
        "quiz_attempts": session.quiz_attempts,
        "median_rt_ms": median_rt,
        "repeat_disagreement": disagreement,
        "flags": flags,
        "excluded": session.excluded,
    }


def quality_report(
    study: Study, thresholds: QualityThresholds, sessions: QuerySet[Session] | None = None
) -> list[dict]:
    """One row per session (`sessions`, a slice of quality_sessions, or all of them) with
    its flags: many quiz attempts, very fast answers, repeat trials that disagree with the
    first answer (quality_report_in_python defines them; here the per-session numbers
    come from one GROUP BY over those sessions' judgments)."""
    if not _in_database():
        return quality_report_in_python(study, thresholds, sessions)
    sessions = (quality_sessions(study) if sessions is None else sessions).select_related(
        "participant", "condition"
    )
    sessions = list(sessions)
    ids = [session.pk for session in sessions]
    table = Judgment._meta.db_table
    # A repeat is compared with the session's first earlier non-repeat answer to the same
    # pair and stimulus, as the Python path does walking trials in order; that answer is
    # looked up through the (session, trial_index) index, for the few repeats only.
    sql = f"""
        WITH answers AS (
            SELECT session_id, count(*) AS n,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY rt_ms) AS median_rt
            FROM {table} WHERE study_id = %(study)s AND session_id = ANY(%(ids)s)
            GROUP BY session_id
        ),
        repeats AS (
            SELECT r.session_id, avg(abs(r.lam - f.lam)) AS disagreement
            FROM {table} AS r CROSS JOIN LATERAL (
                SELECT f.lam FROM {table} AS f
                WHERE f.session_id = r.session_id AND f.trial_index < r.trial_index
                  AND f.pair_id = r.pair_id
                  AND f.stimulus_id IS NOT DISTINCT FROM r.stimulus_id
                  AND NOT f.is_repeat AND f.lam IS NOT NULL
                ORDER BY f.trial_index LIMIT 1
            ) AS f
            WHERE r.study_id = %(study)s AND r.session_id = ANY(%(ids)s)
              AND r.is_repeat AND r.lam IS NOT NULL
            GROUP BY r.session_id
        )
        SELECT a.session_id, a.n, a.median_rt, r.disagreement
        FROM answers AS a LEFT JOIN repeats AS r USING (session_id)
    """
    numbers = {row[0]: row[1:] for row in _fetch(sql, {"study": study.pk, "ids": ids})}
    return [
        _quality_row(session, *numbers.get(session.pk, (0, None, None)), thresholds)
        for session in sessions
    ]


# --- export rows ------------------------------------------------------------------

EXPORT_COLUMNS = [
    ("id", "pk"),
    ("study", "study__slug"),
    ("interface", "interface"),
    ("participant", "session__participant__public_id"),
    ("condition", "session__condition__name"),
    ("trial_index", "trial_index"),
    ("is_repeat", "is_repeat"),
    ("pair", "pair__name"),
    ("class1", "pair__class1"),
    ("id1", "pair__id1"),
    ("class2", "pair__class2"),
    ("id2", "pair__id2"),
    ("stimulus", "stimulus__name"),
    ("true_lam", "stimulus__lam"),
    ("lam", "lam"),
    ("confidence", "confidence"),
    ("rt_ms", "rt_ms"),
    ("client_started_at", "client_started_at"),
    ("client_answered_at", "client_answered_at"),
    ("excluded", "session__excluded"),
    ("created_at", "created_at"),
    ("response", "response_text"),
]
# Columns holding JSON text (cast in SQL: no decoding and encoding again per row).
EXPORT_JSON_COLUMNS = ["response"]
EXPORT_CHUNK = 2000


def export_queryset(judgments: QuerySet[Judgment]) -> QuerySet:
    """The SELECT behind an export: one flat row per judgment, in EXPORT_COLUMNS order."""
    return (
        judgments.annotate(response_text=Cast("response", TextField()))
        .order_by("pk")
        .values_list(*[field for _, field in EXPORT_COLUMNS])
    )


def export_rows(judgments: QuerySet[Judgment]) -> Iterator[tuple]:
    """Judgment rows for export, streamed from the database a chunk at a time."""
    return export_queryset(judgments).iterator(chunk_size=EXPORT_CHUNK)


def hmix_rows(study: Study, include_excluded: bool = False) -> Iterator[list]:
    """The study's judgments in the column layout of the H-Mix CSV for its interface."""
    from .hmix import hmix_columns, hmix_response_fields, task_name

    columns = hmix_columns(study.interface)
    rows = (
        study_judgments(study, include_excluded)
        .order_by("session__started_at", "session_id", "trial_index")
        .values_list(
            "session__participant__public_id",
            "session__condition__name",
            "rt_ms",
            "is_repeat",
            "pair__name",
            "pair__class1",
            "pair__id1",
            "pair__class2",
            "pair__id2",
            "stimulus__name",
            "stimulus__lam",
            "response",
        )
    )
    for (
        subject,
        condition,
        rt,
        repeat,
        pair,
        class1,
        id1,
        class2,
        id2,
        stimulus,
        true_lam,
        response,
    ) in rows.iterator(chunk_size=EXPORT_CHUNK):
        values = {
            "subject": subject,
            "condition": condition,
            "rt": rt,
            "task": task_name(study.interface, repeat),
            "class_pair": pair,
            "filename": stimulus,
            "label1": class1,
            "label2": class2,
            "mixtureCoeff": true_lam,
            "id1": id1,
            "id2": id2,
            **hmix_response_fields(study.interface, response, pair),
        }
        yield [values[c] for c in columns]
