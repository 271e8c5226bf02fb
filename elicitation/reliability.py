"""Reads for the dashboard's curves and "who to trust" sections (issue 18): each class
pair's psychometric curve with its 90% credible band, agreement per study, reliability
per participant, and the participants a study needs for +-0.05 on every midpoint.

Every figure here follows the exclusion rule (reports.counted: live sessions, excluded
participants left out unless asked for), or reads the simulated sessions alone
(``kind="simulated"``). The curves are the grid posterior of adaptive.model, computed
from those judgments with the study's noise levels (adaptive_design): for an adaptive
study the same computation as its stored live PairPosterior rows (pilots and simulated
participants keep pools of their own, services.adaptive), except that the stored rows
also count excluded participants (the chooser learns from everyone live).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
from scipy.stats import norm

from adaptive.agreement import (
    earlier_firsts,
    interval_alpha_from_units,
    participant_reliability_arrays,
    rater_unit_sums,
    retest_agreement,
)
from adaptive.model import INTERFACES, PairPosteriors
from datasets.models import Stimulus

from . import reports
from .adaptive_design import GRID, interface_model, prior_log_posterior
from .live import grid_lams
from .models import Judgment, Participant, Session, Study

# Curves drawn per page of the dashboard: more would make the page slow and unreadable.
CURVES_PER_PAGE = 12
TARGET_HALF_WIDTH = 0.05  # "+-0.05 on every pair's midpoint"
CREDIBLE_LEVEL = 0.9


@dataclass(frozen=True)
class Answers:
    """A study's judgments as the posterior and the agreement measures read them:
    parallel arrays (N,) in save order (judgment pk), no Python object per answer."""

    session: np.ndarray  # int64 session pk
    participant: np.ndarray  # int64 participant pk
    pair: np.ndarray  # int64 pair pk
    value: np.ndarray  # float64: stimulus lam (2AFC, Infer), start lam (Construct), nan (Select)
    answer: np.ndarray  # float64: 0/1 (2AFC) or a lam of the pair's first class
    is_repeat: np.ndarray  # bool
    public_ids: dict[int, str]  # participant pk -> public id, for the participants here

    def __len__(self) -> int:
        return len(self.answer)

    def where(self, keep: np.ndarray) -> Answers:
        """The answers where ``keep`` (N,) bool is true, in the same order."""
        return Answers(
            self.session[keep], self.participant[keep], self.pair[keep], self.value[keep],
            self.answer[keep], self.is_repeat[keep], self.public_ids,
        )  # fmt: skip

    @cached_property
    def participant_pks(self) -> np.ndarray:
        """The participants' pks (P,) in the order of their "participant" codes."""
        return pd.unique(self.participant)

    @cached_property
    def codes(self) -> dict[str, np.ndarray]:
        """Dense integer codes (N,) int64, 0..K-1 in order of first appearance:
        "unit" what was rated (the pair at the stimulus lam or start value; equal
        floats one unit, no value (nan) one unit per pair), "participant", "session",
        "participant_unit" and "session_unit" (a participant's or a session's unit)."""
        # pandas.factorize hashes: O(N), where sorting a million keys costs ~10x more.
        # Every nan of the query is the same float8 'NaN', so its bits are one value.
        values = pd.factorize(self.value.view(np.int64))[0]
        pairs = pd.factorize(self.pair)[0]
        units = _factorize(pairs * (int(values.max(initial=0)) + 1) + values)
        people = _factorize(self.participant)
        sessions = _factorize(self.session)
        n_units = int(units.max(initial=0)) + 1
        return {
            "unit": units,
            "participant": people,
            "session": sessions,
            "participant_unit": _factorize(people * n_units + units),
            "session_unit": _factorize(sessions * n_units + units),
        }


def _factorize(keys: np.ndarray) -> np.ndarray:
    """Dense codes (N,) int64 of integer keys, in order of first appearance."""
    return pd.factorize(keys)[0].astype(np.int64)


