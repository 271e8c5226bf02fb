"""An adaptive study's posterior pools follow the exclusion rule (reports.counted):
excluding a participant takes their answers out of the posterior their next trials and
everyone else's are chosen from, re-including puts them back, and an excluded session
still answering adds nothing; simulated participants in a live study keep to their own
pool."""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest
from django.db import connection, connections
from django.urls import reverse

from elicitation import selectors
from elicitation.models import Judgment, PairPosterior, Session
from elicitation.services import RecruiterIds, record_judgment, set_excluded, start_session
from elicitation.services import adaptive as adaptive_services
from tests.test_adaptive_studies import ADAPTIVE, answer_all, infer_payload, served
from tests.test_flow import to_trials


def stored_bytes(study, pool: str = "live") -> dict[int, tuple[bytes, int]]:
    """pair id -> (the stored log posterior's bytes, judgment count) of `pool`."""
    rows = PairPosterior.objects.filter(study=study, pool=pool).values_list(
        "pair_id", "log_posterior", "judgment_count"
    )
    return {p: (np.asarray(lp, dtype="<f8").tobytes(), n) for p, lp, n in rows}


def assert_stored_is_recomputed(study, pool: str = "live") -> dict[int, int]:
    """The stored posteriors of `pool` equal the recomputation from the judgments that
    count; returns pair id -> count."""
    stored = selectors.stored_posteriors(study, pool)
    recomputed = selectors.recomputed_posteriors(study, pool)
    assert stored.keys() == recomputed.keys()
    for pair_id, (log_post, count) in stored.items():
        assert count == recomputed[pair_id][1]
        assert np.allclose(log_post, recomputed[pair_id][0], rtol=0, atol=1e-9)
    return {p: c for p, (_, c) in stored.items()}


def counted_per_pair(study) -> dict[int, int]:
    """Live, not excluded judgments per pair (the exclusion rule)."""
    rows = Judgment.objects.filter(
        study=study, session__kind=Session.Kind.LIVE, session__excluded=False
    ).values_list("pair_id", flat=True)
    return dict(Counter(rows))


def answer_one(session, slug, slider: int = 40) -> bool:
    """Answer the session's next trial; False when it has none."""
    live, trial = served(session, slug)
    if trial is None:
        return False
    payload = infer_payload(live.session.reference, trial["index"], slider)
    assert record_judgment(session.token, payload, slug).created
    return True


def test_excluding_a_participant_rebuilds_the_live_posterior(
    make_study, staff, django_capture_on_commit_callbacks
):
    """The dashboard's exclusion toggle takes the participant's answers out of the live
    posterior in its own transaction and makes this process's chooser re-read it; the
    toggle back puts them back, bit for bit up to rounding."""
    study = make_study("infer", n_pairs=3, repeat_trials=0, **ADAPTIVE)
    one = to_trials(start_session(study, RecruiterIds("one")))
    two = to_trials(start_session(study, RecruiterIds("two")))
    answer_all(one, study.slug, answer=lambda spec, live: 5)
    answer_all(two, study.slug, answer=lambda spec, live: 90)
    before = selectors.stored_posteriors(study)
    everyone = assert_stored_is_recomputed(study)
    assert sum(everyone.values()) == Judgment.objects.count() > 0
    assert adaptive_services._states.get((study.pk, "live")) is not None
    url = reverse("admin:elicitation_session_exclusion", args=[study.pk, one.pk])
    with django_capture_on_commit_callbacks(execute=True):
        assert staff.post(url).status_code == 302
    assert Session.objects.get(pk=one.pk).excluded
    counts = assert_stored_is_recomputed(study)
    assert {p: c for p, c in counts.items() if c} == counted_per_pair(study)
    assert sum(counts.values()) == Judgment.objects.filter(session=two).count()
    moved = {p for p in counts if counts[p] != everyone[p]}
    assert moved == set(Judgment.objects.filter(session=one).values_list("pair_id", flat=True))
    assert (study.pk, "live") not in adaptive_services._states  # re-read at the next choice
    # Re-included: everyone's answers again.
    with django_capture_on_commit_callbacks(execute=True):
        assert staff.post(url).status_code == 302
    assert not Session.objects.get(pk=one.pk).excluded
    assert assert_stored_is_recomputed(study) == everyone
    for pair_id, (log_post, _) in selectors.stored_posteriors(study).items():
        assert np.allclose(log_post, before[pair_id][0], rtol=0, atol=1e-9)


def test_an_excluded_session_still_answering_adds_to_no_posterior(make_study):
    """A participant excluded mid-session keeps answering: each answer is stored, and
    the live posterior stays the one recomputed from the answers that count (the
    one-statement save on PostgreSQL, the row-locked one elsewhere); this process's
    chooser does not take the answers either."""
    study = make_study("infer", n_pairs=3, repeat_trials=0, **ADAPTIVE)
    other = to_trials(start_session(study, RecruiterIds("other")))
    answer_all(other, study.slug, answer=lambda spec, live: 70)
    excluded = to_trials(start_session(study, RecruiterIds("excluded")))
    assert answer_one(excluded, study.slug, 10)
    set_excluded(excluded, True)
    adaptive_services.forget_state(study.pk)  # what the commit does
    counted = assert_stored_is_recomputed(study)
    stored = Judgment.objects.filter(session=excluded).count()
    answers = 0
    while answer_one(excluded, study.slug, 10):
        answers += 1
    assert answers > 0
    assert Judgment.objects.filter(session=excluded).count() == stored + answers
    assert assert_stored_is_recomputed(study) == counted
    assert {p: c for p, c in counted.items() if c} == counted_per_pair(study)
    state = adaptive_services._states[study.pk, "live"]
    for pair_id, count in counted.items():
        assert state.chooser.posteriors.n_judgments[state.index[pair_id]] == count
    # Re-included: all of its answers count, those given while excluded too.
    set_excluded(excluded, False)
    counts = assert_stored_is_recomputed(study)
    assert sum(counts.values()) == Judgment.objects.count()


