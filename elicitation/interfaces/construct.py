"""Construct (H-Mix): one image of a pair's grid, stepped with g/h (or buttons) until
it looks 50/50; the final lam is the midpoint."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from ..answers import Answer, AnswerError, TrialContext, grid_index, listing, value_of
from ..answers import grid_step as _grid_step
from ._grid import GridInterface, hmix_trial
from .base import HmixMapping

NAME = "construct"
START_LAMS = ("0.1", "0.9")


def read_hmix(folder: Path) -> list:
    """H-Mix's Construct rows: the export kept no step history, only start and end."""
    from ..hmix import rows

    trials = []
    for row in rows(folder, SPEC.hmix):
        start, final = float(row["start_value"]), float(row["final_value"])
        trials.append(
            hmix_trial(
                row,
                NAME,
                lam=final,
                response={"start_lam": start, "final_lam": final, "history": None},
            )
        )
    return trials


class Construct(GridInterface):
    name = NAME
    label = "Construct"
    order = 10
    # Its steps come in grid order (step 0 is lam 0.0, the last lam 1.0), so every image's
    # lam is plain to see: nothing about the pair is hidden.
    shows = frozenset({"classes", "lam"})
    hides = frozenset()
    demo = {
        "slug": "demo-construct",
        "title": "Blended digits: find the halfway image",
        "ask_confidence": True,
    }
    hmix = HmixMapping(
        file="hmix_construct_midpoint.csv",
        task="select_create",
        title="H-Mix: Construct midpoint",
        columns=["subject", "condition", "rt", "task", "class_pair", "start_value", "final_value"],
        read=read_hmix,
        fields=lambda response, pair: {
            "start_value": response["start_lam"],
            "final_value": response["final_lam"],
        },
    )

    def trial_spec(self, study: Any, grid: list[float], rng: random.Random) -> dict:
        start = study.construct_start
        target = float(rng.choice(START_LAMS) if start == "random" else start)
        # A CutMix grid's steps are effective lams (0.0938 for 0.1 at 32x32).
        return {"start_lam": min(grid, key=lambda lam: abs(lam - target))}

    def serve(self, trial: dict, spec: dict, item: Any, grid: list[float], session: Any) -> None:
        trial["images"] = [{"url": item.images[round(lam, 4)]} for lam in grid]
        trial["start_step"] = grid_index(spec["start_lam"], grid)

    def read_answer(self, data: dict, context: TrialContext) -> Answer:
        """The page knows the grid's steps (0 = lam 0.0, the last = lam 1.0), never their
        lams, so it answers in steps: where it started, where it ended, every step shown
        in order. Stored in lams, as H-Mix records them."""
        grid = context.grid
        start = _grid_step("start_step", value_of(data, "start_step"), grid)
        final = _grid_step("final_step", value_of(data, "final_step"), grid)
        steps = listing(
            data, "steps", lambda n, v: _grid_step(n, v, grid), min_length=1, max_length=500
        )
        if start != grid_index(context.trial["start_lam"], grid):
            raise AnswerError("start_step is not the step this trial started at")
        if steps[0] != start:
            raise AnswerError("steps must begin at start_step")
        if steps[-1] != final:
            raise AnswerError("steps must end at final_step")
        if any(abs(b - a) != 1 for a, b in zip(steps, steps[1:], strict=False)):
            raise AnswerError("steps may only move one grid step at a time")
        response = {
            "start_lam": grid[start],
            "final_lam": grid[final],
            "history": [grid[i] for i in steps],
        }
        return Answer(response, grid[final])

    def example_answer(self, trial: dict) -> dict:
        start = trial["start_step"]
        final = start + 1 if start < len(trial["images"]) // 2 else start - 1
        return {"start_step": start, "final_step": final, "steps": [start, final]}


SPEC = Construct()
