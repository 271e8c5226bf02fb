"""Infer mixing factor with uncertainty (H-Mix): one mixed image with its two classes
named, a slider from "100% class 1" (0) to "100% class 2" (100) and a confidence slider."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ..answers import Answer, AnswerError, TrialContext, boolean, integer
from ._single import SINGLE_HMIX_COLUMNS, hmix_trial
from .base import Evidence, HmixMapping, InterfaceSpec

NAME = "infer"
MIDDLE = 50  # the slider's start for studies starting it in the middle, and old sessions


def perceived_from_slider(slider: float) -> float:
    """Perceived lam (weight of class 1, 0-1) of a mixing slider at 0-100, where 0 reads
    "100% class 1" (H-Mix's rate_mixture task): 1 - slider/100."""
    return 1.0 - slider / 100.0


def read_hmix(folder: Path) -> list:
    """H-Mix's Infer rows: slider and confidence as recorded."""
    from ..hmix import rows

    trials = []
    for row in rows(folder, SPEC.hmix):
        answer = json.loads(row["responses"])
        slider, confidence = int(answer["mixingcoeff"]), int(answer["confidence"])
        perceived = perceived_from_slider(slider)
        trials.append(
            hmix_trial(
                row,
                NAME,
                lam=perceived,
                confidence=confidence / 100.0,
                response={"slider": slider, "confidence": confidence, "perceived_lam": perceived},
            )
        )
    return trials


def _hmix_fields(response: dict, pair: str) -> dict:
    answer = {"mixingcoeff": response["slider"], "confidence": response["confidence"]}
    # H-Mix's Infer file names the pair by its image file.
    return {"responses": json.dumps(answer, separators=(",", ":")), "class_pair": f"{pair}.png"}


class Infer(InterfaceSpec):
    name = NAME
    label = "Infer mixing factor with uncertainty"
    order = 30
    # Names both classes and asks for the lam, which the trial must not tell.
    shows = frozenset({"classes"})
    hides = frozenset({"lam"})
    demo = {
        "slug": "demo-infer",
        "title": "Blended digits: how much of each?",
        "ask_confidence": False,
    }
    own_confidence = True
    hmix = HmixMapping(
        file="hmix_infer_mixing_factor.csv",
        task="rate_mixture",
        title="H-Mix: Infer mixing factor",
        columns=[
            "subject",
            "condition",
            "rt",
            "task",
            "responses",
            *SINGLE_HMIX_COLUMNS,
            "class_pair",
        ],
        read=read_hmix,
        fields=_hmix_fields,
    )

    def trial_spec(self, study: Any, grid: list[float], rng: random.Random) -> dict:
        # A random start (Study.slider_start) keeps a shared resting point from pulling
        # answers towards it.
        return {"slider_start": rng.randint(0, 100) if study.slider_start == "random" else MIDDLE}

    def serve(self, trial: dict, spec: dict, item: Any, grid: list[float], session: Any) -> None:
        super().serve(trial, spec, item, grid, session)
        trial["slider_start"] = spec.get("slider_start", MIDDLE)

    def read_answer(self, data: dict, context: TrialContext) -> Answer:
        """The page sends `touched` flags; an untouched slider is refused, as the
        participant was asked to move it (a deliberate click or key at the start counts
        as touching it).

        The mixing slider starts where the trial said (`slider_start` in the session's
        trial order: 50, or random per trial; 50 for sessions from before it was kept).
        The page may send the start it showed, which must be that one; the served start
        is stored with the answer either way."""
        slider = integer(data, "slider", 0, 100)
        confidence = integer(data, "confidence", 0, 100)
        slider_touched = boolean(data, "slider_touched")
        confidence_touched = boolean(data, "confidence_touched")
        if not (slider_touched and confidence_touched):
            raise AnswerError("both sliders must be moved before answering")
        served_start = context.trial.get("slider_start", MIDDLE)
        shown_start = integer(data, "slider_start", 0, 100, required=False)
        if shown_start is not None and shown_start != served_start:
            raise AnswerError("slider_start is not where this trial's slider started")
        perceived = round(perceived_from_slider(slider), 4)
        response = {
            "slider": slider,
            "confidence": confidence,
            "slider_touched": slider_touched,
            "confidence_touched": confidence_touched,
            "slider_start": served_start,
            "perceived_lam": perceived,
        }
        return Answer(response, perceived, confidence / 100.0)

    def evidence(
        self, lam: float | None, confidence: float | None, response: dict
    ) -> Evidence | None:
        return Evidence("perceived", lam, confidence)

    def dashboard_charts(self, study: Any, include_excluded: bool) -> list[str]:
        from .. import plots, reports

        charts = []
        perceived = reports.perceived_by_true_lam(study, include_excluded)
        if perceived:
            charts.append(
                plots.mean_std_plot(
                    perceived, "perceived lam", "Perceived vs true lam", diagonal=True
                )
            )
        confidence = reports.confidence_by_true_lam(study, include_excluded)
        if confidence:
            charts.append(
                plots.mean_std_plot(confidence, "mean confidence", "Confidence vs true lam")
            )
        return charts

    def example_answer(self, trial: dict) -> dict:
        return {"slider": 30, "confidence": 70, "slider_touched": True, "confidence_touched": True}


SPEC = Infer()
