"""Simulated participants (issue 18): people drawn from adaptive.simulate's generative
model, fitted to H-Mix, taken through a study by the same services a browser uses.

Each simulated person starts a session (the consent), answers the quiz correctly (or
finishes the instructions), is served every trial as the trial page is
(services.serve_next_trial, selectors.next_trial), answers it in the interface's own
answer schema through services.record_judgment, and sends empty feedback. Their
sessions are of kind simulated: reports.counted keeps them out of exports, aggregates,
progress and payments. In an adaptive study they add to and choose from the simulated
pool of posteriors (adaptive_design.pool_of), never the live one real participants'
trials are chosen from: simulating in a live study leaves its live data as it was.

The truth they answer from: each class pair's curve share(lam) = sigmoid(k (lam - m))
is H-Mix's (the posterior mean from all H-Mix judgments of that pair,
adaptive.simulate.Population.fit) where the pair is one of H-Mix's CIFAR-10 pairs;
other pairs draw m from the study's prior on m (sd halved) and take H-Mix's median
slope. Noise levels: the study's stored ones (adaptive studies), else H-Mix's fitted
ones, else adaptive.model.DEFAULT_NOISE.
"""

from __future__ import annotations

import functools
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction

from adaptive.model import DEFAULT_NOISE
from adaptive.simulate import Population, SimulatedParticipant

from ..adaptive_design import hmix_noise, study_noise
from ..live import live_session
from ..models import Session, Study
from ..selectors import next_trial
from .adaptive import serve_next_trial
from .judgments import record_judgment
from .sessions import (
    FlowError,
    RecruiterIds,
    finish_instructions,
    start_session,
    submit_feedback,
    submit_quiz,
)

SIMULATED_INTERFACES = ("afc", "infer", "construct", "select_shuffled")
# Response times drawn log-normally around this many ms (H-Mix's medians are 2-5 s).
MEDIAN_RT_MS = 3000.0


@functools.lru_cache(maxsize=1)
def hmix_population() -> Population | None:
    """H-Mix's per-pair curves (canonical pairs: class names sorted), fitted once per
    process (a few seconds); None without the H-Mix data."""
    from adaptive.hmix_fit import load_hmix

    noise = hmix_noise()
    if noise is None:
        return None
    try:
        observations = load_hmix(Path(settings.SHARED_DATA_DIR) / "hmix")
    except (FileNotFoundError, ValueError):
        return None
    return Population.fit(observations, noise)


@dataclass
class StudyPopulation:
    """The truth simulated people answer a study from: ``population`` over the study's
    pairs in canonical orientation (class names sorted); ``index`` maps a pair id to its
    row and whether the study's pair is the other way round (lam mirrored)."""

    population: Population
    index: dict[int, tuple[int, bool]]
    from_hmix: int  # pairs whose curve is H-Mix's


def study_population(study: Study, rng: np.random.Generator) -> StudyPopulation:
    """Curves and noise for the study's pairs (module docstring); pairs that are not
    H-Mix's draw their midpoint with ``rng``."""
    from datasets.models import Pair

    noise = study_noise(study) if study.adaptive_noise else (hmix_noise() or DEFAULT_NOISE)
    noise = {k: (dict(v) if isinstance(v, dict) else v) for k, v in noise.items()}
    for key, value in DEFAULT_NOISE.items():
        noise.setdefault(key, value)
    hmix = hmix_population()
    known = {}  # H-Mix's pairs by lower-case names (a dataset may spell them otherwise)
    for i, (a, b) in enumerate(hmix.pairs if hmix is not None else []):
        known[(a.lower(), b.lower())] = i
    slope = float(np.median(hmix.k)) if hmix is not None else 10.0
    prior = noise["prior"]
    pairs = Pair.objects.filter(conditionitem__condition__study=study).distinct().order_by("pk")
    names, ms, ks, index, from_hmix = [], [], [], {}, 0
    for pair in pairs:
        first, second = pair.class1.lower(), pair.class2.lower()
        flip = first > second
        canonical = (second, first) if flip else (first, second)
        if canonical in known:
            m, k = hmix.m[known[canonical]], hmix.k[known[canonical]]
            from_hmix += 1
        else:
            m = float(np.clip(rng.normal(prior["m_mean"], prior["m_sd"] / 2), 0.15, 0.85))
            k = slope
        index[pair.pk] = (len(names), flip)
        names.append(canonical)
        ms.append(m)
        ks.append(k)
    population = Population(names, np.array(ms, float), np.array(ks, float), noise)
    if getattr(hmix, "person_sd", None) is not None:  # H-Mix's spread per interface
        population.person_sd = hmix.person_sd
    return StudyPopulation(population, index, from_hmix)


def _nearest(values: list[float], target: float) -> int:
    return int(np.argmin([abs(v - target) for v in values]))


def _confidence(person: SimulatedParticipant, share: float) -> int:
    """A confidence 0..100 from the fitted confidence model (higher far from 50/50)."""
    c = person.population.noise.get("confidence", {"intercept": 0.6, "slope": 0.3, "sd": 0.2})
    value = c["intercept"] + c["slope"] * abs(share - 0.5) * 2 + person.rng.normal(0, c["sd"])
    return int(round(100 * float(np.clip(value, 0.0, 1.0))))


