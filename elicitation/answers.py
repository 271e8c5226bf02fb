"""Validation of what participants send with each answer: the envelope every
interface shares and the field readers the interfaces' answer checks use (each
interface's own check is its module's read_answer, elicitation.interfaces).

Plain functions rather than DRF serializers: this runs for every saved answer, and a
serializer deep-copies its fields each time one is built, which was a quarter of a
save's CPU under load. Messages name the field first ("rt_ms: ..."), as the page and
the analysts read them.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.utils.crypto import salted_hmac

from datasets.naming import format_lam

LAM_TOLERANCE = 1e-6
MAX_RT_MS = 24 * 3600 * 1000
# Client clocks are epoch milliseconds from the page's Date.now(): ECMAScript's time
# values end at 8.64e15 ms (ECMA-262, "Time Values and Time Range"), well inside the
# BigIntegerField columns they are stored in.
MAX_CLIENT_TIME_MS = 8_640_000_000_000_000
# Judgment.trial_index is a PositiveIntegerField (PostgreSQL integer).
MAX_TRIAL_INDEX = 2**31 - 1
MISSING = object()


class AnswerError(ValueError):
    """An answer refused as it stands; the message says which field and why."""


# --- Fields ------------------------------------------------------------------------


def _value(data: dict, name: str, required: bool, nullable: bool) -> Any:
    value = data.get(name, MISSING)
    if value is MISSING and required:
        raise AnswerError(f"{name}: This field is required.")
    if value is None and not nullable:
        raise AnswerError(f"{name}: This field may not be null.")
    return value


def _as_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AnswerError(f"{name}: A valid number is required.")
    try:
        value = float(value)  # an integer beyond a double's range overflows here
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise AnswerError(f"{name}: A finite number is required.")
    return value


def _as_integer(name: str, value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON numbers from a page: 60.0 is 60
    if isinstance(value, bool) or not isinstance(value, int):
        raise AnswerError(f"{name}: A valid integer is required.")
    return value


def _bounded(
    data: dict,
    name: str,
    convert: Callable[[str, Any], float],
    low: float | None,
    high: float | None,
    required: bool,
    nullable: bool,
) -> Any:
    value = _value(data, name, required, nullable)
    if value is MISSING or value is None:
        return None
    value = convert(name, value)
    if low is not None and value < low:
        raise AnswerError(f"{name}: Ensure this value is greater than or equal to {low}.")
    if high is not None and value > high:
        raise AnswerError(f"{name}: Ensure this value is less than or equal to {high}.")
    return value


def number(
    data: dict,
    name: str,
    low: float | None = None,
    high: float | None = None,
    required: bool = True,
    nullable: bool = False,
) -> float | None:
    return _bounded(data, name, _as_number, low, high, required, nullable)


def integer(
    data: dict,
    name: str,
    low: int | None = None,
    high: int | None = None,
    required: bool = True,
    nullable: bool = False,
) -> int | None:
    return _bounded(data, name, _as_integer, low, high, required, nullable)


def text(
    data: dict, name: str, max_length: int, required: bool = True, nullable: bool = False
) -> str | None:
    value = _value(data, name, required, nullable)
    if value is MISSING or value is None:
        return None
    return _as_text(name, value, max_length)


def value_of(data: dict, name: str) -> Any:
    """A required, non-null field's raw value; raises AnswerError."""
    return _value(data, name, required=True, nullable=False)


def as_text(name: str, value: Any, max_length: int) -> str:
    """A non-blank string of at most max_length characters; raises AnswerError."""
    return _as_text(name, value, max_length)


def _as_text(name: str, value: Any, max_length: int) -> str:
    if not isinstance(value, str):
        raise AnswerError(f"{name}: Not a valid string.")
    if not value.strip():
        raise AnswerError(f"{name}: This field may not be blank.")
    if len(value) > max_length:
        raise AnswerError(f"{name}: Ensure this field has no more than {max_length} characters.")
    return value


def boolean(data: dict, name: str) -> bool:
    value = _value(data, name, required=True, nullable=False)
    if not isinstance(value, bool):
        raise AnswerError(f"{name}: Must be a valid boolean.")
    return value


