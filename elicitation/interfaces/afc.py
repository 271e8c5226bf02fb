"""Two-alternative forced choice (2AFC): one mixed image with its two classes named,
"Which does this image show more of?", keys f/j or buttons, optional confidence.

Each answer is a binary response at the stimulus's lam (stored as the judgment's lam;
the response records the choice). The lam where both answers are equally likely, the
point of subjective equality, is the pair's midpoint: human_fit takes the responses as
shares of 1 or 0 and fits its logistic curve to them directly (Evidence "perceived"),
and the dashboard draws the same fit per class pair as a psychometric curve.
Which class is on the f (left) side is random per trial, so a side bias does not move
the midpoint."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import numpy as np

from ..answers import Answer, AnswerError, TrialContext, boolean, integer
from .base import Evidence, InterfaceSpec

NAME = "afc"


def psychometric(rows: list[tuple[str, str, float, int]]) -> list[dict]:
    """Per unordered class pair (a, b), a <= b by name: the share of answers "more a"
    at each lam of a (weight of a's image), and the logistic fit
    share = sigmoid(k * (lam - pse)) (training.policies.fit_logistic, the fit human_fit
    uses); pse is None where the responses do not pin a curve down (fewer than two
    lams, or all answers the same).

    rows: (class1, class2, lam of class1, choice) with choice 1 = class1, 2 = class2.
    Returns [{"class_a", "class_b", "points": [{"lam", "n", "share"}], "k", "pse", "n"}]."""
    from training.policies import fit_logistic

    by_pair: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for class1, class2, lam, choice in rows:
        flip = class2 < class1
        a, b = (class2, class1) if flip else (class1, class2)
        lam_a = round(1.0 - lam, 4) if flip else round(lam, 4)
        chose_a = (choice == 1) != flip
        by_pair[(a, b)].append((lam_a, 1.0 if chose_a else 0.0))
    result = []
    for (a, b), obs in sorted(by_pair.items()):
        per_lam: dict[float, list[float]] = defaultdict(list)
        for lam, share in obs:
            per_lam[lam].append(share)
        lams, shares = np.array([o[0] for o in obs]), np.array([o[1] for o in obs])
        k = pse = None
        if len(per_lam) >= 2 and 0 < shares.sum() < len(shares):
            k, pse = fit_logistic(lams, shares)
        result.append(
            {
                "class_a": a,
                "class_b": b,
                "points": [
                    {"lam": lam, "n": len(s), "share": float(np.mean(s))}
                    for lam, s in sorted(per_lam.items())
                ],
                "k": k,
                "pse": None if pse is None else float(min(max(pse, 0.0), 1.0)),
                "n": len(obs),
            }
        )
    return result


def _chart(curves: list[dict]) -> str:
    from ..plots import psychometric_points

    return psychometric_points(curves, "Psychometric curve per class pair (2AFC)")


class TwoAFC(InterfaceSpec):
    name = NAME
    label = "Two-alternative forced choice (2AFC)"
    order = 50
    # Names both classes (the F/J choices) and asks which dominates: the lam stays hidden.
    shows = frozenset({"classes"})
    hides = frozenset({"lam"})
    demo = {
        "slug": "demo-2afc",
        "title": "Blended digits: which is there more of?",
        "ask_confidence": True,
    }

    def trial_spec(self, study: Any, grid: list[float], rng: random.Random) -> dict:
        return {"swapped": rng.random() < 0.5}

    def serve(self, trial: dict, spec: dict, item: Any, grid: list[float], session: Any) -> None:
        """The image and `swapped` (class 2 on the left, the f key), nothing else."""
        super().serve(trial, spec, item, grid, session)
        trial["swapped"] = bool(spec.get("swapped", False))

    def read_answer(self, data: dict, context: TrialContext) -> Answer:
        """`choice`: 1 for the trial's first named class, 2 for the second; `swapped` as
        the page showed it, which must be the trial's. Stored with the stimulus's lam."""
        choice = integer(data, "choice", 1, 2)
        swapped = boolean(data, "swapped")
        if swapped != bool(context.trial.get("swapped", False)):
            raise AnswerError("swapped is not the side this trial showed")
        if context.stimulus_lam is None:
            raise AnswerError("this trial has no single stimulus")
        return Answer({"choice": choice, "swapped": swapped}, context.stimulus_lam)

    def evidence(
        self, lam: float | None, confidence: float | None, response: dict
    ) -> Evidence | None:
        return Evidence("perceived", 1.0 if response["choice"] == 1 else 0.0, confidence)

    def analytics(self, study: Any, include_excluded: bool) -> list[dict]:
        """The study's psychometric curves (psychometric), from counted judgments."""
        from .. import reports

        rows = reports.study_judgments(study, include_excluded).values_list(
            "pair__class1", "pair__class2", "lam", "response__choice"
        )
        return psychometric([r for r in rows if r[2] is not None])

    def dashboard_charts(self, study: Any, include_excluded: bool) -> list[str]:
        curves = self.analytics(study, include_excluded)
        return [_chart(curves)] if curves else []

    def example_answer(self, trial: dict) -> dict:
        return {"choice": 2, "swapped": trial["swapped"]}


SPEC = TwoAFC()