def simulated_answer(
    person: SimulatedParticipant, truth: StudyPopulation, study: Study, live, trial: dict
) -> tuple[dict, int | None]:
    """The person's answer to the served ``trial`` in the interface's answer schema
    (what its page sends as ``response``), and the separate confidence 0..100 where the
    study asks for one. The lams come from the session's trial order and the study's
    catalog, as the server knows them (the page itself never sees them). ValueError for
    an interface simulated people cannot answer."""
    session, catalog = live.session, live.catalog
    spec = session.trial_order[session.position]
    item = catalog.item(session.condition_id, spec["item"])
    row, flip = truth.index[item.pair_id]

    def canonical(lam: float) -> float:
        return 1.0 - lam if flip else lam

    interface, grid = study.interface, catalog.grid
    if interface == "afc":
        first_dominant = person.afc(row, canonical(item.stimulus_lam))
        choice = 1 if bool(first_dominant) != flip else 2
        response = {"choice": choice, "swapped": bool(trial.get("swapped", False))}
        share = canonical(item.stimulus_lam)
    elif interface == "infer":
        perceived, conf = person.infer(row, canonical(item.stimulus_lam))
        perceived = canonical(perceived)  # back to the share of the study's first class
        response = {
            "slider": int(round(100 * (1.0 - perceived))),
            "confidence": int(round(100 * conf)),
            "slider_touched": True,
            "confidence_touched": True,
            "slider_start": trial["slider_start"],
        }
        share = perceived
    elif interface == "construct":
        start = trial["start_step"]
        final = _nearest(grid, canonical(person.construct(row, canonical(spec["start_lam"]))))
        step = 1 if final >= start else -1
        response = {
            "start_step": start,
            "final_step": final,
            "steps": list(range(start, final + step, step)),
        }
        share = grid[final]
    elif interface == "select_shuffled":
        chosen = canonical(person.select_shuffled(row))
        ids = [image["choice"] for image in trial["images"]]
        response = {"choice": ids[_nearest(spec["order"], chosen)], "order_shown": ids}
        share = chosen
    else:
        raise ValueError(
            f"simulated participants answer {', '.join(SIMULATED_INTERFACES)}, not {interface}"
        )
    from .. import interfaces

    asks = study.ask_confidence and not interfaces.get(interface).own_confidence
    return response, (_confidence(person, share) if asks else None)


@dataclass
class SimulationResult:
    sessions: list[int]
    judgments: int
    from_hmix: int  # pairs answered from H-Mix's curves


def _begin(study: Study) -> Session:
    """The consent: a new session, made simulated in the same transaction (never seen
    as a live one), then the quiz answered correctly or the instructions finished."""
    with transaction.atomic():
        session = start_session(study, RecruiterIds(), quiz_answers=None)
        Session.objects.filter(pk=session.pk).update(kind=Session.Kind.SIMULATED)
        session.kind = Session.Kind.SIMULATED
    if study.quiz:
        if not submit_quiz(session, [q["answer"] for q in study.quiz]):
            raise FlowError("the simulated participant failed the quiz", status=409)
    else:
        finish_instructions(session)
    return session


def run_participant(
    study: Study, truth: StudyPopulation, person: SimulatedParticipant
) -> tuple[Session, int]:
    """One simulated person through the whole study; (their session, answers saved)."""
    session = _begin(study)
    token = session.token
    saved = 0
    while True:
        live = live_session(token, study.slug)
        if live is None:
            raise FlowError("the simulated session was lost", status=409)
        serve_next_trial(live)  # adaptive studies choose each trial as it is served
        trial = next_trial(live)
        if trial is None:
            break
        response, confidence = simulated_answer(person, truth, study, live, trial)
        rt = float(MEDIAN_RT_MS * np.exp(person.rng.normal(0.0, 0.4)))
        payload = {
            "session": live.session.reference,
            "trial_index": live.session.position,
            "idempotency_key": str(uuid.uuid4()),
            "rt_ms": round(rt, 1),
            "response": response,
        }
        if confidence is not None:
            payload["confidence"] = confidence
        record_judgment(token, payload, study.slug)
        saved += 1
    session.refresh_from_db()
    if session.state == Session.State.FEEDBACK:
        submit_feedback(session, {q: "" for q in study.feedback_questions})
    return session, saved


def simulate_participants(study: Study, n: int, seed: int | None = None) -> SimulationResult:
    """Run ``n`` simulated people through ``study`` (module docstring). Seeded: the same
    seed draws the same people and answers (an adaptive study's choices depend on what
    is stored already: in an adaptive study, the simulated pool's posteriors). Raises
    ValueError for an interface they cannot answer, FlowError when the study refuses a
    session (closed, full, no conditions)."""
    if study.interface not in SIMULATED_INTERFACES:
        raise ValueError(
            f"simulated participants answer {', '.join(SIMULATED_INTERFACES)}, "
            f"not {study.interface}"
        )
    rng = np.random.default_rng(seed if seed is not None else random.SystemRandom().getrandbits(63))
    truth = study_population(study, rng)
    sessions, judgments = [], 0
    for _ in range(n):
        person = truth.population.participant(np.random.default_rng(rng.integers(2**63)))
        session, saved = run_participant(study, truth, person)
        sessions.append(session.pk)
        judgments += saved
    return SimulationResult(sessions, judgments, truth.from_hmix)
