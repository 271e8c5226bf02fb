"""Adaptive studies (issue 18): each next trial chosen when served, through the services
a browser uses; the stored posteriors under concurrent sessions on PostgreSQL; resume;
a whole adaptive session in Chromium."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import numpy as np
import pytest
from django.db import connection, connections

from adaptive.model import PairPosteriors, share
from adaptive.serving import ConstructStaircase
from elicitation import selectors
from elicitation.adaptive_design import GRID
from elicitation.live import live_session
from elicitation.models import Judgment, PairPosterior, Session
from elicitation.selectors import next_trial
from elicitation.services import (
    RecruiterIds,
    record_judgment,
    resume_session,
    serve_next_trial,
    start_session,
)
from elicitation.services import adaptive as adaptive_services
from tests.test_flow import to_trials

ADAPTIVE = {"design": "adaptive", "conditions": 1}


def served(session, slug):
    """What the trial page shows the session now (the view's path: serve, then show)."""
    live = live_session(session.token, slug)
    serve_next_trial(live)
    return live, next_trial(live)


def infer_payload(session_ref: str, index: int, slider: int = 40) -> dict:
    return {
        "session": session_ref,
        "trial_index": index,
        "idempotency_key": str(uuid.uuid4()),
        "rt_ms": 900.0,
        "response": {
            "slider": slider,
            "confidence": 60,
            "slider_touched": True,
            "confidence_touched": True,
        },
    }


def answer_all(session, slug, answer=lambda spec, live: 40) -> list[dict]:
    """Answer every trial the study serves the session; returns the specs served."""
    specs = []
    while True:
        live, trial = served(session, slug)
        if trial is None:
            return specs
        spec = live.session.trial_order[trial["index"]]
        specs.append(spec)
        payload = infer_payload(live.session.reference, trial["index"], answer(spec, live))
        assert record_judgment(session.token, payload, slug).created


def spec_pair_lam(study, spec) -> tuple[int, float]:
    from elicitation.live import catalog_of

    item = catalog_of(study).item(study.conditions.get().pk, spec["item"])
    return item.pair_id, item.stimulus_lam


def set_posterior(study, pair_id: int, m: float, k: float, sd: float = 0.01) -> None:
    """Store a posterior that knows the pair's curve: m to within sd, k on its grid."""
    grid = GRID
    log_post = -0.5 * ((grid.m - m) / sd) ** 2 - 0.5 * ((np.log(grid.k) - np.log(k)) / 0.05) ** 2
    PairPosterior.objects.filter(study=study, pair_id=pair_id).update(
        log_posterior=(log_post - log_post.max()).tobytes(), judgment_count=100
    )


def test_the_chooser_serves_informative_stimuli_through_the_service_path(make_study):
    """A pair whose curve is known is not asked about while another is uncertain, and
    the lam served is the one with the largest expected information gain, away from
    the ends where every curve says the same."""
    study = make_study("infer", n_pairs=4, repeat_trials=0, **ADAPTIVE)
    first = start_session(study, RecruiterIds("first"))
    pair_ids = sorted(PairPosterior.objects.filter(study=study).values_list("pair_id", flat=True))
    assert len(pair_ids) == 4 and first.trial_order == []  # chosen when served
    for pair_id in pair_ids[:-1]:
        set_posterior(study, pair_id, 0.5, 8.0)
    session = to_trials(first)
    live, trial = served(session, study.slug)
    spec = live.session.trial_order[0]
    pair_id, lam = spec_pair_lam(study, spec)
    assert pair_id == pair_ids[-1]  # the only pair still uncertain
    assert spec["value"] == pytest.approx(lam)
    assert lam not in (0.1, 0.9)
    # It is the argmax of the expected information gain over the set's lams.
    model = adaptive_services._state(live.catalog).model
    stored = selectors.stored_posteriors(study)[pair_id][0]
    probs = np.exp(stored - stored.max())
    gains = model.expected_information_gain(probs / probs.sum())
    assert model.candidates[int(np.argmax(gains))] == pytest.approx(lam)
    # Blind: the page gets the image and the slider, never the lam or the item.
    assert set(trial) >= {"index", "total", "image", "slider_start"}
    assert not {"value", "lam", "item"} & set(trial)


def test_the_midpoint_objective_serves_the_pair_likely_to_miss_its_tolerance(make_study):
    study = make_study(
        "infer", n_pairs=3, repeat_trials=0, adaptive_objective="midpoint", **ADAPTIVE
    )
    session = to_trials(start_session(study, RecruiterIds("midpoints")))
    pair_ids = sorted(PairPosterior.objects.filter(study=study).values_list("pair_id", flat=True))
    set_posterior(study, pair_ids[0], 0.3, 8.0)
    set_posterior(study, pair_ids[1], 0.6, 8.0, sd=0.2)  # midpoint far from known
    set_posterior(study, pair_ids[2], 0.5, 8.0)
    live, _ = served(session, study.slug)
    assert spec_pair_lam(study, live.session.trial_order[0])[0] == pair_ids[1]


def test_answers_move_the_chooser_to_where_the_curve_is_uncertain(make_study):
    """After answers that pin one pair's curve, later sessions are served the others."""
    study = make_study("infer", n_pairs=2, repeat_trials=0, adaptive_max_per_pair=5, **ADAPTIVE)
    pair_ids = []
    for i in range(3):
        session = to_trials(start_session(study, RecruiterIds(f"p{i}")))
        specs = answer_all(session, study.slug)
        pair_ids += [spec_pair_lam(study, s)[0] for s in specs]
    counts = Counter(pair_ids)
    assert len(counts) == 2  # both pairs asked about, every session capped at 5 each
    stored = selectors.stored_posteriors(study)
    assert sum(n for _, n in stored.values()) == Judgment.objects.count() == 30


def test_constraints_max_per_pair_repeats_spacing_and_budget(make_study):
    study = make_study(
        "infer",
        n_pairs=3,
        repeat_trials=2,
        adaptive_max_per_pair=2,
        adaptive_repeat_spacing=3,
        adaptive_budget=50,
        **ADAPTIVE,
    )
    session = to_trials(start_session(study, RecruiterIds("constrained")))
    specs = answer_all(session, study.slug)
    session.refresh_from_db()
    assert len(specs) == 3 * 2 + 2  # every pair twice, then the two repeats
    assert session.state == Session.State.FEEDBACK and session.position == 8
    assert session.trial_order == specs
    originals = Counter(spec_pair_lam(study, s)[0] for s in specs if not s["repeat"])
    assert set(originals.values()) == {2}
    repeats = [(i, s) for i, s in enumerate(specs) if s["repeat"]]
    assert len(repeats) == 2
    for i, spec in repeats:
        original = specs[spec["repeat_of"]]
        assert i - spec["repeat_of"] >= 3 and not original["repeat"]
        assert (spec["item"], spec["value"]) == (original["item"], original["value"])
    judgments = Judgment.objects.filter(session=session).order_by("trial_index")
    assert [j.is_repeat for j in judgments] == [s["repeat"] for s in specs]

    budgeted = make_study(
        "infer", slug="budgeted", n_pairs=3, repeat_trials=0, adaptive_budget=4, **ADAPTIVE
    )
    session = to_trials(start_session(budgeted, RecruiterIds("budget")))
    live, trial = served(session, budgeted.slug)
    assert trial["total"] == 4
    assert len(answer_all(session, budgeted.slug)) == 4
    session.refresh_from_db()
    assert session.state == Session.State.FEEDBACK and len(session.trial_order) == 4


def test_two_pages_of_one_session_are_served_one_trial(make_study):
    study = make_study("infer", n_pairs=3, repeat_trials=0, **ADAPTIVE)
    session = to_trials(start_session(study, RecruiterIds("two-tabs")))
    first = live_session(session.token, study.slug)
    second = live_session(session.token, study.slug)  # read before either served
    serve_next_trial(first)
    serve_next_trial(second)
    assert len(first.session.trial_order) == len(second.session.trial_order) == 1
    assert next_trial(first) == next_trial(second)
    assert Session.objects.get(pk=session.pk).trial_order == first.session.trial_order


def test_an_answer_to_a_trial_not_yet_served_is_refused(make_study):
    from elicitation.services import FlowError

    study = make_study("infer", n_pairs=2, repeat_trials=0, **ADAPTIVE)
    session = to_trials(start_session(study, RecruiterIds("early")))
    with pytest.raises(FlowError) as refused:
        record_judgment(session.token, infer_payload(session.reference, 0), study.slug)
    assert refused.value.status == 409
    assert Judgment.objects.count() == 0
    assert PairPosterior.objects.filter(judgment_count__gt=0).count() == 0


def test_a_reload_and_a_resumed_session_show_the_trial_served(make_study):
    study = make_study("infer", n_pairs=3, repeat_trials=0, **ADAPTIVE)
    ids = RecruiterIds("resumer", "ST", "SE")
    session = to_trials(start_session(study, ids))
    _, first = served(session, study.slug)
    assert record_judgment(session.token, infer_payload(session.reference, 0), study.slug).created
    live, shown = served(session, study.slug)
    order = list(live.session.trial_order)
    _, reloaded = served(session, study.slug)  # a reload serves nothing new
    assert reloaded == shown and shown["index"] == 1
    # The same person in another browser: same trial, same order.
    resumed = resume_session(Session.objects.get(pk=session.pk), ids)
    live, again = served(resumed, study.slug)
    assert again == shown and live.session.trial_order == order
    assert Session.objects.get(pk=session.pk).trial_order == order
    assert first["index"] == 0


def test_construct_staircase_chooses_start_values_and_stops_a_known_pair(make_study):
    study = make_study(
        "construct",
        n_pairs=2,
        repeat_trials=0,
        adaptive_max_per_pair=6,
        ask_confidence=True,
        **ADAPTIVE,
    )
    session = to_trials(start_session(study, RecruiterIds("stairs")))
    grid = [round(x, 4) for x in study.stimulus_set.lams]
    starts = []
    while True:
        live, trial = served(session, study.slug)
        if trial is None:
            break
        spec = live.session.trial_order[trial["index"]]
        starts.append(spec["start_lam"])
        assert spec["start_lam"] == spec["value"] and 0 < spec["start_lam"] < 1
        assert trial["start_step"] == grid.index(round(spec["start_lam"], 4))
        final = 5 if trial["start_step"] < 5 else 4  # steps to the middle, one at a time
        step = 1 if final > trial["start_step"] else -1
        steps = list(range(trial["start_step"], final + step, step))
        payload = {
            "session": live.session.reference,
            "trial_index": trial["index"],
            "idempotency_key": str(uuid.uuid4()),
            "rt_ms": 1000.0,
            "confidence": 50,
            "response": {"start_step": steps[0], "final_step": final, "steps": steps},
        }
        assert record_judgment(session.token, payload, study.slug).created
    assert len(starts) <= 12
    # The staircase brackets the midpoint: starts on both sides of it.
    assert min(starts) < 0.45 and max(starts) > 0.55
    session.refresh_from_db()
    assert session.state == Session.State.FEEDBACK


def test_construct_staircase_is_done_when_the_midpoint_is_known_to_005():
    grid_m = np.linspace(0, 1, 101)
    post = PairPosteriors(1, GRID)
    stairs = ConstructStaircase.for_pair(post, 0, [0.1, 0.3, 0.5, 0.7, 0.9])
    assert not stairs.done
    lo, hi = stairs.interval()
    assert (hi - lo) / 2 > 0.05
    sharp = np.exp(-0.5 * ((grid_m - 0.4) / 0.02) ** 2)
    known = ConstructStaircase(sharp, grid_m, [0.1, 0.9])
    lo, hi = known.interval()
    assert known.done and (hi - lo) / 2 <= 0.05 and lo < 0.4 < hi


def test_known_midpoints_agree_with_each_staircase():
    from adaptive.serving import known_midpoints

    post = PairPosteriors(6, GRID)
    starts = [0.1, 0.3, 0.5, 0.7, 0.9]
    noise = {**adaptive_noise_defaults(), "construct": {"sd": 0.06, "lapse": 0.02}}
    answers = {p: [(0.1, 0.4), (0.9, 0.5)] * p for p in range(6)}
    done = known_midpoints(post, answers, starts, noise)
    for p, given in answers.items():
        stairs = ConstructStaircase.for_pair(post, p, starts, noise)
        for start, final in given:
            stairs.update(start, final)
        assert stairs.done == (p in done)
    assert 0 not in done and 5 in done


def adaptive_noise_defaults() -> dict:
    from adaptive.model import DEFAULT_NOISE

    return dict(DEFAULT_NOISE)


def test_stored_posterior_equals_the_recomputation(make_study):
    study = make_study("infer", n_pairs=2, repeat_trials=1, adaptive_repeat_spacing=1, **ADAPTIVE)
    for i in range(2):
        session = to_trials(start_session(study, RecruiterIds(f"r{i}")))
        answer_all(session, study.slug, answer=lambda spec, live: 20 + 10 * (spec["item"] % 5))
    stored = selectors.stored_posteriors(study)
    recomputed = selectors.recomputed_posteriors(study)
    assert stored.keys() == recomputed.keys()
    for pair_id, (log_post, count) in stored.items():
        assert count == recomputed[pair_id][1] > 0
        assert np.allclose(np.exp(log_post), np.exp(recomputed[pair_id][0]), atol=1e-9)
    # The posterior means describe a curve: share rises with lam.
    _, post = selectors.pair_posteriors(study)
    curve = post.mean_curve([0.1, 0.9])
    assert (curve[:, 1] >= curve[:, 0]).all()
    assert share(0.9, 0.5, 8.0) > share(0.1, 0.5, 8.0)


@pytest.mark.django_db(transaction=True)
def test_concurrent_sessions_never_lose_or_double_a_judgment(make_study):
    """Many sessions answer at once (each answer also sent twice); every judgment is
    stored once and the stored posteriors equal those recomputed from them."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL (set DATABASE_URL)")
    study = make_study(
        "infer", n_pairs=3, repeat_trials=1, adaptive_max_per_pair=2, adaptive_budget=6, **ADAPTIVE
    )
    n = 12
    sessions = [to_trials(start_session(study, RecruiterIds(f"c{i}"))) for i in range(n)]
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def participant(session) -> None:
        try:
            barrier.wait()
            while True:
                live, trial = served(session, study.slug)
                if trial is None:
                    break
                payload = infer_payload(live.session.reference, trial["index"], 30)
                first = record_judgment(session.token, payload, study.slug)
                again = record_judgment(session.token, payload, study.slug)  # a retry
                assert first.created and not again.created
                assert again.judgment.pk == first.judgment.pk
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=participant, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Judgment.objects.count() == n * 6
    for session in Session.objects.all():
        indexes = list(
            Judgment.objects.filter(session=session).values_list("trial_index", flat=True)
        )
        assert sorted(indexes) == list(range(6)) and len(session.trial_order) == 6
    per_pair = Counter(Judgment.objects.values_list("pair_id", flat=True))
    stored = selectors.stored_posteriors(study)
    recomputed = selectors.recomputed_posteriors(study)
    assert {p: c for p, (_, c) in stored.items() if c} == dict(per_pair)
    for pair_id, (log_post, _) in stored.items():
        assert np.allclose(np.exp(log_post), np.exp(recomputed[pair_id][0]), rtol=0, atol=1e-9)


def test_the_study_form_offers_the_adaptive_design(make_study, admin_client):
    study = make_study("infer", n_pairs=2, repeat_trials=0)
    page = admin_client.get(f"/admin/elicitation/study/{study.pk}/change/")
    assert page.status_code == 200
    for name in ("design", "adaptive_budget", "adaptive_max_per_pair", "adaptive_repeat_spacing"):
        assert f'name="{name}"' in page.content.decode()


def test_an_adaptive_design_needs_an_interface_with_a_curve(make_study):
    from django.core.exceptions import ValidationError

    study = make_study("soft_label", n_pairs=2, repeat_trials=0)
    study.design = "adaptive"
    with pytest.raises(ValidationError) as invalid:
        study.clean()
    assert "design" in invalid.value.message_dict


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_an_adaptive_2afc_study_runs_to_completion_in_a_browser(page, live_server, make_study):
    from tests.browser import enter_study, finish_feedback
    from tests.test_browser_edges import shown

    study = make_study(
        "afc",
        n_pairs=2,
        repeat_trials=1,
        adaptive_max_per_pair=2,
        adaptive_repeat_spacing=2,
        **ADAPTIVE,
    )
    enter_study(page, live_server.url, study.slug, "adaptive-person")
    for i in range(5):  # 2 pairs x 2, and a repeat
        shown(page, i)
        assert page.inner_text("#progress-text") == f"Trial {i + 1} of at most 5"
        page.keyboard.press("f" if i % 2 else "j")
        page.wait_for_selector(f'.trial[data-index="{i}"]', state="detached")
    finish_feedback(page)
    session = Session.objects.get()
    assert session.state == Session.State.COMPLETE and len(session.trial_order) == 5
    judgments = Judgment.objects.filter(session=session)
    assert judgments.count() == 5 and judgments.filter(is_repeat=True).count() == 1
    stored = selectors.stored_posteriors(study)
    assert sum(c for _, c in stored.values()) == 5


def test_an_adaptive_study_stores_the_noise_levels_fitted_to_hmix(make_study, shared_data):
    from elicitation.services import save_study

    study = make_study("infer", n_pairs=2, repeat_trials=0)
    study.design = "adaptive"
    save_study(study)
    study.refresh_from_db()
    noise = study.adaptive_noise
    assert noise["n"]["infer"] > 1000  # fitted to the H-Mix judgments
    assert 0 < noise["infer"]["sd"] < 0.5 and 0 <= noise["construct"]["lapse"] < 0.3
    fixed = make_study("infer", slug="still-fixed", n_pairs=2, repeat_trials=0)
    save_study(fixed)
    fixed.refresh_from_db()
    assert fixed.adaptive_noise == {}


@pytest.mark.parametrize(
    "field, value",
    [
        ("adaptive_budget", "0"),
        ("adaptive_max_per_pair", "0"),
        ("adaptive_budget", "-5"),
        ("adaptive_budget", "100000"),
        ("adaptive_noise", '{"prior": "x"}'),
        ("adaptive_noise", '{"prior": {"m_mean": 0.5, "m_sd": -1}}'),
        ("adaptive_noise", '{"infer": {"sd": 0, "lapse": 0.05}}'),
        ("adaptive_noise", '{"infer": {"sd": 0.2, "lapse": 1.5}}'),
        ("adaptive_noise", "[1, 2]"),
    ],
)
def test_the_admin_refuses_constraints_and_noise_that_serve_no_trial(
    make_study, admin_client, field, value
):
    """A budget or max per pair of 0 ended every session before its first trial with
    the completion code; noise levels the likelihood cannot use (a negative or zero sd,
    a lapse outside 0..1, not an object) made the posterior NaN and ended every session
    at once too. The admin's form refuses them with the field named; nothing changes."""
    from elicitation.models import Study
    from tests.test_researcher_tools import form_data, post_change

    study = make_study("infer", n_pairs=2, repeat_trials=0, status="draft", **ADAPTIVE)
    before = Study.objects.filter(pk=study.pk).values().get()
    data = form_data(admin_client, study, **{field: value})
    reply = post_change(admin_client, study, data)
    assert reply.status_code == 200  # the form again, with its errors
    assert field in reply.context["adminform"].form.errors
    assert Study.objects.filter(pk=study.pk).values().get() == before


def test_the_admin_keeps_a_valid_adaptive_study(make_study, admin_client):
    """The check above refuses only what cannot serve: the form as shown saves."""
    from elicitation.models import Study
    from tests.test_researcher_tools import form_data, post_change

    study = make_study("infer", n_pairs=2, repeat_trials=0, status="draft", **ADAPTIVE)
    reply = post_change(admin_client, study, form_data(admin_client, study, adaptive_budget="7"))
    assert reply.status_code == 302
    assert Study.objects.get(pk=study.pk).adaptive_budget == 7


def test_preview_answers_leave_an_adaptive_studys_posteriors_alone(make_study):
    """The researcher's preview link (or Prolific's preview) answers like anyone, but
    its session is no participant: its answers must not move the posteriors from which
    real participants' next trials are chosen, nor the recomputation."""
    import json

    from django.test import Client

    from tests.test_participant_trust import CONSENT, join

    study = make_study("infer", n_pairs=2, repeat_trials=0, ask_confidence=True, **ADAPTIVE)

    def answer(browser) -> int:
        shown = browser.get(f"/s/{study.slug}/trial/").json()
        payload = infer_payload(shown["session"], shown["trial"]["index"])
        reply = browser.post(
            f"/s/{study.slug}/judgments/", json.dumps(payload), content_type="application/json"
        )
        return reply.status_code

    preview = Client()
    assert preview.get(f"/s/{study.slug}/preview/{study.preview_key}/").status_code == 302
    assert preview.post(f"/s/{study.slug}/consent/", CONSENT).status_code == 302
    assert answer(preview) == 201 and answer(preview) == 201
    assert Judgment.objects.filter(session__kind=Session.Kind.PREVIEW).count() == 2
    from elicitation.adaptive_design import prior_log_posterior

    study.refresh_from_db()
    prior = prior_log_posterior(study).tobytes()
    assert set(map(bytes, PairPosterior.objects.values_list("log_posterior", flat=True))) == {prior}
    assert not PairPosterior.objects.exclude(judgment_count=0).exists()
    # A live participant's answer counts, and the recomputation agrees.
    assert answer(join(study, "live-one")) == 201
    assert sum(PairPosterior.objects.values_list("judgment_count", flat=True)) == 1
    recomputed = selectors.recomputed_posteriors(study)
    for pair_id, (log_post, count) in selectors.stored_posteriors(study).items():
        assert recomputed[pair_id][1] == count
        mine, again = np.exp(log_post), np.exp(recomputed[pair_id][0])
        assert np.allclose(mine / mine.sum(), again / again.sum(), atol=1e-12)


def construct_payload(live, trial) -> dict:
    final = 5 if trial["start_step"] < 5 else 4
    step = 1 if final > trial["start_step"] else -1
    return {
        "session": live.session.reference,
        "trial_index": trial["index"],
        "idempotency_key": str(uuid.uuid4()),
        "rt_ms": 1000.0,
        "confidence": 50,
        "response": {
            "start_step": trial["start_step"],
            "final_step": final,
            "steps": list(range(trial["start_step"], final + step, step)),
        },
    }


@pytest.mark.django_db(transaction=True)  # autocommit, as a request runs
@pytest.mark.parametrize("interface", ["infer", "construct"])
def test_an_adaptive_answer_and_its_next_trial_are_one_statement(
    make_study, monkeypatch, interface
):
    """On PostgreSQL the save of an adaptive answer stores it, adds it to its pair's
    posterior and appends the next trial in one statement (no BEGIN, no row read, no
    second UPDATE), when the chooser's periodic re-read is not due; the reply's next
    trial then needs no query at all."""
    from django.test.utils import CaptureQueriesContext

    if connection.vendor != "postgresql":
        pytest.skip("the one-statement save is PostgreSQL's (set DATABASE_URL)")
    study = make_study(
        interface,
        n_pairs=3,
        repeat_trials=1,
        adaptive_repeat_spacing=1,
        ask_confidence=True,
        **ADAPTIVE,
    )
    session = to_trials(start_session(study, RecruiterIds(f"one-{interface}")))
    payload = (
        construct_payload
        if interface == "construct"
        else (lambda live, trial: infer_payload(live.session.reference, trial["index"]))
    )
    live, trial = served(session, study.slug)
    first = record_judgment(session.token, payload(live, trial), study.slug)  # prepares
    monkeypatch.setattr(adaptive_services, "SYNC_EVERY_S", 3600.0)
    for index in range(1, 4):
        live = first.live
        trial = next_trial(live)
        assert trial["index"] == index
        with CaptureQueriesContext(connection) as queries:
            saved = record_judgment(session.token, payload(live, trial), study.slug)
            serve_next_trial(saved.live)  # the reply's next trial: served already
            upcoming = next_trial(saved.live)
        assert [q["sql"].split(" (")[0] for q in queries] == [
            "EXECUTE hillmix_save_adaptive_answer"
        ]
        assert saved.created and upcoming["index"] == index + 1
        stored = Session.objects.get(pk=session.pk)
        assert stored.position == index + 1 and stored.trial_order == saved.live.session.trial_order
        assert len(stored.trial_order) == index + 2
        first = saved
    stored = selectors.stored_posteriors(study)
    recomputed = selectors.recomputed_posteriors(study)
    assert sum(c for _, c in stored.values()) == Judgment.objects.count() == 4
    # This process's chooser followed its own saves without re-reading any row.
    state = adaptive_services._states[study.pk, "live"]
    for pair_id, (log_post, count) in stored.items():
        assert count == recomputed[pair_id][1]
        assert np.allclose(log_post, recomputed[pair_id][0], atol=1e-9)
        p = state.index[pair_id]
        assert state.chooser.posteriors.n_judgments[p] == count
        assert np.allclose(state.chooser.posteriors.log_post[p], log_post, atol=1e-9)


def test_a_second_answer_to_a_trial_changes_nothing(make_study):
    """The position guard: another answer (a new key) to a trial already answered is a
    409 and moves neither the posterior nor the trial order; a replay of the stored
    one returns it."""
    from elicitation.services import FlowError

    study = make_study("infer", n_pairs=3, repeat_trials=0, **ADAPTIVE)
    session = to_trials(start_session(study, RecruiterIds("twice")))
    live, trial = served(session, study.slug)
    payload = infer_payload(live.session.reference, 0, 10)
    assert record_judgment(session.token, payload, study.slug).created
    before = Session.objects.values("position", "trial_order", "state").get(pk=session.pk)
    posteriors = selectors.stored_posteriors(study)
    with pytest.raises(FlowError) as refused:
        record_judgment(session.token, infer_payload(session.reference, 0, 90), study.slug)
    assert refused.value.status == 409
    assert not record_judgment(session.token, payload, study.slug).created
    assert Session.objects.values("position", "trial_order", "state").get(pk=session.pk) == before
    after = selectors.stored_posteriors(study)
    assert Judgment.objects.count() == 1
    for pair_id, (log_post, count) in posteriors.items():
        assert after[pair_id][1] == count and np.array_equal(after[pair_id][0], log_post)


def pools(study) -> dict[str, int]:
    """pool -> judgments counted in its stored posteriors."""
    out = Counter()
    for pool, count in PairPosterior.objects.filter(study=study).values_list(
        "pool", "judgment_count"
    ):
        out[pool] += count
    return dict(out)


def test_pilot_and_simulated_answers_keep_to_their_own_pools(make_study):
    """Only live sessions are research data (reports.counted): a pilot's answers add to
    the pilot pool, a simulated participant's to the simulated pool, and the live
    posterior (what the study's live participants are chosen from and every reader
    reads) stays the prior until a live participant answers."""
    from django.core.management import call_command

    from elicitation.adaptive_design import prior_log_posterior
    from elicitation.models import Study

    study = make_study("infer", n_pairs=2, repeat_trials=0, status="pilot", **ADAPTIVE)
    pilot = to_trials(start_session(study, RecruiterIds("pilot-person")))
    assert pilot.kind == Session.Kind.PILOT
    answered = len(answer_all(pilot, study.slug, answer=lambda spec, live: 5))
    assert answered > 0
    call_command("simulate_participants", study=study.slug, n=1, seed=1)
    simulated = Judgment.objects.filter(session__kind=Session.Kind.SIMULATED).count()
    assert simulated > 0
    assert pools(study) == {"live": 0, "pilot": answered, "simulated": simulated}
    prior = prior_log_posterior(study)
    for log_post, count in selectors.stored_posteriors(study).values():
        assert count == 0 and np.allclose(log_post, prior - prior.max())
    for pool in ("pilot", "simulated"):
        stored = selectors.stored_posteriors(study, pool)
        recomputed = selectors.recomputed_posteriors(study, pool)
        for pair_id, (log_post, count) in stored.items():
            assert count == recomputed[pair_id][1]
            assert np.allclose(log_post, recomputed[pair_id][0], atol=1e-9)
    # Live: its own answers, none of the others'.
    Study.objects.filter(pk=study.pk).update(status="live")
    study.refresh_from_db()
    live = to_trials(start_session(study, RecruiterIds("live-person")))
    assert live.kind == Session.Kind.LIVE
    live_answers = len(answer_all(live, study.slug))
    assert pools(study) == {"live": live_answers, "pilot": answered, "simulated": simulated}
    recomputed = selectors.recomputed_posteriors(study)
    for pair_id, (log_post, count) in selectors.stored_posteriors(study).items():
        assert count == recomputed[pair_id][1]
        assert np.allclose(log_post, recomputed[pair_id][0], atol=1e-9)


def test_a_stored_posterior_reads_back_exactly(make_study):
    """The binary read (array_send on PostgreSQL, the blob elsewhere) gives the stored
    floats bit for bit."""
    study = make_study("infer", n_pairs=1, repeat_trials=0, **ADAPTIVE)
    to_trials(start_session(study, RecruiterIds("exact")))
    values = np.random.default_rng(3).normal(-40, 30, GRID.size)
    values[7] = 0.0
    PairPosterior.objects.filter(study=study).update(log_posterior=values)
    [(log_post, _)] = selectors.stored_posteriors(study).values()
    assert np.array_equal(log_post, values - values.max())
    assert np.array_equal(PairPosterior.objects.get(study=study).log_posterior, values)
