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
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from adaptive.agreement import interval_alpha_arrays, participant_reliability, retest_agreement
from adaptive.model import INTERFACES, PairPosteriors

from . import reports
from .adaptive_design import GRID, interface_model, observation, prior_log_posterior
from .live import grid_lams
from .models import Judgment, Session, Study

# Curves drawn per page of the dashboard: more would make the page slow and unreadable.
CURVES_PER_PAGE = 12
TARGET_HALF_WIDTH = 0.05  # "+-0.05 on every pair's midpoint"
CREDIBLE_LEVEL = 0.9


@dataclass(frozen=True)
class Answer:
    """One stored judgment as the posterior and the agreement measures read it."""

    session_id: int
    participant: str  # public id
    pair_id: int
    value: float | None  # stimulus lam (2AFC, Infer), start lam (Construct), None (Select)
    answer: float  # 0/1 (2AFC) or a lam of the pair's first class
    is_repeat: bool

    @property
    def unit(self) -> str:
        """What was rated: the pair at the stimulus lam or start value."""
        return f"{self.pair_id}@{self.value}"


def answers(study: Study, include_excluded: bool = False, kind: str = "live") -> list[Answer]:
    """The study's judgments the posterior can read, in save order, of one session kind
    (reports.of_kind): counted ones (reports.counted) for kind "live", the pilot's or the
    simulated sessions' alone for "pilot" or "simulated". ValueError for another kind."""
    judgments = reports.of_kind(Judgment.objects.filter(study=study), kind, include_excluded)
    rows = judgments.order_by("pk").values_list(
        "session_id",
        "session__participant__public_id",
        "pair_id",
        "stimulus__lam",
        "response__choice",
        "response__start_lam",
        "lam",
        "is_repeat",
    )
    out = []
    for session_id, public_id, pair_id, stimulus_lam, choice, start, lam, repeat in rows:
        response = {"choice": choice, "start_lam": start}
        obs = observation(study.interface, stimulus_lam, response, lam)
        if obs is None or (study.interface == "construct" and start is None):
            continue
        out.append(Answer(session_id, str(public_id), pair_id, obs[0], obs[1], repeat))
    return out


# --- Who to trust ---------------------------------------------------------------------------


def study_agreement(
    study: Study, include_excluded: bool = False, kind: str = "live", rows: list | None = None
) -> dict:
    """Agreement and reliability from the study's answers (``answers``).

    Returns {"alpha": Krippendorff's alpha for interval data over participants and
    units (a pair at a stimulus lam or start value; a participant's repeats averaged),
    None where undefined, "raters", "units": how many rated a unit someone else rated
    too, "retest": adaptive.agreement.retest_agreement of each first answer and its
    repeat in the same session, "participants": [{participant (public id), n,
    n_repeats, error_sd, weight}] least reliable first (adaptive.agreement.
    participant_reliability: repeats and distance to the leave-one-out consensus)}.
    """
    rows = answers(study, include_excluded, kind) if rows is None else rows
    ratings = [(a.participant, a.unit, a.answer) for a in rows if not a.is_repeat]
    try:
        codes: tuple[dict, dict] = ({}, {})
        alpha = interval_alpha_arrays(
            [codes[0].setdefault(p, len(codes[0])) for p, _, _ in ratings],
            [codes[1].setdefault(u, len(codes[1])) for _, u, _ in ratings],
            [v for _, _, v in ratings],
        )
    except ValueError:
        alpha = None
    if alpha is not None and not math.isfinite(alpha):
        alpha = None
    firsts: dict[tuple[int, str], float] = {}
    retest = []
    for a in rows:
        key = (a.session_id, a.unit)
        if not a.is_repeat:
            firsts.setdefault(key, a.answer)
        elif key in firsts:
            retest.append((firsts[key], a.answer))
    raters_per_unit: dict[str, set] = defaultdict(set)
    for person, unit, _ in ratings:
        raters_per_unit[unit].add(person)
    shared = {u for u, people in raters_per_unit.items() if len(people) > 1}
    reliability = participant_reliability(
        [(a.participant, a.unit, a.answer, a.is_repeat) for a in rows]
    )
    participants = sorted(
        ({"participant": p, **r} for p, r in reliability.items()),
        key=lambda r: (r["weight"], r["participant"]),
    )
    return {
        "alpha": alpha,
        "raters": len({p for p, _, _ in ratings}),
        "units": len(shared),
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
    rows: list | None = None,
    agreement: dict | None = None,
) -> StudyCurves:
    """Every pair's grid posterior from the study's answers (``answers``), under the
    study's noise levels and prior. ``weighted``: each participant's answers count
    with their reliability weight (``study_agreement``; a tempered likelihood, the
    log-likelihood times the weight; ``agreement``: that result when already computed
    for the same ``rows``). Vectorised: the answers are tallied per (pair,
    candidate, outcome) and the tally multiplied into the likelihood table once."""
    from datasets.models import Pair

    if study.interface not in INTERFACES:  # no psychometric curve (Soft categorical label)
        return StudyCurves([], {}, PairPosteriors(0, GRID), 0)
    rows = answers(study, include_excluded, kind) if rows is None else rows
    pairs = Pair.objects.filter(conditionitem__condition__study=study).distinct()
    names = {p.pk: f"{p.class1} / {p.class2}" for p in pairs.order_by("pk")}
    pair_ids = sorted(names)
    index = {p: i for i, p in enumerate(pair_ids)}
    model = interface_model(study, grid_lams(study))
    n_c, n_o, n_g = model.table.shape
    weights = {}
    if weighted:
        agreement = agreement or study_agreement(study, include_excluded, kind, rows)
        weights = {r["participant"]: r["weight"] for r in agreement["participants"]}
    tally = np.zeros((len(pair_ids), n_c * n_o))
    pair = np.array([index.get(a.pair_id, -1) for a in rows], dtype=int)
    if study.interface == "select_shuffled":  # one candidate: the pair
        cand = np.zeros(len(rows), dtype=int)
    else:
        lookup = {round(float(v), 4): i for i, v in enumerate(model.candidates)}
        cand = np.array(
            [-1 if a.value is None else lookup.get(round(a.value, 4), -1) for a in rows],
            dtype=int,
        )
    outcome = model.outcome_indices(np.array([a.answer for a in rows], dtype=float))
    weight = np.array([weights.get(a.participant, 1.0) for a in rows], dtype=float)
    keep = (pair >= 0) & (cand >= 0)  # a value the model has no candidate for: unread
    np.add.at(tally, (pair[keep], cand[keep] * n_o + outcome[keep]), weight[keep])
    counts = np.bincount(pair[keep], minlength=len(pair_ids))
    people = {a.session_id for a, k in zip(rows, keep, strict=True) if k}
    log_post = prior_log_posterior(study)[None, :] + tally @ model.log_table.reshape(-1, n_g)
    post = PairPosteriors(len(pair_ids), GRID)
    log_post -= log_post.max(axis=1, keepdims=True)
    probs = np.exp(log_post)
    post.log_post = log_post
    post.probs = probs / probs.sum(axis=1, keepdims=True)
    post.n_judgments = counts
    return StudyCurves(pair_ids, names, post, len(people))


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