# The columns of ``answers``: name, its SQL type's binary send function, numpy type.
_COLUMNS = (
    ("pk", "int8send", ">i8"),
    ("session", "int8send", ">i8"),
    ("pair", "int8send", ">i8"),
    ("stimulus", "int8send", ">i8"),
    ("value", "float8send", ">f8"),
    ("answer", "float8send", ">f8"),
    ("is_repeat", "boolsend", "?"),
)
# One row as the query sends it: the columns' big-endian bytes back to back.
_ROW = np.dtype([(name, dtype) for name, _, dtype in _COLUMNS])


def _observation_columns(interface: str):
    """adaptive_design.observation in SQL: (candidate value, answer, the filter of
    answers it can read) as ORM expressions; nan stands for no value, and for the
    stimulus lam (2AFC, Infer), which ``answers`` looks up by stimulus: a join of every
    answer to its stimulus costs the database more than the lookup costs numpy."""
    from django.db.models import Case, F, FloatField, Q, Value, When
    from django.db.models.fields.json import KeyTextTransform
    from django.db.models.functions import Cast

    nan = Value(float("nan"), output_field=FloatField())
    if interface == "afc":
        # choice == 1 in Python: JSON 1 (or 1.0) and true.
        one = Q(response__choice=1) | Q(response__choice=True)
        answer = Case(When(one, then=Value(1.0)), default=Value(0.0), output_field=FloatField())
        return nan, answer, Q()
    readable = Q(lam__isnull=False)
    if interface == "infer":
        return nan, F("lam"), readable
    if interface == "construct":
        start = Cast(KeyTextTransform("start_lam", "response"), FloatField())
        return start, F("lam"), readable & Q(obs_value__isnull=False)
    return nan, F("lam"), readable


def answers(study: Study, include_excluded: bool = False, kind: str = "live") -> Answers:
    """The study's judgments the posterior can read (adaptive_design.observation), in
    save order, of one session kind (reports.of_kind): counted ones (reports.counted)
    for kind "live", the pilot's or the simulated sessions' alone for "pilot" or
    "simulated". ValueError for another kind.

    One query; on PostgreSQL its rows come back as one bytea, each row the binary form
    of its columns back to back (string_agg of int8send ...), read by numpy as it is:
    a million answers cost no Python step each."""
    from django.db import connections
    from django.db.models.functions import Coalesce

    value, answer, readable = _observation_columns(study.interface)
    judgments = reports.of_kind(Judgment.objects.filter(study=study), kind, include_excluded)
    rows = (
        judgments.annotate(obs_value=value, obs_answer=answer)
        .filter(readable)
        .order_by()  # save order is restored below: a sort here would cost the database
        .values_list(
            "pk", "session_id", "pair_id", Coalesce("stimulus_id", 0), "obs_value", "obs_answer",
            "is_repeat",
        )  # fmt: skip
    )
    connection = connections[rows.db]
    if connection.vendor == "postgresql":
        sql, params = rows.query.sql_with_params()
        names = ", ".join(f"c{i}" for i in range(len(_COLUMNS)))
        # No column is NULL (nan stands for no value), else its row would vanish from
        # string_agg: the count checks that.
        packed = " || ".join(f"{send}(c{i})" for i, (_, send, _) in enumerate(_COLUMNS))
        from psycopg import Cursor as ServerCursor  # Django's driver here: psycopg 3

        connection.ensure_connection()
        # A server-binding cursor of Django's connection (its own cursors bind on the
        # client, which reads results as text only): the bytes arrive as they are.
        with connection.wrap_database_errors, ServerCursor(connection.connection) as cursor:
            cursor.execute(
                f"SELECT count(*), string_agg({packed}, ''::bytea) FROM ({sql}) AS t({names})",
                params,
                binary=True,
            )
            count, data = cursor.fetchone()
        table = np.frombuffer(data or b"", _ROW)
        if len(table) != count:
            raise ValueError(f"read {len(table)} of {count} answers: a NULL column")
        columns = {name: table[name].astype(_ROW[name].newbyteorder("=")) for name in _ROW.names}
    else:  # SQLite (development): small studies, row by row
        listed = list(zip(*rows, strict=True)) or [()] * len(_COLUMNS)
        columns = {
            name: np.array(
                [np.nan if x is None else x for x in values], _ROW[name].newbyteorder("=")
            )
            for name, values in zip(_ROW.names, listed, strict=True)
        }
    pk = columns.pop("pk")
    if (pk[1:] < pk[:-1]).any():  # the table's order is usually save order already
        order = np.argsort(pk, kind="stable")
        columns = {name: column[order] for name, column in columns.items()}
    stimulus = columns.pop("stimulus")
    if study.interface in ("afc", "infer"):  # the stimulus lam; nan without a stimulus
        code, ids = pd.factorize(stimulus)
        lams = dict(Stimulus.objects.filter(pk__in=ids.tolist()).values_list("pk", "lam"))
        lam = np.array([lams.get(int(i)) for i in ids], dtype=float)  # None: nan
        columns["value"] = lam[code] if len(code) else columns["value"]
    # Each session's participant and public id: one small query (sessions, not answers).
    sessions = np.array(
        Session.objects.filter(study=study).order_by("pk").values_list("pk", "participant_id"),
        dtype=np.int64,
    ).reshape(-1, 2)
    at = np.searchsorted(sessions[:, 0], columns["session"])
    public_ids = Participant.objects.filter(sessions__study=study).values_list("pk", "public_id")
    return Answers(
        participant=sessions[at, 1] if len(at) else np.zeros(0, dtype=np.int64),
        **columns,
        public_ids={pk: str(public) for pk, public in public_ids},
    )


