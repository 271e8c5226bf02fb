"""Reading the published H-Mix jsPsych exports into plain trials. Pure Python.

Each interface with an H-Mix file holds its mapping (elicitation.interfaces, the
`hmix` of its spec: file, task, columns, reader, response columns); this module holds
what they share. Each reader returns the trials of one interface in file order, in the
shape our Judgment rows use, plus what is needed to write them back in the H-Mix
column layout.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from datasets.naming import PairKey

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


class NoHmixLayout(LookupError):
    """The interface has no file in the published H-Mix data."""


def mapping(interface: str):
    """The H-Mix mapping of an interface; raises NoHmixLayout (or LookupError for an
    unknown interface)."""
    from . import interfaces

    spec = interfaces.get(interface)
    if spec.hmix is None:
        raise NoHmixLayout(f"{spec.label} has no H-Mix file layout")
    return spec.hmix


def interfaces_with_hmix() -> list[str]:
    """The interfaces the published H-Mix data has a file of, in registry order."""
    from . import interfaces

    return [s.name for s in interfaces.all() if s.hmix is not None]


def __getattr__(name: str) -> dict:
    # READERS, FILES, TASKS by interface, built from the registry when asked for, and
    # read_<interface>, each interface's reader.
    if name.startswith("read_"):
        try:
            return mapping(name.removeprefix("read_")).read
        except LookupError:
            raise AttributeError(name) from None
    built = {
        "READERS": lambda m: m.read,
        "FILES": lambda m: m.file,
        "TASKS": lambda m: m.task,
    }.get(name)
    if built is None:
        raise AttributeError(name)
    return {i: built(mapping(i)) for i in interfaces_with_hmix()}


def hmix_columns(interface: str) -> list[str]:
    """The column layout of the interface's H-Mix file; raises NoHmixLayout."""
    return mapping(interface).columns


def task_name(interface: str, is_repeat: bool) -> str:
    return (REPEAT_PREFIX if is_repeat else "") + mapping(interface).task


def rows(folder: Path, hmix_mapping) -> list[dict]:
    """The rows of a mapping's file that belong to its task (and its repeats)."""
    path = Path(folder) / hmix_mapping.file
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing")
    wanted = {hmix_mapping.task, REPEAT_PREFIX + hmix_mapping.task}
    with path.open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row.get("task") in wanted]


def pair_from_ids(row: dict) -> PairKey:
    return PairKey(row["label1"], int(float(row["id1"])), row["label2"], int(float(row["id2"])))


def common(row: dict, interface: str) -> dict:
    """The HmixTrial fields every interface's row has."""
    return {
        "interface": interface,
        "subject": row["subject"],
        "condition": row["condition"],
        "source_index": int(row["trial_index"]),
        "rt_ms": float(row["rt"]),
        "is_repeat": row["task"].startswith(REPEAT_PREFIX),
    }


def hmix_response_fields(interface: str, response: dict, pair: str = "") -> dict:
    """The interface-specific H-Mix columns for one of our stored responses; raises
    NoHmixLayout for an interface without an H-Mix file."""
    return mapping(interface).fields(response, pair)


def soft_label_answer(raw: dict, *args, **kwargs) -> dict:
    """The H-Mix soft-label response in our schema (interfaces.soft_label)."""
    from .interfaces.soft_label import soft_label_answer as answer

    return answer(raw, *args, **kwargs)
