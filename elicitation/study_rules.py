"""What makes a study's participant flow valid, and what may no longer change once
participants have started it. Plain functions on plain values (no database): the
model's clean(), the admin's form and services.save_study all ask these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

QUIZ_KEYS = {"question", "options", "answer"}

# Fields a running session depends on. Its condition (dealt from the stimulus set into
# condition_count batches) and trial order are fixed when it starts; its answers are
# read and labelled by the interface, with or without confidence, with the study's
# soft-label gamma. Changing any of them would break the pages of the participants
# already in the study or mix two designs in one data set.
LOCKED_ONCE_STARTED = {
    "interface": "interface",
    "stimulus_set_id": "stimulus set",
    "condition_count": "number of conditions",
    "ask_confidence": "whether confidence is asked",
    "soft_label_gamma": "soft-label gamma",
    "design": "fixed or adaptive design",
    "adaptive_noise": "the adaptive design's noise levels",
}


def _text_list_errors(value: Any, what: str, *, at_least: int) -> list[str]:
    if not isinstance(value, list):
        return [f"must be a list of {what}, not {type(value).__name__}"]
    errors = [
        f"item {i + 1} must be non-empty text"
        for i, item in enumerate(value)
        if not isinstance(item, str) or not item.strip()
    ]
    if len(value) < at_least:
        errors.append(f"give at least {at_least} {what}")
    return errors


def quiz_errors(quiz: Any) -> list[str]:
    """Problems with a quiz: a list of {"question": text, "options": [2+ distinct
    texts], "answer": index of the correct option (0-based)}. An empty list is no quiz."""
    if not isinstance(quiz, list):
        return [f"must be a list of questions, not {type(quiz).__name__}"]
    errors = []
    for number, item in enumerate(quiz, start=1):
        where = f"question {number}"
        if not isinstance(item, dict):
            errors.append(f"{where} must be an object with question, options and answer")
            continue
        if missing := sorted(QUIZ_KEYS - item.keys()):
            errors.append(f"{where} lacks {', '.join(missing)}")
        if unknown := sorted(item.keys() - QUIZ_KEYS):
            errors.append(f"{where} has unknown keys {', '.join(unknown)}")
        question, options, answer = item.get("question"), item.get("options"), item.get("answer")
        if "question" in item and (not isinstance(question, str) or not question.strip()):
            errors.append(f"{where}: the question must be non-empty text")
        if "options" in item:
            if not isinstance(options, list) or not all(
                isinstance(o, str) and o.strip() for o in options
            ):
                errors.append(f"{where}: options must be a list of non-empty texts")
                options = None
            elif len(options) < 2:
                errors.append(f"{where}: give at least two options")
            elif len({o.strip() for o in options}) != len(options):
                errors.append(f"{where}: two options are the same")
        if "answer" in item:
            # bool is an int in Python; True is not an option number.
            if not isinstance(answer, int) or isinstance(answer, bool):
                errors.append(f"{where}: the answer must be the number of an option")
            elif isinstance(options, list) and not 0 <= answer < len(options):
                errors.append(
                    f"{where}: the answer must be one of its {len(options)} options, "
                    "or nobody can pass the quiz"
                )
    return errors


def flow_errors(
    consent_items: Any,
    instruction_pages: Any,
    quiz: Any,
    feedback_questions: Any,
    *,
    live: bool = True,
) -> dict[str, list[str]]:
    """Per field, what is wrong with a study's participant flow (empty: nothing).

    Consent: statements to tick, each non-empty text (a single string would become
    one checkbox per character). Instructions: pages of non-empty text. A live study
    needs at least one of each; a draft or closed one (an import of finished data) may
    have none. Quiz: see quiz_errors. Feedback: non-empty texts, may be none.
    """
    needed = 1 if live else 0
    errors = {
        "consent_items": _text_list_errors(consent_items, "consent statements", at_least=needed),
        "instruction_pages": _text_list_errors(
            instruction_pages, "instruction pages", at_least=needed
        ),
        "quiz": quiz_errors(quiz),
        "feedback_questions": _text_list_errors(
            feedback_questions, "feedback questions", at_least=0
        ),
    }
    return {field: messages for field, messages in errors.items() if messages}


def grading(quiz: Sequence[dict]) -> list[tuple[int, int]]:
    """What grading a quiz depends on: per question, its number of options and the
    index of the right one (a valid quiz). Wording may change; this may not."""
    return [(len(q["options"]), q["answer"]) for q in quiz]


def disclosure_conflicts(interface: str, others: Sequence[tuple[str, str]]) -> list[str]:
    """Why a study of `interface` may not be live beside `others`, the (slug, interface)
    of the live studies that show the same images (empty: it may).

    A stimulus's image has the same bytes in every study that shows it, so whoever
    takes part in two of them can match images by content and carry what one study
    shows on purpose (interfaces.DISCLOSURES: the class pair, each image's lam) into
    the other, where it must stay hidden. E.g. Construct's grid in step order tells
    every image's lam, which undoes Select-Shuffled's shuffle; 2AFC names the pair the
    soft-label trial keeps from its participant. Raises LookupError for an unknown
    interface."""
    from . import interfaces
    from .interfaces import DISCLOSURES

    mine = interfaces.get(interface)
    problems = []
    for slug, other_name in others:
        other = interfaces.get(other_name)
        for shower, hider in ((other, mine), (mine, other)):
            for what in sorted(shower.shows & hider.hides):
                shown_by = f"the live study {slug}" if shower is other else "this study"
                hidden_by = f"the live study {slug}" if hider is other else "this study"
                problems.append(
                    f"{shown_by} ({shower.label}) {DISCLOSURES[what]}, which {hidden_by} "
                    f"({hider.label}) must hide, and both show the same images: close "
                    f"{slug} first, or give this study a stimulus set of other pairs"
                )
    return problems


def locked_changes(stored: dict, edited: dict) -> list[str]:
    """Names (for people) of what an edit changes that running sessions depend on.

    stored, edited: the study's field values before and after the edit, keyed as in
    LOCKED_ONCE_STARTED plus "quiz". Only meaningful for a study with sessions."""
    changed = [
        label for field, label in LOCKED_ONCE_STARTED.items() if stored[field] != edited[field]
    ]
    try:
        same_grading = grading(stored["quiz"]) == grading(edited["quiz"])
    except (KeyError, TypeError):
        same_grading = stored["quiz"] == edited["quiz"]
    if not same_grading:
        changed.append("quiz questions, options or answers (how the quiz is graded)")
    return changed


# The adaptive design's noise levels (adaptive.model.DEFAULT_NOISE's shape) that the
# likelihoods read: what each must be for the posterior to stay a distribution.
_NOISE_RULES = {
    "sd": ("a number above 0", lambda x: x > 0),
    "m_sd": ("a number above 0", lambda x: x > 0),
    "log_k_sd": ("a number above 0", lambda x: x > 0),
    "person_sd": ("a number of at least 0", lambda x: x >= 0),
    "lapse": ("a number from 0 to below 1", lambda x: 0 <= x < 1),
    "m_mean": ("a number from 0 to 1", lambda x: 0 <= x <= 1),
    "log_k_mean": ("a number", lambda x: True),
    "start_bias": ("a number", lambda x: True),
}
_NOISE_SECTIONS = ("afc", "infer", "construct", "select_shuffled", "prior")


def noise_errors(noise: Any) -> list[str]:
    """Problems with an adaptive study's noise levels (adaptive.hmix_fit.fit_noise's
    dict; {} means the defaults): an object whose interface and prior sections, where
    given, are objects whose sd's are above 0, lapses in [0, 1) and the prior's m_mean in
    [0, 1], all finite numbers. Other keys (the fit's extras) are left alone."""
    import math

    if not isinstance(noise, dict):
        return [f"must be an object of noise levels, not {type(noise).__name__}"]
    errors = []
    for section in _NOISE_SECTIONS:
        if section not in noise:
            continue
        values = noise[section]
        if not isinstance(values, dict):
            errors.append(f"{section} must be an object, not {type(values).__name__}")
            continue
        for name, (what, ok) in _NOISE_RULES.items():
            if name not in values:
                continue
            x = values[name]
            number = isinstance(x, int | float) and not isinstance(x, bool)
            if not (number and math.isfinite(x) and ok(x)):
                errors.append(f"{section}.{name} must be {what}, not {x!r}")
    return errors