def listing(
    data: dict,
    name: str,
    item: Callable[[str, Any], Any],
    min_length: int = 0,
    max_length: int = 1000,
    required: bool = True,
) -> list | None:
    """A list whose items pass `item(name, value)`."""
    value = _value(data, name, required, nullable=False)
    if value is MISSING:
        return None
    if not isinstance(value, list):
        raise AnswerError(f"{name}: Expected a list of items.")
    if not min_length <= len(value) <= max_length:
        raise AnswerError(f"{name}: Expected between {min_length} and {max_length} items.")
    return [item(name, entry) for entry in value]


# --- The envelope --------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """What every interface sends around its answer."""

    session: str
    trial_index: int
    idempotency_key: uuid.UUID
    rt_ms: float
    client_started_at: int | None
    client_answered_at: int | None
    confidence: int | None  # 0-100, for studies that ask for a separate confidence
    response: dict


def read_envelope(payload: dict) -> Envelope:
    key = _value(payload, "idempotency_key", required=True, nullable=False)
    try:
        idempotency_key = uuid.UUID(key) if isinstance(key, str) else None
    except ValueError:
        idempotency_key = None
    if idempotency_key is None:
        raise AnswerError("idempotency_key: Must be a valid UUID.")
    response = _value(payload, "response", required=True, nullable=False)
    if not isinstance(response, dict):
        raise AnswerError("response: Expected a dictionary of items.")
    return Envelope(
        session=text(payload, "session", max_length=64),
        trial_index=integer(payload, "trial_index", low=0, high=MAX_TRIAL_INDEX),
        idempotency_key=idempotency_key,
        rt_ms=number(payload, "rt_ms", low=0.001, high=MAX_RT_MS),
        client_started_at=integer(
            payload, "client_started_at", 0, MAX_CLIENT_TIME_MS, required=False, nullable=True
        ),
        client_answered_at=integer(
            payload, "client_answered_at", 0, MAX_CLIENT_TIME_MS, required=False, nullable=True
        ),
        confidence=integer(payload, "confidence", 0, 100, required=False, nullable=True),
        response=response,
    )


# --- What an interface's answer check sees and returns ------------------------------------


@dataclass(frozen=True)
class TrialContext:
    """What the trial showed: its entry in the session's trial order, the stimulus
    set's lam grid, the dataset's class names, the study's soft-label gamma, and the
    session's id and the trial's index (which a Select-Shuffled trial's ids derive from),
    and the lam of the stimulus it showed (None for grid trials)."""

    trial: dict
    grid: list[float]
    class_names: list[str]
    soft_label_gamma: float
    session_id: int
    trial_index: int
    stimulus_lam: float | None = None  # the shown stimulus's lam (single interfaces)


@dataclass(frozen=True)
class Answer:
    response: dict  # stored as Judgment.response
    lam: float | None  # chosen (grid) or perceived (Infer) lam of the pair's first image
    confidence: float | None = None  # 0-1, for answers with their own confidence slider


def grid_index(value: float, grid: list[float]) -> int:
    """Position of value on the stimulus set's lam grid."""
    for i, lam in enumerate(grid):
        if abs(lam - value) < LAM_TOLERANCE:
            return i
    raise AnswerError(f"lam {value} is not on the grid {grid}")


def grid_step(name: str, value: Any, grid: list[float]) -> int:
    """A step index on the grid (0 = its first lam); raises AnswerError."""
    step = _as_integer(name, value)
    if not 0 <= step < len(grid):
        raise AnswerError(f"{name}: step {step} is not on the grid (0 to {len(grid) - 1})")
    return step


CHOICE_SALT = "elicitation.select-shuffled-choice"


def choice_ids(session_id: int, trial_index: int, lams: Sequence[float]) -> list[str]:
    """Select-Shuffled: the opaque id the page answers with for each image, one per lam
    of `lams`. An HMAC (SECRET_KEY) of the session, the trial and the lam, so ids differ
    in every trial and tell a reader of the page nothing of the lams, and the server
    recomputes them rather than storing them."""
    return [
        salted_hmac(
            CHOICE_SALT, f"{session_id}:{trial_index}:{format_lam(lam)}", algorithm="sha256"
        ).hexdigest()[:16]
        for lam in lams
    ]
