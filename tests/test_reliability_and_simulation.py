"""Who to trust and simulated participants (issue 18): agreement and reliability on hand
cases through the dashboard's selector, simulate_participants through the services a
browser uses and kept out of real data, and the dashboard's curves, agreement,
reliability and participants estimate."""

from __future__ import annotations

import uuid

import krippendorff
import numpy as np
import pytest
from django.core.management import call_command
from django.urls import reverse

from elicitation import reliability, reports
from elicitation.models import Judgment, Session
from elicitation.services import RecruiterIds, record_judgment, start_session
from tests.test_flow import to_trials


def _answer_infer(session, perceived_of):
    """Answer every trial of an Infer session with perceived_of(stimulus lam) (0..1)."""
    from elicitation.live import catalog_of

    catalog = catalog_of(session.study)
    while True:
        session.refresh_from_db()
        if session.position >= session.trial_count:
            return session
        spec = session.trial_order[session.position]
        lam = catalog.item(session.condition_id, spec["item"]).stimulus_lam
        record_judgment(
            session.token,
            {
                "session": session.reference,
                "trial_index": session.position,
                "idempotency_key": str(uuid.uuid4()),
                "rt_ms": 1500,
                "response": {
                    "slider": int(round(100 * (1 - perceived_of(lam, spec)))),
                    "confidence": 60,
                    "slider_touched": True,
                    "confidence_touched": True,
                    "slider_start": spec.get("slider_start", 50),
                },
            },
        )


def test_alpha_retest_and_reliability_on_hand_cases(make_study):
    study = make_study("infer", n_pairs=2, repeat_trials=1, conditions=1, feedback_questions=[])
    people = {
        "exact-1": lambda lam, spec: lam,
        "exact-2": lambda lam, spec: lam,
        "exact-3": lambda lam, spec: lam,
        # Answers the mirror image, and differently on the repeat.
        "contrary": lambda lam, spec: (1 - lam) if not spec.get("repeat") else 0.5,
    }
    sessions = {
        name: _answer_infer(to_trials(start_session(study, RecruiterIds(name))), f)
        for name, f in people.items()
    }
    result = reliability.study_agreement(study)
    # Krippendorff's alpha computed directly: raters x units of perceived lam.
    units = sorted({(j.pair_id, j.stimulus.lam) for j in Judgment.objects.filter(study=study)})
    data = np.full((len(people), len(units)), np.nan)
    for r, name in enumerate(people):
        for j in Judgment.objects.filter(session=sessions[name], is_repeat=False):
            data[r, units.index((j.pair_id, j.stimulus.lam))] = j.lam
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement="interval")
    assert result["alpha"] == pytest.approx(expected, abs=1e-9)
    assert result["raters"] == 4 and result["units"] == len(units)
    # One repeat per person: three answered it exactly, one 0.5 against 1 - lam.
    assert result["retest"]["n"] == 4
    repeat = Judgment.objects.get(session=sessions["contrary"], is_repeat=True)
    first = Judgment.objects.get(
        session=sessions["contrary"], is_repeat=False, stimulus=repeat.stimulus
    )
    assert result["retest"]["mean_abs_diff"] == pytest.approx(abs(first.lam - 0.5) / 4)
    by_person = {r["participant"]: r for r in result["participants"]}
    contrary = sessions["contrary"].participant.public_id
    assert result["participants"][0]["participant"] == contrary  # least reliable first
    exact_1 = sessions["exact-1"].participant.public_id
    assert by_person[contrary]["weight"] < 1 < by_person[exact_1]["weight"]
    assert by_person[contrary]["n_repeats"] == 1
    # Weighting by reliability pulls the curves towards the reliable people.
    plain = reliability.curves(study).posteriors.midpoints()[0]
    weighted = reliability.curves(study, weighted=True).posteriors.midpoints()[0]
    rows = reliability.answers(study)
    others = np.array([rows.public_ids[int(p)] != contrary for p in rows.participant])
    exact = reliability.curves(study, rows=rows.where(others)).posteriors.midpoints()[0]
    assert np.all(np.abs(weighted - exact) <= np.abs(plain - exact) + 1e-9)
    assert np.any(np.abs(weighted - exact) < np.abs(plain - exact))


