"""Reading the published H-Mix jsPsych exports into plain trials. Pure Python.

Each reader returns the trials of one interface in file order, in the shape our
Judgment rows use (response payloads of elicitation.answers), plus what is
needed to write them back in the H-Mix column layout.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from datasets.naming import PairKey, parse_pair_name
from datasets.sources import CIFAR10_CLASSES

from .soft_labels import DEFAULT_GAMMA, top2_clamp

FILES = {
    "construct": "hmix_construct_midpoint.csv",
    "select_shuffled": "hmix_select_shuffled_midpoint.csv",
    "infer": "hmix_infer_mixing_factor.csv",
    "soft_label": "hmix_categorical_soft_labels.csv",
}
TASKS = {
    "construct": "select_create",
    "select_shuffled": "select_shuffled",
    "infer": "rate_mixture",
    "soft_label": "spec_conf",
}
REPEAT_PREFIX = "rerun_"


@dataclass(frozen=True)
class HmixTrial:
    interface: str
    subject: str
    condition: str
    source_index: int  # jsPsych trial_index within the subject's run
    rt_ms: float
    is_repeat: bool
    pair: PairKey
    stimulus_lam: float | None  # true lam of a single stimulus; None for grid trials
    response: dict
    lam: float | None
    confidence: float | None


def task_name(interface: str, is_repeat: bool) -> str:
    return (REPEAT_PREFIX if is_repeat else "") + TASKS[interface]


def _rows(folder: Path, interface: str) -> list[dict]:
    path = Path(folder) / FILES[interface]
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing")
    wanted = {TASKS[interface], REPEAT_PREFIX + TASKS[interface]}
    with path.open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row.get("task") in wanted]


def _pair_from_ids(row: dict) -> PairKey:
    return PairKey(row["label1"], int(float(row["id1"])), row["label2"], int(float(row["id2"])))


def _common(row: dict, interface: str) -> dict:
    return {
        "interface": interface,
        "subject": row["subject"],
        "condition": row["condition"],
        "source_index": int(row["trial_index"]),
        "rt_ms": float(row["rt"]),
        "is_repeat": row["task"].startswith(REPEAT_PREFIX),
    }


def read_construct(folder: Path) -> list[HmixTrial]:
    trials = []
    for row in _rows(folder, "construct"):
        start, final = float(row["start_value"]), float(row["final_value"])
        trials.append(
            HmixTrial(
                **_common(row, "construct"),
                pair=parse_pair_name(row["class_pair"]),
                stimulus_lam=None,
                lam=final,
                confidence=None,
                # The export kept no step history: only where the participant started and ended.
                response={"start_lam": start, "final_lam": final, "history": None},
            )
        )
    return trials


def read_select_shuffled(folder: Path) -> list[HmixTrial]:
    trials = []
    for row in _rows(folder, "select_shuffled"):
        chosen = float(json.loads(row["response"])["select"].removeprefix("select"))
        trials.append(
            HmixTrial(
                **_common(row, "select_shuffled"),
                pair=parse_pair_name(row["class_pair"]),
                stimulus_lam=None,
                lam=chosen,
                confidence=None,
                response={"chosen_lam": chosen, "order_shown": None},
            )
        )
    return trials


def read_infer(folder: Path) -> list[HmixTrial]:
    trials = []
    for row in _rows(folder, "infer"):
        answer = json.loads(row["responses"])
        slider, confidence = int(answer["mixingcoeff"]), int(answer["confidence"])
        perceived = 1.0 - slider / 100.0
        trials.append(
            HmixTrial(
                **_common(row, "infer"),
                pair=_pair_from_ids(row),
                stimulus_lam=float(row["mixtureCoeff"]),
                lam=perceived,
                confidence=confidence / 100.0,
                response={"slider": slider, "confidence": confidence, "perceived_lam": perceived},
            )
        )
    return trials


def soft_label_answer(
    raw: dict, classes: tuple[str, ...] = CIFAR10_CLASSES, gamma: float = DEFAULT_GAMMA
) -> dict:
    """The H-Mix response JSON in our soft-label schema, with its Top-2 Clamp label."""
    first = raw["classSelect"].removeprefix("mostProb")
    second = raw.get("classSelect2", "secondProbNo").removeprefix("secondProb")
    second = None if second == "No" else second
    p1 = float(raw["prob"])
    # Kept as recorded: a few answers say "no second class" yet carry a prob2.
    p2 = float(raw["prob2"]) if raw.get("prob2") not in (None, "") else None
    impossible = [k.removeprefix("improbClassSelect") for k in raw if k.startswith("improbClass")]
    label = top2_clamp(
        len(classes),
        classes.index(first),
        p1 / 100.0,
        classes.index(second) if second else None,
        (p2 or 0.0) / 100.0 if second else 0.0,
        [classes.index(c) for c in impossible],
        gamma=gamma,
    )
    return {
        "first_class": first,
        "first_prob": p1,
        "second_class": second,
        "second_prob": p2,
        "impossible": impossible,
        "soft_label": [float(x) for x in label],
        "gamma": gamma,
    }


def read_soft_label(folder: Path) -> list[HmixTrial]:
    trials = []
    for row in _rows(folder, "soft_label"):
        trials.append(
            HmixTrial(
                **_common(row, "soft_label"),
                pair=_pair_from_ids(row),
                stimulus_lam=float(row["mixtureCoeff"]),
                lam=None,
                confidence=None,
                response=soft_label_answer(json.loads(row["response"])),
            )
        )
    return trials


READERS = {
    "construct": read_construct,
    "select_shuffled": read_select_shuffled,
    "infer": read_infer,
    "soft_label": read_soft_label,
}


def hmix_response_fields(interface: str, response: dict) -> dict:
    """The interface-specific H-Mix columns for one of our stored responses."""
    if interface == "construct":
        return {"start_value": response["start_lam"], "final_value": response["final_lam"]}
    if interface == "select_shuffled":
        return {
            "response": json.dumps(
                {"select": f"select{response['chosen_lam']}"}, separators=(",", ":")
            )
        }
    if interface == "infer":
        return {
            "responses": json.dumps(
                {"mixingcoeff": response["slider"], "confidence": response["confidence"]},
                separators=(",", ":"),
            )
        }
    raw = {
        "classSelect": "mostProb" + response["first_class"],
        "prob": _number_text(response["first_prob"]),
        "classSelect2": "secondProb" + (response["second_class"] or "No"),
        "prob2": "" if response["second_prob"] is None else _number_text(response["second_prob"]),
    }
    raw.update({f"improbClassSelect{c}": "1" for c in response["impossible"]})
    return {"response": json.dumps(raw, separators=(",", ":"))}


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
