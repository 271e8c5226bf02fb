"""2AFC answers as data: a binary response at the stimulus's lam, which human_fit takes
directly (a logistic fit on binary responses: its point of subjective equality is the
midpoint) and the dashboard draws per class pair as a psychometric curve."""

import uuid

import numpy as np
import pytest

from datasets.selectors import dataset_arrays
from elicitation import interfaces
from elicitation.interfaces.afc import psychometric
from elicitation.models import Judgment
from elicitation.services import RecruiterIds, record_judgment, start_session
from tests.test_flow import to_trials
from training import policies
from training.selectors import _judged_points
from training.services import create_job


def _simulated(pse: float, slope: float, n: int, seed: int = 0):
    """Binary answers "more class 1" at lams of class 1, from a logistic observer."""
    rng = np.random.default_rng(seed)
    lams = rng.choice([0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9], size=n)
    more_1 = rng.random(n) < 1 / (1 + np.exp(-slope * (lams - pse)))
    return lams, more_1


def test_human_fit_and_the_psychometric_curve_find_the_point_of_subjective_equality():
    spec = interfaces.get("afc")
    lams, more_1 = _simulated(pse=0.4, slope=12, n=4000)
    # Human_fit's input: each answer's evidence at its stimulus.
    points = []
    for lam, choice in zip(lams, np.where(more_1, 1, 2), strict=True):
        point = policies.PointJudgments(3, 5, float(lam))
        evidence = spec.evidence(float(lam), None, {"choice": int(choice), "swapped": False})
        assert evidence.kind == "perceived" and evidence.value in (0.0, 1.0)
        point.perceived.append(evidence.value)
        points.append(point)
    curves = policies.fit_human_curves(points, [])
    k, m = curves.curves[(3, 5)]
    assert m == pytest.approx(0.4, abs=0.02) and k == pytest.approx(12, rel=0.2)
    # The dashboard's curve: the same fit, whichever class comes first by name.
    rows = [("Dog", "Cat", float(lam), 1 if c else 2) for lam, c in zip(lams, more_1, strict=True)]
    [curve] = psychometric(rows)
    assert (curve["class_a"], curve["class_b"]) == ("Cat", "Dog")
    assert 1 - curve["pse"] == pytest.approx(m, abs=1e-6)  # Cat's lam is 1 - Dog's
    assert curve["n"] == 4000 and sum(p["n"] for p in curve["points"]) == 4000
    # All answers alike pin no curve down.
    [flat] = psychometric([("Cat", "Dog", 0.5, 1), ("Cat", "Dog", 0.9, 1)])
    assert flat["pse"] is None and flat["k"] is None


@pytest.mark.django_db
def test_stored_2afc_answers_reach_the_training_points(make_study):
    study = make_study("afc", n_pairs=2, conditions=1, repeat_trials=0, feedback_questions=[])
    session = to_trials(start_session(study, RecruiterIds("afc-data")))
    for _ in range(session.trial_count):
        session.refresh_from_db()
        spec = session.trial_order[session.position]
        record_judgment(
            session.token,
            {
                "session": session.reference,
                "trial_index": session.position,
                "idempotency_key": str(uuid.uuid4()),
                "rt_ms": 900.0,
                "response": {"choice": 1, "swapped": spec["swapped"]},
            },
        )
    judgments = list(Judgment.objects.select_related("stimulus"))
    assert len(judgments) == session.trial_count
    assert all(j.lam == j.stimulus.lam for j in judgments)
    job = create_job(
        name="afc-points",
        comparison="afc",
        dataset=study.stimulus_set.dataset,
        policy="relabel",
        architecture="small_cnn",
        seeds=[0],
        stimulus_sets=[study.stimulus_set],
        studies=[study],
        epochs=1,
        enqueue=False,
    )
    arrays = dataset_arrays(job.dataset)
    class_index = {name: i for i, name in enumerate(arrays.class_names)}
    row_of_id = {int(i): r for r, i in enumerate(arrays.ids)}
    points, midpoints = _judged_points(job, class_index, row_of_id)
    judged = [p for p in points if p.judgments.perceived]
    assert len(judged) == len(judgments) and midpoints == []
    assert all(p.judgments.perceived == [1.0] for p in judged)  # "more of class 1"
