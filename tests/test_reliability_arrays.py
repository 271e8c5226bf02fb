"""The dashboard's curves and who-to-trust figures read as arrays (issue 21) equal the
definition they replaced, which read every answer into a Python object: that definition
is kept here as the reference, with the ``krippendorff`` package as alpha's. Compared to
1e-9 on the published H-Mix studies and on small synthetic studies built to reach every
branch: repeats saved before their first answer, several answers of one participant to a
unit, answers the posterior cannot read, excluded participants, pilot and simulated
sessions."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pytest
from django.core.management import call_command
from django.db import transaction
from django.test import override_settings

from adaptive.agreement import interval_alpha, participant_reliability, retest_agreement
from adaptive.model import INTERFACES
from elicitation import reliability, reports
from elicitation.adaptive_design import interface_model, observation, prior_log_posterior
from elicitation.live import grid_lams
from elicitation.models import Judgment, Session, Study
from tests.conftest import shared_data_dir

# --- The reference: the per-answer definition -------------------------------------------


@dataclass(frozen=True)
class Answer:
    session_id: int
    participant: str
    pair_id: int
    value: float | None
    answer: float
    is_repeat: bool

    @property
    def unit(self) -> str:
        return f"{self.pair_id}@{self.value}"


def reference_answers(study, include_excluded=False, kind="live") -> list[Answer]:
    judgments = reports.of_kind(Judgment.objects.filter(study=study), kind, include_excluded)
    rows = judgments.order_by("pk").values_list(
        "session_id", "session__participant__public_id", "pair_id", "stimulus__lam",
        "response__choice", "response__start_lam", "lam", "is_repeat",
    )  # fmt: skip
    out = []
    for session_id, public_id, pair_id, stimulus_lam, choice, start, lam, repeat in rows:
        response = {"choice": choice, "start_lam": start}
        obs = observation(study.interface, stimulus_lam, response, lam)
        if obs is None or (study.interface == "construct" and start is None):
            continue
        out.append(Answer(session_id, str(public_id), pair_id, obs[0], obs[1], repeat))
    return out


def reference_reliability(judgments, prior_strength=5.0) -> dict[str, dict]:
    by_unit: dict[str, list[tuple[str, float]]] = defaultdict(list)
    firsts: dict[tuple[str, str], float] = {}
    repeat_sq: dict[str, list[float]] = defaultdict(list)
    for person, unit, value, is_repeat in judgments:
        if is_repeat:
            if (person, unit) in firsts:
                repeat_sq[person].append((value - firsts[(person, unit)]) ** 2 / 2)
            continue
        firsts.setdefault((person, unit), value)
        by_unit[unit].append((person, float(value)))
    consensus_sq: dict[str, list[float]] = defaultdict(list)
    for answers in by_unit.values():
        if len(answers) < 3:
            continue
        values = np.array([v for _, v in answers])
        total, n = values.sum(), len(values)
        spread = values.var(ddof=1)
        for person, v in answers:
            loo = (total - v) / (n - 1)
            consensus_sq[person].append((v - loo) ** 2 - spread / (n - 1))
    people = set(consensus_sq) | set(repeat_sq)
    pooled = [x for p in people for x in consensus_sq[p] + repeat_sq[p]]
    pop_var = max(float(np.mean(pooled)), 1e-4) if pooled else 1e-2
    out = {}
    for p in sorted(people):
        xs = consensus_sq[p] + repeat_sq[p]
        var = max((sum(xs) + prior_strength * pop_var) / (len(xs) + prior_strength), 1e-4)
        out[p] = {
            "n": len(consensus_sq[p]),
            "n_repeats": len(repeat_sq[p]),
            "error_sd": float(np.sqrt(var)),
            "weight": float(np.clip(pop_var / var, 0.25, 4.0)),
        }
    return out


def reference_agreement(rows: list[Answer]) -> dict:
    ratings = [(a.participant, a.unit, a.answer) for a in rows if not a.is_repeat]
    try:
        alpha = interval_alpha(ratings)  # the krippendorff package
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
    rel = reference_reliability([(a.participant, a.unit, a.answer, a.is_repeat) for a in rows])
    return {
        "alpha": alpha,
        "raters": len({p for p, _, _ in ratings}),
        "units": sum(len(people) > 1 for people in raters_per_unit.values()),
        "retest": retest_agreement(retest),
        "participants": rel,
    }


def reference_curves(study, rows: list[Answer], weights: dict[str, float]):
    """(log posterior (P, G), judgments per pair, people) as the per-answer code tallied."""
    from datasets.models import Pair

    pairs = Pair.objects.filter(conditionitem__condition__study=study).distinct()
    pair_ids = sorted(p.pk for p in pairs)
    index = {p: i for i, p in enumerate(pair_ids)}
    model = interface_model(study, grid_lams(study))
    n_c, n_o, n_g = model.table.shape
    tally = np.zeros((len(pair_ids), n_c * n_o))
    pair = np.array([index.get(a.pair_id, -1) for a in rows], dtype=int)
    if study.interface == "select_shuffled":
        cand = np.zeros(len(rows), dtype=int)
    else:
        lookup = {round(float(v), 4): i for i, v in enumerate(model.candidates)}
        cand = np.array(
            [-1 if a.value is None else lookup.get(round(a.value, 4), -1) for a in rows],
            dtype=int,
        )
    outcome = model.outcome_indices(np.array([a.answer for a in rows], dtype=float))
    weight = np.array([weights.get(a.participant, 1.0) for a in rows], dtype=float)
    keep = (pair >= 0) & (cand >= 0)
    np.add.at(tally, (pair[keep], cand[keep] * n_o + outcome[keep]), weight[keep])
    people = {a.session_id for a, k in zip(rows, keep, strict=True) if k}
    log_post = prior_log_posterior(study)[None, :] + tally @ model.log_table.reshape(-1, n_g)
    log_post -= log_post.max(axis=1, keepdims=True)
    return pair_ids, log_post, np.bincount(pair[keep], minlength=len(pair_ids)), len(people)


# --- The comparison ------------------------------------------------------------------------


def assert_same_figures(study, include_excluded: bool, kind: str) -> dict:
    """The arrays' figures equal the reference's; returns the reference agreement."""
    expected = reference_agreement(reference_answers(study, include_excluded, kind))
    rows = reliability.answers(study, include_excluded, kind)
    got = reliability.study_agreement(study, include_excluded, kind, rows=rows)
    if expected["alpha"] is None:
        assert got["alpha"] is None
    else:
        assert got["alpha"] == pytest.approx(expected["alpha"], abs=1e-9)
    assert (got["raters"], got["units"]) == (expected["raters"], expected["units"])
    assert got["retest"]["n"] == expected["retest"]["n"]
    for key in ("r", "mean_abs_diff"):
        if expected["retest"][key] is None:
            assert got["retest"][key] is None
        else:
            assert got["retest"][key] == pytest.approx(expected["retest"][key], abs=1e-9)
    by_person = {r["participant"]: r for r in got["participants"]}
    assert set(by_person) == set(expected["participants"])
    for person, want in expected["participants"].items():
        have = by_person[person]
        assert (have["n"], have["n_repeats"]) == (want["n"], want["n_repeats"])
        assert have["error_sd"] == pytest.approx(want["error_sd"], rel=1e-9, abs=1e-12)
        assert have["weight"] == pytest.approx(want["weight"], rel=1e-9, abs=1e-12)
    weights = [r["weight"] for r in got["participants"]]
    assert weights == sorted(weights)  # least reliable first
    if study.interface in INTERFACES:
        for weighted in (False, True):
            curves = reliability.curves(
                study, include_excluded, kind, weighted=weighted, rows=rows, agreement=got
            )
            wanted = {p: r["weight"] for p, r in expected["participants"].items()}
            pair_ids, log_post, counts, people = reference_curves(
                study, reference_answers(study, include_excluded, kind),
                wanted if weighted else {},
            )  # fmt: skip
            assert curves.pair_ids == pair_ids and curves.people == people
            assert curves.posteriors.n_judgments.tolist() == counts.tolist()
            assert curves.posteriors.log_post == pytest.approx(log_post, abs=1e-9)
    return expected


# --- H-Mix ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hmix(django_db_setup, django_db_blocker, tmp_path_factory):
    """The H-Mix studies, imported once for the module in a transaction rolled back at
    its end (this module has no transactional test to run inside it)."""
    from elicitation.services import import_hmix

    folder = shared_data_dir() / "hmix"
    if not folder.is_dir():
        pytest.skip(f"shared H-Mix data not found at {folder} (set HILLMIX_SHARED_DATA)")
    with (
        django_db_blocker.unblock(),
        override_settings(MEDIA_ROOT=tmp_path_factory.mktemp("hmix-media")),
    ):
        with transaction.atomic():
            yield import_hmix(folder)
            transaction.set_rollback(True)


@pytest.mark.shared_data
@pytest.mark.parametrize("interface", ["infer", "construct", "select_shuffled", "soft_label"])
def test_hmix_figures_equal_the_per_answer_definition(hmix, db, interface):
    from elicitation.services import hmix_study_slug

    study = Study.objects.get(slug=hmix_study_slug(interface))
    expected = assert_same_figures(study, False, "live")
    if interface in ("infer", "construct"):
        assert expected["alpha"] is not None and expected["raters"] > 2
    if interface == "infer":
        assert expected["retest"]["n"] > 0  # H-Mix's repeated trials
    # A few participants excluded: left out, and back with include_excluded.
    sessions = list(Session.objects.filter(study=study).order_by("pk")[:5])
    Session.objects.filter(pk__in=[s.pk for s in sessions]).update(excluded=True)
    assert_same_figures(study, False, "live")
    assert_same_figures(study, True, "live")


# --- Synthetic studies ----------------------------------------------------------------------


def scramble(study, rng: np.random.Generator) -> None:
    """Simulated answers turned into every case the figures must read alike: sessions
    live, pilot or simulated, some excluded; repeats anywhere (some before their first
    answer); several answers of a session to one unit; lams missing or off every
    candidate; 2AFC stimuli missing and choices either way; Construct starts missing."""
    kinds = [Session.Kind.LIVE, Session.Kind.LIVE, Session.Kind.PILOT, Session.Kind.SIMULATED]
    for session in Session.objects.filter(study=study):
        session.kind = kinds[int(rng.integers(len(kinds)))]
        session.excluded = bool(rng.random() < 0.25)
        session.save(update_fields=["kind", "excluded"])
    judgments = list(Judgment.objects.filter(study=study).select_related("stimulus"))
    stimuli = defaultdict(list)
    for j in judgments:
        if j.stimulus is not None:
            stimuli[j.pair_id].append(j.stimulus)
    for j in judgments:
        j.is_repeat = bool(rng.random() < 0.3)
        if stimuli[j.pair_id] and rng.random() < 0.3:  # the same unit again
            j.stimulus = stimuli[j.pair_id][int(rng.integers(len(stimuli[j.pair_id])))]
        draw = rng.random()
        if study.interface == "afc":
            j.response = {**j.response, "choice": int(rng.integers(1, 3))}
            if draw < 0.1:
                j.stimulus = None
        elif draw < 0.1:
            j.lam = None
        elif draw < 0.2:
            j.lam = 0.123456  # no candidate's bin edge, a value of its own
        else:
            j.lam = float(np.round(rng.random(), 2))
        if study.interface == "construct" and rng.random() < 0.1:
            j.response = {k: v for k, v in j.response.items() if k != "start_lam"}
    Judgment.objects.bulk_update(judgments, ["is_repeat", "stimulus", "response", "lam"])


@pytest.mark.parametrize(
    ("interface", "fields"),
    [
        ("infer", {}),
        ("construct", {}),
        ("select_shuffled", {}),
        ("afc", {"design": "adaptive", "conditions": 1, "adaptive_budget": 8}),
    ],
)
def test_synthetic_figures_equal_the_per_answer_definition(make_study, interface, fields):
    study = make_study(interface, n_pairs=3, ask_confidence=interface == "afc", **fields)
    call_command("simulate_participants", study=study.slug, n=8, seed=11)
    scramble(study, np.random.default_rng(4))
    for kind in reports.FIGURE_KINDS:
        for include_excluded in (False, True):
            assert_same_figures(study, include_excluded, kind)


def test_no_answers(make_study):
    study = make_study("infer", n_pairs=2)
    rows = reliability.answers(study)
    assert len(rows) == 0
    got = reliability.study_agreement(study, rows=rows)
    assert got == {
        "alpha": None, "raters": 0, "units": 0,
        "retest": {"n": 0, "r": None, "mean_abs_diff": None}, "participants": [],
    }  # fmt: skip
    curves = reliability.curves(study, rows=rows, weighted=True, agreement=got)
    assert curves.people == 0 and curves.posteriors.n_judgments.tolist() == [0, 0]


def test_reliability_lists_equal_the_per_answer_definition():
    """adaptive.agreement.participant_reliability (arrays behind a list API) on random
    answers with repeats anywhere, units rated once, twice and often."""
    rng = np.random.default_rng(2)
    for _ in range(30):
        n = int(rng.integers(1, 120))
        judgments = [
            (f"p{rng.integers(6)}", f"u{rng.integers(1, 12)}", float(rng.random()),
             bool(rng.random() < 0.3))
            for _ in range(n)
        ]  # fmt: skip
        got, want = participant_reliability(judgments), reference_reliability(judgments)
        assert set(got) == set(want)
        for person, w in want.items():
            assert (got[person]["n"], got[person]["n_repeats"]) == (w["n"], w["n_repeats"])
            assert got[person]["error_sd"] == pytest.approx(w["error_sd"], rel=1e-9)
            assert got[person]["weight"] == pytest.approx(w["weight"], rel=1e-9)


def test_alpha_from_unit_sums_equals_the_krippendorff_package():
    """The closed form over per-unit count, sum and sum of squares, on random data with
    missing values and repeated ratings averaged, against the package."""
    from adaptive.agreement import interval_alpha_from_units, rater_unit_sums

    rng = np.random.default_rng(8)
    checked = 0
    for _ in range(40):
        ratings = [
            (f"r{rng.integers(5)}", f"u{rng.integers(8)}", float(rng.normal(0.5, 0.3)))
            for _ in range(int(rng.integers(2, 60)))
        ]
        try:
            expected = interval_alpha(ratings)
        except ValueError:
            continue
        cells: dict = {}
        units: dict = {}
        cell = [cells.setdefault((r, u), len(cells)) for r, u, _ in ratings]
        unit = [units.setdefault(u, len(units)) for _, u, _ in ratings]
        sums = rater_unit_sums(np.array(cell), np.array(unit), np.array([v for *_, v in ratings]))
        assert interval_alpha_from_units(*sums) == pytest.approx(expected, abs=1e-9)
        checked += 1
    assert checked > 20
    with pytest.raises(ValueError):
        interval_alpha_from_units(np.array([1, 1]), np.array([0.2, 0.3]), np.array([0.04, 0.09]))
