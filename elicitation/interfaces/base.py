"""What an elicitation interface is, as the registry holds it: one InterfaceSpec per
module of this package. Everything the platform does differently per interface asks
its spec; nothing else branches on interface names (DESIGN section 5)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..answers import Answer, TrialContext


@dataclass(frozen=True)
class Evidence:
    """What one judgment says for the label policies (training.policies):

    - kind "midpoint": value is the lam of the pair's first image perceived as 50/50
      (one per pair, applies to every stimulus of the pair);
    - kind "perceived": value is the perceived share of class 1 at the judged stimulus
      (0-1; a 2AFC answer is 1.0 or 0.0, a binary response the logistic fit takes as is);
    - kind "soft": value is a K-vector soft label of the judged stimulus.
    confidence is 0-1 or None."""

    kind: str
    value: Any
    confidence: float | None


@dataclass(frozen=True)
class HmixMapping:
    """How an interface's judgments read from and write to the published H-Mix CSVs
    (Collins et al., UAI 2023): the file, its jsPsych task name, its column layout, the
    reader (folder -> HmixTrial list, in file order) and the interface-specific columns
    of one stored response (response, pair name -> {column: value})."""

    file: str
    task: str
    title: str
    columns: list[str]
    read: Callable[[Path], list]
    fields: Callable[[dict, str], dict]


# What a trial can tell a participant about its stimuli, beyond the pixels. Each
# interface shows some on purpose and must hide others (InterfaceSpec.shows / hides).
# An image has the same bytes in every study that shows it, so a participant of two
# live studies on one stimulus set could match images by their content and carry
# what one study shows into the other: opening a study is refused while another live
# study showing the same images shows what it hides (study_rules.disclosure_conflicts).
DISCLOSURES = {
    "classes": "names the two mixed classes",
    "lam": "tells the lam of each image (its place on the grid)",
}


class InterfaceSpec:
    """Base of every interface: override what differs.

    name: the stored value (Study.interface, Judgment.interface); label: what people read.
    grid: one trial per pair showing its lam grid (else one trial per stimulus).
    names_classes: the trial names the pair's two classes.
    own_confidence: the answer carries its own confidence (the study's separate
    confidence block is not shown).
    shows / hides: which DISCLOSURES a trial makes on purpose / must keep from the
    participant (disjoint; "classes" is shown exactly when names_classes)."""

    name: str = ""
    label: str = ""
    order: int = 100  # position in choices and menus
    grid: bool = False
    names_classes: bool = True
    own_confidence: bool = False
    shows: frozenset[str] = frozenset({"classes"})
    hides: frozenset[str] = frozenset({"lam"})
    hmix: HmixMapping | None = None
    # The study `manage.py setup_demo` makes of it: {"slug", "title", "ask_confidence"}.
    demo: dict | None = None
    # The trial screen's JavaScript module (static/js/interfaces/<name>.js) and, where the
    # interface needs markup of its own, its template.
    template: str = ""

    def trial_spec(self, study: Any, grid: list[float], rng: random.Random) -> dict:
        """What a trial shows, fixed when the session starts (stored in its trial order,
        so a reload shows the same thing)."""
        return {}

    def serve(self, trial: dict, spec: dict, item: Any, grid: list[float], session: Any) -> None:
        """Fill the blinded trial payload: nothing beyond what the page shows. `item` is
        the catalog's TrialItem (images keyed by lam), `spec` the trial order entry."""
        [trial["image"]] = item.images.values()

    def read_answer(self, data: dict, context: TrialContext) -> Answer:
        """The answer checked against what the trial showed; raises answers.AnswerError."""
        raise NotImplementedError

    def example_answer(self, trial: dict) -> dict:
        """A valid answer to the served `trial` as the page builds it (the contract test
        and benches answer with it)."""
        raise NotImplementedError

    def evidence(
        self, lam: float | None, confidence: float | None, response: dict
    ) -> Evidence | None:
        """What a stored judgment yields for label policies and analytics (None: nothing)."""
        return None

    def dashboard_charts(self, study: Any, include_excluded: bool) -> list[str]:
        """The dashboard's SVG charts for a study of this interface."""
        return []