def test_curves_equal_a_direct_grid_posterior(make_study):
    from adaptive.model import build_model
    from elicitation.adaptive_design import GRID, study_noise

    study = make_study("infer", n_pairs=1, repeat_trials=0, conditions=1, feedback_questions=[])
    _answer_infer(to_trials(start_session(study, RecruiterIds("a"))), lambda lam, spec: lam)
    noise = study_noise(study)
    model = build_model("infer", GRID, noise, sorted(set(study.stimulus_set.lams)))
    log_post = np.log(GRID.prior(noise["prior"]["m_mean"], noise["prior"]["m_sd"]))
    for j in Judgment.objects.filter(study=study):
        log_post = log_post + model.loglik(j.stimulus.lam, j.lam)
    probs = np.exp(log_post - log_post.max())
    probs /= probs.sum()
    got = reliability.curves(study).posteriors
    assert got.probs[0] == pytest.approx(probs, abs=1e-12)
    lams, mean, lower, upper = got.curve(0)
    assert np.all(lower <= mean + 1e-12) and np.all(mean <= upper + 1e-12)


@pytest.mark.parametrize(
    ("interface", "fields"),
    [
        ("infer", {}),
        ("construct", {}),
        ("select_shuffled", {}),
        ("afc", {"design": "adaptive", "conditions": 1, "adaptive_budget": 6}),
    ],
)
def test_simulate_participants_stay_out_of_real_data(make_study, staff, interface, fields):
    study = make_study(interface, n_pairs=2, ask_confidence=interface == "afc", **fields)
    call_command("simulate_participants", study=study.slug, n=3, seed=7)
    sessions = Session.objects.filter(study=study)
    assert sessions.count() == 3
    assert {s.kind for s in sessions} == {Session.Kind.SIMULATED}
    assert {s.state for s in sessions} == {Session.State.COMPLETE}
    judgments = Judgment.objects.filter(study=study)
    assert judgments.count() == sum(s.position for s in sessions) > 0
    # Each answer as the interface stores it.
    assert all(j.lam is not None for j in judgments)
    assert reports.study_judgments(study, include_excluded=True).count() == 0
    assert reports.stimulus_aggregates(study, include_excluded=True) == {}
    export = b"".join(
        staff.get(f"/api/studies/{study.slug}/export/", {"include_excluded": "1"}).streaming_content
    )
    assert export.count(b"\n") == 1  # the header only
    assert reports.session_kinds(study)["simulated"] == 3
    assert reliability.simulated_counts(study) == {
        "sessions": 3, "complete": 3, "judgments": judgments.count()
    }


def test_dashboard_shows_curves_agreement_reliability_and_estimate(make_study, staff):
    study = make_study(
        "infer", n_pairs=2, repeat_trials=1, conditions=1, feedback_questions=[]
    )
    url = reverse("admin:elicitation_study_dashboard", args=[study.pk])
    # Before any live answer the estimate comes from the simulated sessions.
    call_command("simulate_participants", study=study.slug, n=4, seed=3)
    page = staff.get(url)
    estimate = page.context["estimate"]
    assert estimate["source"] == "simulated participants" and estimate["people"] == 4
    assert estimate["participants"] >= 4
    html = page.content.decode()
    assert f"<strong>{estimate['participants']}</strong>" in html
    assert 'id="simulated-sessions">Simulated sessions (never research data): 4, 4 complete' in html
    # Live answers: the curves, agreement and reliability sections fill in.
    for name in ("one", "two", "three"):
        _answer_infer(to_trials(start_session(study, RecruiterIds(name))), lambda lam, s: lam)
    _answer_infer(to_trials(start_session(study, RecruiterIds("off"))), lambda lam, s: 0.5)
    page = staff.get(url)
    html = page.content.decode()
    curves = html[html.index('id="pair-curves"') : html.index('id="participants-estimate"')]
    assert "<svg" in curves and curves.count("(n=") == 2  # one panel per pair
    assert curves.count("<polygon") == 2  # each panel's 90% credible band
    agreement = page.context["agreement"]
    assert agreement["alpha"] is not None
    assert f"<td>{agreement['alpha']:.3f}</td>" in html
    off = Session.objects.get(study=study, participant__recruiter_pid="off").participant
    table = html[html.index('id="reliability"') :]
    assert f"<td>{off.public_id}</td>" in table.split("</tr>")[1]  # least reliable first
    assert page.context["estimate"]["source"] == "live participants"
    assert page.context["estimate"]["people"] == 4
    assert f"<strong>{page.context['estimate']['participants']}</strong>" in html
    weighted = staff.get(url, {"weighted": "1"})
    assert weighted.status_code == 200 and weighted.context["curves_weighted"]


