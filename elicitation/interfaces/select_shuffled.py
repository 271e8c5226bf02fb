"""Select-Shuffled (H-Mix): all grid images of a pair at once, in a random order; the
participant clicks the one perceived as 50/50."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ..answers import (
    Answer,
    AnswerError,
    TrialContext,
    as_text,
    choice_ids,
    grid_index,
    listing,
    text,
)
from ._grid import GridInterface, hmix_trial
from .base import HmixMapping

NAME = "select_shuffled"


def read_hmix(folder: Path) -> list:
    """H-Mix's Select-Shuffled rows: the chosen lam, without the order shown."""
    from ..hmix import rows

    trials = []
    for row in rows(folder, SPEC.hmix):
        chosen = float(json.loads(row["response"])["select"].removeprefix("select"))
        trials.append(
            hmix_trial(row, NAME, lam=chosen, response={"chosen_lam": chosen, "order_shown": None})
        )
    return trials


def _hmix_fields(response: dict, pair: str) -> dict:
    choice = {"select": f"select{response['chosen_lam']}"}
    return {"response": json.dumps(choice, separators=(",", ":"))}


def _choice_id(name: str, value: Any) -> str:
    return as_text(name, value, max_length=64)


class SelectShuffled(GridInterface):
    name = NAME
    label = "Select-Shuffled"
    order = 20
    # The shuffle is the design: which image has which lam must stay hidden.
    shows = frozenset({"classes"})
    hides = frozenset({"lam"})
    demo = {
        "slug": "demo-select",
        "title": "Blended digits: pick the halfway image",
        "ask_confidence": False,
    }
    hmix = HmixMapping(
        file="hmix_select_shuffled_midpoint.csv",
        task="select_shuffled",
        title="H-Mix: Select-Shuffled midpoint",
        columns=["subject", "condition", "rt", "task", "class_pair", "response"],
        read=read_hmix,
        fields=_hmix_fields,
    )

    def trial_spec(self, study: Any, grid: list[float], rng: random.Random) -> dict:
        return {"order": rng.sample(grid, len(grid))}

    def serve(self, trial: dict, spec: dict, item: Any, grid: list[float], session: Any) -> None:
        """Images in the order shown, each with an id only the server maps back to its
        lam (answers.choice_ids)."""
        order = spec["order"]
        ids = choice_ids(session.pk, session.position, order)
        trial["images"] = [
            {"choice": choice, "url": item.images[round(lam, 4)]}
            for choice, lam in zip(ids, order, strict=True)
        ]

    def read_answer(self, data: dict, context: TrialContext) -> Answer:
        """The page answers with the chosen image's id and the ids in the order it showed
        them (choice_ids); stored as the chosen lam and that order in lams."""
        chosen = text(data, "choice", max_length=64)
        order_shown = listing(data, "order_shown", _choice_id, max_length=100)
        shown = context.trial["order"]
        ids = choice_ids(context.session_id, context.trial_index, shown)
        if order_shown != ids:
            raise AnswerError("order_shown is not the order this trial showed")
        if chosen not in ids:
            raise AnswerError("choice: not one of this trial's images")
        lam = context.grid[grid_index(shown[ids.index(chosen)], context.grid)]
        return Answer({"chosen_lam": lam, "order_shown": list(shown)}, lam)

    def example_answer(self, trial: dict) -> dict:
        ids = [im["choice"] for im in trial["images"]]
        return {"choice": ids[2], "order_shown": ids}


SPEC = SelectShuffled()
