"""Soft categorical label (H-Mix, CIFAR-10S style): the most probable class and its
probability, optionally a second class and its probability, and the impossible classes;
stored with its Top-2 Clamp soft label (elicitation.soft_labels)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..answers import Answer, AnswerError, TrialContext, as_text, listing, number, text
from ..soft_labels import DEFAULT_GAMMA, top2_clamp
from ._single import SINGLE_HMIX_COLUMNS, hmix_trial
from .base import Evidence, HmixMapping, InterfaceSpec

NAME = "soft_label"


def top2_clamp_label(
    names: Sequence[str],
    first: str,
    first_prob: float,
    second: str | None,
    second_prob: float | None,
    impossible: Sequence[str],
    gamma: float,
) -> np.ndarray:
    """The Top-2 Clamp label (K-vector over `names`) of an answer given in class names
    and percentages (0-100); a second probability without a second class is ignored.
    Raises ValueError for a class not in `names`."""
    return top2_clamp(
        len(names),
        names.index(first),
        first_prob / 100.0,
        names.index(second) if second else None,
        (second_prob or 0.0) / 100.0 if second else 0.0,
        [names.index(c) for c in impossible],
        gamma=gamma,
    )


def soft_label_answer(
    raw: dict, classes: Sequence[str] | None = None, gamma: float = DEFAULT_GAMMA
) -> dict:
    """The H-Mix response JSON in our soft-label schema, with its Top-2 Clamp label."""
    from datasets.sources import CIFAR10_CLASSES

    classes = list(classes or CIFAR10_CLASSES)
    first = raw["classSelect"].removeprefix("mostProb")
    second = raw.get("classSelect2", "secondProbNo").removeprefix("secondProb")
    second = None if second == "No" else second
    p1 = float(raw["prob"])
    # Kept as recorded: a few answers say "no second class" yet carry a prob2.
    p2 = float(raw["prob2"]) if raw.get("prob2") not in (None, "") else None
    impossible = [k.removeprefix("improbClassSelect") for k in raw if k.startswith("improbClass")]
    label = top2_clamp_label(classes, first, p1, second, p2, impossible, gamma)
    return {
        "first_class": first,
        "first_prob": p1,
        "second_class": second,
        "second_prob": p2,
        "impossible": impossible,
        "soft_label": [float(x) for x in label],
        "gamma": gamma,
    }


def read_hmix(folder: Path) -> list:
    """H-Mix's categorical soft-label rows, each with its Top-2 Clamp label."""
    from ..hmix import rows

    return [
        hmix_trial(
            row,
            NAME,
            lam=None,
            confidence=None,
            response=soft_label_answer(json.loads(row["response"])),
        )
        for row in rows(folder, SPEC.hmix)
    ]


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _hmix_fields(response: dict, pair: str) -> dict:
    raw = {
        "classSelect": "mostProb" + response["first_class"],
        "prob": _number_text(response["first_prob"]),
        "classSelect2": "secondProb" + (response["second_class"] or "No"),
        "prob2": "" if response["second_prob"] is None else _number_text(response["second_prob"]),
    }
    raw.update({f"improbClassSelect{c}": "1" for c in response["impossible"]})
    return {"response": json.dumps(raw, separators=(",", ":"))}


def _class_name(name: str, value: Any) -> str:
    return as_text(name, value, max_length=50)


class SoftLabel(InterfaceSpec):
    name = NAME
    label = "Soft categorical label"
    order = 40
    demo = {
        "slug": "demo-soft-label",
        "title": "Blended digits: which digit is it?",
        "ask_confidence": False,
    }
    names_classes = False  # offers every class of the dataset
    # Asks which classes the image shows: neither the two mixed classes nor the lam may
    # be told.
    shows = frozenset()
    hides = frozenset({"classes", "lam"})
    hmix = HmixMapping(
        file="hmix_categorical_soft_labels.csv",
        task="spec_conf",
        title="H-Mix: Soft categorical label",
        columns=["subject", "condition", "rt", "task", "response", *SINGLE_HMIX_COLUMNS],
        read=read_hmix,
        fields=_hmix_fields,
    )

    def serve(self, trial: dict, spec: dict, item: Any, grid: list[float], session: Any) -> None:
        super().serve(trial, spec, item, grid, session)
        trial["class_names"] = session.study.stimulus_set.dataset.class_names

    def read_answer(self, data: dict, context: TrialContext) -> Answer:
        """Most probable class and its probability, an optional second class, the
        impossible classes; stored with its Top-2 Clamp soft label."""
        first = text(data, "first_class", max_length=50)
        first_prob = number(data, "first_prob", 0, 100)
        second = text(data, "second_class", max_length=50, required=False, nullable=True)
        second_prob = number(data, "second_prob", 0, 100, required=False, nullable=True)
        impossible = listing(data, "impossible", _class_name, required=False) or []
        names = list(context.class_names)
        unknown = [c for c in [first, second, *impossible] if c and c not in names]
        if unknown:
            raise AnswerError(f"unknown classes: {unknown}")
        if first_prob <= 0:
            raise AnswerError("the most probable class needs a probability > 0")
        if second is None and second_prob not in (None, 0):
            raise AnswerError("a second probability needs a second class")
        if second is not None:
            if second == first:
                raise AnswerError("the second class must differ from the first")
            if second_prob is None:
                raise AnswerError("give the second class a probability")
            if second_prob > first_prob:
                raise AnswerError("the second class cannot be more probable than the first")
        if {first, second} & set(impossible):
            raise AnswerError("a chosen class cannot also be impossible")
        if len(set(impossible)) != len(impossible):
            raise AnswerError("an impossible class is listed twice")
        gamma = context.soft_label_gamma
        label = top2_clamp_label(names, first, first_prob, second, second_prob, impossible, gamma)
        response = {
            "first_class": first,
            "first_prob": first_prob,
            "second_class": second,
            "second_prob": second_prob if second else None,
            "impossible": impossible,
            "soft_label": [round(float(x), 10) for x in label],
            "gamma": gamma,
        }
        return Answer(response, None)

    def evidence(
        self, lam: float | None, confidence: float | None, response: dict
    ) -> Evidence | None:
        return Evidence("soft", response["soft_label"], None)

    def dashboard_charts(self, study: Any, include_excluded: bool) -> list[str]:
        """Soft labels have no perceived lam: the mean label per stimulus, its entropy and
        its agreement with the mixup label, each against the stimulus's true lam."""
        from .. import plots, reports

        rows = reports.soft_label_summary(study, include_excluded)
        if not rows:
            return []
        return [
            plots.soft_label_bars(rows, "Mean soft label per stimulus"),
            plots.soft_label_entropy(rows, "Entropy of the mean label vs true lam"),
            plots.soft_label_agreement(rows, "Agreement with the mixup label vs true lam"),
        ]

    def example_answer(self, trial: dict) -> dict:
        return {"first_class": trial["class_names"][0], "first_prob": 60, "impossible": []}


SPEC = SoftLabel()