# --- Who to trust ---------------------------------------------------------------------------


def study_agreement(
    study: Study, include_excluded: bool = False, kind: str = "live", rows: Answers | None = None
) -> dict:
    """Agreement and reliability from the study's answers (``answers``; ``rows``: those
    when already read).

    Returns {"alpha": Krippendorff's alpha for interval data over participants and
    units (a pair at a stimulus lam or start value; a participant's repeats averaged),
    None where undefined, "raters", "units": how many rated a unit someone else rated
    too, "retest": adaptive.agreement.retest_agreement of each first answer and its
    repeat in the same session, "participants": [{participant (public id), n,
    n_repeats, error_sd, weight}] least reliable first (adaptive.agreement.
    participant_reliability_arrays: repeats and distance to the leave-one-out
    consensus)}. Vectorised over the arrays: no Python step per answer.
    """
    rows = answers(study, include_excluded, kind) if rows is None else rows
    codes = rows.codes
    first = ~rows.is_repeat
    # Each rater's mean per unit (their non-repeat answers), summed per unit.
    count, total, total_sq = rater_unit_sums(
        codes["participant_unit"][first], codes["unit"][first], rows.answer[first]
    )
    try:
        alpha = interval_alpha_from_units(count, total, total_sq)
    except ValueError:
        alpha = None
    if alpha is not None and not math.isfinite(alpha):
        alpha = None
    raters = np.bincount(codes["participant"][first]) > 0
    firsts, repeats = earlier_firsts(codes["session_unit"], rows.is_repeat)
    retest = np.stack([rows.answer[firsts], rows.answer[repeats]], axis=1)
    rel = participant_reliability_arrays(
        codes["participant"], codes["unit"], codes["participant_unit"], rows.answer,
        rows.is_repeat,
    )  # fmt: skip
    people = rows.participant_pks
    participants = sorted(
        (
            {
                "participant": rows.public_ids[int(people[p])],
                "n": int(n),
                "n_repeats": int(n_repeats),
                "error_sd": float(sd),
                "weight": float(w),
            }
            for p, n, n_repeats, sd, w in zip(
                rel["participant"], rel["n"], rel["n_repeats"], rel["error_sd"], rel["weight"],
                strict=True,
            )  # fmt: skip
        ),
        key=lambda r: (r["weight"], r["participant"]),
    )
    return {
        "alpha": alpha,
        "raters": int(raters.sum()),
        "units": int((count > 1).sum()),
        "retest": retest_agreement(retest),
        "participants": participants,
    }