def test_excluding_a_pilot_rebuilds_the_pilot_pool_only(make_study):
    """A pilot's answers are in the pilot pool: excluding the pilot rebuilds that pool
    and leaves the live one as it was."""
    from elicitation.models import Study

    study = make_study("infer", n_pairs=2, repeat_trials=0, status="pilot", **ADAPTIVE)
    pilot = to_trials(start_session(study, RecruiterIds("pilot")))
    answer_all(pilot, study.slug, answer=lambda spec, live: 5)
    Study.objects.filter(pk=study.pk).update(status="live")
    study.refresh_from_db()
    live = to_trials(start_session(study, RecruiterIds("live")))
    assert live.kind == Session.Kind.LIVE
    answer_all(live, study.slug)
    live_before = stored_bytes(study)
    set_excluded(pilot, True)
    assert sum(assert_stored_is_recomputed(study, "pilot").values()) == 0
    assert stored_bytes(study) == live_before
    set_excluded(pilot, False)
    pilot_answers = Judgment.objects.filter(session=pilot).count()
    assert sum(assert_stored_is_recomputed(study, "pilot").values()) == pilot_answers


def test_simulating_in_a_live_adaptive_study_leaves_the_live_pool_alone(make_study):
    """Simulated participants add to and choose from the simulated pool: in a study with
    live participants the command runs, and the live posterior is the same bytes."""
    from django.core.management import call_command

    study = make_study("infer", n_pairs=2, repeat_trials=0, **ADAPTIVE)
    answer_all(to_trials(start_session(study, RecruiterIds("real"))), study.slug)
    live_before = stored_bytes(study)
    live_judgments = Judgment.objects.count()
    assert sum(n for _, n in live_before.values()) == live_judgments > 0
    call_command("simulate_participants", study=study.slug, n=2, seed=1)
    simulated = Judgment.objects.filter(session__kind=Session.Kind.SIMULATED).count()
    assert simulated > 0
    assert Session.objects.filter(study=study, kind=Session.Kind.SIMULATED).count() == 2
    assert stored_bytes(study) == live_before
    assert sum(assert_stored_is_recomputed(study, "simulated").values()) == simulated
    assert Judgment.objects.count() == live_judgments + simulated


@pytest.mark.django_db(transaction=True)
def test_exclusion_toggled_while_sessions_answer(make_study):
    """Sessions answer (one of them the one being toggled) while a researcher toggles
    its exclusion again and again: no answer is lost from the posterior or added to it
    twice, and the stored posterior equals the recomputation."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL (set DATABASE_URL)")
    study = make_study(
        "infer", n_pairs=3, repeat_trials=0, adaptive_max_per_pair=3, adaptive_budget=8, **ADAPTIVE
    )
    sessions = [to_trials(start_session(study, RecruiterIds(f"t{i}"))) for i in range(5)]
    toggled = sessions[0]
    errors: list[BaseException] = []
    done = threading.Event()

    def participant(session) -> None:
        try:
            while answer_one(session, study.slug, 30):
                pass
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connections.close_all()

    def researcher() -> None:
        try:
            excluded = False
            while not done.is_set():
                excluded = not excluded
                set_excluded(toggled, excluded)
            set_excluded(toggled, True)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=participant, args=(s,)) for s in sessions]
    toggler = threading.Thread(target=researcher)
    toggler.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    toggler.join()
    assert errors == []
    assert Judgment.objects.count() == 5 * 8
    counts = assert_stored_is_recomputed(study)
    assert {p: c for p, c in counts.items() if c} == counted_per_pair(study)
    assert sum(counts.values()) == 4 * 8


def test_rebuild_posteriors_command_restores_the_recomputed_posteriors(make_study):
    """`manage.py rebuild_posteriors` (a database restored or migrated past 0017 some
    other way) stores every pool's posteriors as recomputed from the judgments; an
    unknown study is a clear error that changes nothing."""
    from django.core.management import CommandError, call_command

    study = make_study("infer", n_pairs=3, repeat_trials=0, **ADAPTIVE)
    one = to_trials(start_session(study, RecruiterIds("one")))
    answer_all(one, study.slug, answer=lambda spec, live: 30)
    good = assert_stored_is_recomputed(study)
    # A stale cache: every row back at the prior with a wrong count.
    prior = selectors.recomputed_posteriors(study, "pilot")  # no pilot judgments: priors
    blank = next(iter(prior.values()))[0] if prior else None
    rows = PairPosterior.objects.filter(study=study, pool="live")
    for row in rows:
        row.log_posterior = blank if blank is not None else np.zeros_like(row.log_posterior)
        row.judgment_count = 99
        row.save()
    with pytest.raises(CommandError):
        call_command("rebuild_posteriors", study="no-such-study")
    assert set(rows.values_list("judgment_count", flat=True)) == {99}
    call_command("rebuild_posteriors", study=study.slug)
    assert assert_stored_is_recomputed(study) == good