def test_dashboard_pages_the_curves(make_study, staff):
    study = make_study("infer", n_pairs=14, repeat_trials=0, conditions=1, feedback_questions=[])
    call_command("simulate_participants", study=study.slug, n=1, seed=1)
    Session.objects.filter(study=study).update(kind=Session.Kind.LIVE)
    url = reverse("admin:elicitation_study_dashboard", args=[study.pk])
    first = staff.get(url)
    assert first.context["curves_page"].paginator.num_pages == 2
    assert first.content.decode().count("(n=") == reliability.CURVES_PER_PAGE
    second = staff.get(url, {"curves_page": "2"}).content.decode()
    assert second.count("(n=") == 14 - reliability.CURVES_PER_PAGE


def test_closed_form_alpha_equals_the_krippendorff_package():
    from adaptive.agreement import interval_alpha_arrays

    rng = np.random.default_rng(5)
    for _ in range(20):
        raters, units = int(rng.integers(2, 8)), int(rng.integers(2, 15))
        data = np.round(rng.random((raters, units)), 2)
        data[rng.random((raters, units)) < 0.3] = np.nan
        if (np.sum(~np.isnan(data), axis=0) >= 2).sum() == 0:
            continue
        r, u = np.nonzero(~np.isnan(data))
        expected = krippendorff.alpha(reliability_data=data, level_of_measurement="interval")
        assert interval_alpha_arrays(r, u, data[r, u]) == pytest.approx(expected, abs=1e-9)


def test_simulated_people_answer_from_hmix_curves(hmix_dataset, django_capture_on_commit_callbacks):
    from datasets.services import create_stimulus_set
    from elicitation.models import Study
    from elicitation.services import build_conditions
    from elicitation.services.simulation import hmix_population, study_population

    with django_capture_on_commit_callbacks(execute=True):
        stimulus_set = create_stimulus_set(
            name="hmix-single", dataset=hmix_dataset, kind="single", n_pairs=2, seed=0
        )
    study = Study.objects.create(
        slug="hmix-sim", interface="infer", stimulus_set=stimulus_set, status="live",
        consent_text="c", completion_code="DONE", condition_count=1,
    )
    build_conditions(study)
    truth = study_population(study, np.random.default_rng(0))
    hmix = hmix_population()
    assert truth.from_hmix == 2
    for pair_id, (row, flip) in truth.index.items():
        pair = study.conditions.first().items.filter(pair_id=pair_id).first().pair
        names = tuple(sorted((pair.class1.lower(), pair.class2.lower())))
        i = [tuple(n.lower() for n in p) for p in hmix.pairs].index(names)
        assert truth.population.m[row] == hmix.m[i] and truth.population.k[row] == hmix.k[i]
        assert flip == (pair.class1.lower() > pair.class2.lower())
    call_command("simulate_participants", study=study.slug, n=2, seed=0)
    assert Judgment.objects.filter(study=study).count() > 0
    assert reports.study_judgments(study).count() == 0