# --- Curves -------------------------------------------------------------------------------


@dataclass
class StudyCurves:
    """The pair posteriors of a study's answers: rows in ``pair_ids`` order."""

    pair_ids: list[int]
    names: dict[int, str]  # pair id -> "class1 / class2"
    posteriors: PairPosteriors
    people: int  # sessions that answered


def curves(
    study: Study,
    include_excluded: bool = False,
    kind: str = "live",
    weighted: bool = False,
    rows: Answers | None = None,
    agreement: dict | None = None,
) -> StudyCurves:
    """Every pair's grid posterior from the study's answers (``answers``), under the
    study's noise levels and prior. ``weighted``: each participant's answers count
    with their reliability weight (``study_agreement``; a tempered likelihood, the
    log-likelihood times the weight; ``agreement``: that result when already computed
    for the same ``rows``). Vectorised: the answers are tallied per (pair,
    candidate, outcome) with one bincount and the tally multiplied into the likelihood
    table once."""
    from datasets.models import Pair

    if study.interface not in INTERFACES:  # no psychometric curve (Soft categorical label)
        return StudyCurves([], {}, PairPosteriors(0, GRID), 0)
    rows = answers(study, include_excluded, kind) if rows is None else rows
    pairs = Pair.objects.filter(conditionitem__condition__study=study).distinct()
    names = {p.pk: f"{p.class1} / {p.class2}" for p in pairs.order_by("pk")}
    pair_ids = sorted(names)
    model = interface_model(study, grid_lams(study))
    n_c, n_o, n_g = model.table.shape
    weight = np.ones(len(rows))
    if weighted:
        agreement = agreement or study_agreement(study, include_excluded, kind, rows)
        by_public = {r["participant"]: r["weight"] for r in agreement["participants"]}
        person_weight = np.array(
            [by_public.get(rows.public_ids[int(p)], 1.0) for p in rows.participant_pks]
        )
        weight = person_weight[rows.codes["participant"]]
    ids = np.asarray(pair_ids, dtype=np.int64)  # sorted: each answer's row by bisection
    pair = np.full(len(rows), -1)
    if len(ids):
        at = np.minimum(np.searchsorted(ids, rows.pair), len(ids) - 1)
        pair = np.where(ids[at] == rows.pair, at, -1)
    if study.interface == "select_shuffled":  # one candidate: the pair
        cand = np.zeros(len(rows), dtype=int)
    else:  # each distinct value looked up once, as a candidate rounded to 4 decimals
        lookup = {round(float(v), 4): i for i, v in enumerate(model.candidates)}
        value_code, values = pd.factorize(rows.value, use_na_sentinel=False)
        found = [-1 if math.isnan(v) else lookup.get(round(v, 4), -1) for v in values.tolist()]
        cand = np.array(found, dtype=int)[value_code]
    outcome = model.outcome_indices(rows.answer)
    keep = (pair >= 0) & (cand >= 0)  # a value the model has no candidate for: unread
    cell = (pair[keep] * n_c + cand[keep]) * n_o + outcome[keep]
    tally = np.bincount(cell, weight[keep], minlength=len(pair_ids) * n_c * n_o)
    tally = tally.reshape(len(pair_ids), n_c * n_o)
    counts = np.bincount(pair[keep], minlength=len(pair_ids))
    people = int((np.bincount(rows.codes["session"][keep]) > 0).sum())
    log_post = prior_log_posterior(study)[None, :] + tally @ model.log_table.reshape(-1, n_g)
    post = PairPosteriors(len(pair_ids), GRID)
    log_post -= log_post.max(axis=1, keepdims=True)
    probs = np.exp(log_post)
    post.log_post = log_post
    post.probs = probs / probs.sum(axis=1, keepdims=True)
    post.n_judgments = counts
    return StudyCurves(pair_ids, names, post, people)


def curve_rows(study_curves: StudyCurves, start: int, stop: int) -> list[dict]:
    """Pairs ``start``..``stop`` (in pair id order) for plots.pair_curves: each pair's
    name, judgments, posterior midpoint (mean, sd) and its curve's posterior mean with
    the 90% credible band on lam 0..1 step 0.05."""
    post = study_curves.posteriors
    out = []
    for i in range(start, min(stop, len(study_curves.pair_ids))):
        lams, mean, lower, upper = post.curve(i, level=CREDIBLE_LEVEL)
        m, sd = post.midpoint(i)
        out.append(
            {
                "pair": study_curves.names[study_curves.pair_ids[i]],
                "n": int(post.n_judgments[i]),
                "midpoint": m,
                "midpoint_sd": sd,
                "lams": lams.tolist(),
                "mean": mean.tolist(),
                "lower": lower.tolist(),
                "upper": upper.tolist(),
            }
        )
    return out


def estimate_from(study_curves: StudyCurves, target: float = TARGET_HALF_WIDTH) -> dict:
    """Participants needed until every pair's midpoint has a 90% credible half-width of
    at most ``target``, extrapolated from the current posterior: the posterior sd of m
    shrinks as 1/sqrt(judgments), and each participant keeps contributing to each pair
    what the current ones did on average, so pair i needs people * (half_width_i /
    target)^2 participants; the estimate is the largest over pairs (at least the
    people already there). None when there are no answers or a pair has none.

    Returns {"participants", "people", "widest": the largest half-width now, "pair":
    its name, "target"}."""
    post = study_curves.posteriors
    out = {"participants": None, "people": study_curves.people, "widest": None, "pair": None,
           "target": target}
    if not study_curves.pair_ids or study_curves.people == 0:
        return out
    _, sd = post.midpoints()
    half = norm.ppf(0.5 + CREDIBLE_LEVEL / 2) * sd
    worst = int(np.argmax(half))
    out["widest"] = float(half[worst])
    out["pair"] = study_curves.names[study_curves.pair_ids[worst]]
    if (post.n_judgments == 0).any():
        return out
    needed = study_curves.people * (half / target) ** 2
    out["participants"] = max(study_curves.people, int(math.ceil(float(needed.max()))))
    return out


def participants_estimate(
    study: Study, include_excluded: bool = False, live_curves: StudyCurves | None = None
) -> dict:
    """``estimate_from`` the live (counted) answers, or, where there are none yet, from
    the simulated sessions' answers (manage.py simulate_participants); "source" says
    which ("live participants" or "simulated participants"), "kind" whose answers they
    are ("live" or "simulated")."""
    live_curves = live_curves or curves(study, include_excluded)
    if live_curves.people:
        return {**estimate_from(live_curves), "source": "live participants", "kind": "live"}
    simulated = curves(study, kind=Session.Kind.SIMULATED)
    return {**estimate_from(simulated), "source": "simulated participants", "kind": "simulated"}


def simulated_counts(study: Study) -> dict:
    """The study's simulated sessions and their judgments: {"sessions", "complete",
    "judgments"}; never research data."""
    sessions = Session.objects.filter(study=study, kind=Session.Kind.SIMULATED)
    return {
        "sessions": sessions.count(),
        "complete": sessions.filter(state=Session.State.COMPLETE).count(),
        "judgments": Judgment.objects.filter(
            study=study, session__kind=Session.Kind.SIMULATED
        ).count(),
    }
