"""A small client for the parts of Prolific's REST API a study's payment needs
(https://docs.prolific.com/api-reference): listing a study's submissions, approving and
rejecting them, and setting up and paying bonuses. No Django import: the base URL,
token and request rate are arguments, so tests point it at a local server.

Retries follow Prolific's "Managing high loads" guide: a 429 is transient and is
retried after the server's Retry-After (or an exponential back-off without one);
server errors (5xx) and lost connections are retried with exponential back-off only
for requests Prolific documents as idempotent or that change nothing when repeated
(listing, a submission's transition, bulk approval). Setting up a bonus and paying it
are not idempotent (paying twice pays twice): those are sent once, and an answer that
never came raises OutcomeUnknown for the caller's ledger to handle.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

DEFAULT_API_URL = "https://api.prolific.com/api/v1/"

# Prolific's rejection categories (the `rejection_category` enum of
# POST /submissions/{id}/transition/).
REJECTION_CATEGORIES = (
    "TOO_QUICKLY",
    "TOO_SLOWLY",
    "FAILED_INSTRUCTIONS",
    "INCOMP_LONGITUDINAL",
    "FAILED_CHECK",
    "LOW_EFFORT",
    "MALINGERING",
    "NO_CODE",
    "BAD_CODE",
    "NO_DATA",
    "UNSUPP_DEVICE",
    "OTHER",
)
# Prolific refuses a rejection whose message to the participant is shorter.
MIN_REJECTION_MESSAGE = 100
# Prolific recommends at most this many ids per bulk call.
BULK_LIMIT = 1000


class ProlificError(Exception):
    """Prolific answered with an error (`status`, its decoded body as `detail`)."""

    def __init__(self, status: int, detail: Any, message: str = "") -> None:
        self.status = status
        self.detail = detail
        super().__init__(message or f"Prolific answered {status}: {detail}")


class OutcomeUnknown(Exception):
    """A request that is not safe to repeat got no answer (a lost connection, a
    timeout, a server error): Prolific may or may not have acted on it."""


class InvalidRequest(ValueError):
    """A request refused here before it was sent (e.g. a rejection message under
    100 characters): nothing was asked of Prolific."""


@dataclass(frozen=True)
class Submission:
    """One row of GET /studies/{id}/submissions/: `id` is the SESSION_ID Prolific
    passed to the study link, `participant_id` the PROLIFIC_PID."""

    id: str
    participant_id: str
    status: str
    started_at: str | None = None
    completed_at: str | None = None
    study_code: str | None = None

    @classmethod
    def from_api(cls, row: dict) -> Submission:
        return cls(
            id=str(row["id"]),
            participant_id=str(row.get("participant_id") or row.get("participant") or ""),
            status=str(row.get("status", "")),
            started_at=row.get("started_at"),
            completed_at=row.get("completed_at"),
            study_code=row.get("study_code") or row.get("entered_code"),
        )


def validate_rejection(message: str, category: str) -> None:
    """Raise InvalidRequest unless `message` (sent to the participant) has at least
    MIN_REJECTION_MESSAGE characters once stripped and `category` is one of
    REJECTION_CATEGORIES, Prolific's own rules for a rejection."""
    if len((message or "").strip()) < MIN_REJECTION_MESSAGE:
        raise InvalidRequest(
            f"Prolific needs a rejection message of at least {MIN_REJECTION_MESSAGE} "
            f"characters (this one has {len((message or '').strip())})."
        )
    if category not in REJECTION_CATEGORIES:
        raise InvalidRequest(
            f"Unknown rejection category {category!r}: one of {', '.join(REJECTION_CATEGORIES)}."
        )


def format_amount(cents: int) -> str:
    """Cents as the decimal amount Prolific's csv_bonuses expects ("1.50" for 150):
    Prolific reads "30" as 30.00 in the study's currency, never as cents."""
    if not isinstance(cents, int) or cents <= 0:
        raise InvalidRequest(f"A bonus must be a positive whole number of cents, not {cents!r}.")
    return str((Decimal(cents) / 100).quantize(Decimal("0.01")))


def bonus_csv(lines: list[tuple[str, int]]) -> str:
    """The csv_bonuses text for (participant or submission id, cents) pairs, one
    "<id>,<amount>" line each."""
    for pid, _cents in lines:
        if not pid or "," in pid or "\n" in pid:
            raise InvalidRequest(f"Not a Prolific id: {pid!r}.")
    return "\n".join(f"{pid},{format_amount(cents)}" for pid, cents in lines)


class RateLimiter:
    """At most `per_second` requests per second from this client (thread-safe): the
    calls are spaced evenly, so a bulk action never arrives as a burst."""

    def __init__(
        self,
        per_second: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self.clock = clock
        self.sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self.clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self.sleep(start - now)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date, RFC
    9110 10.2.3); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class ProlificClient:
    """Prolific's API with `Authorization: Token <token>`.

    `max_attempts` bounds the tries of one request; waits come from Retry-After,
    capped at `max_wait` seconds, else `backoff` * 2**attempt with jitter. `sleep`
    and `transport` are for tests (a recorder, httpx.MockTransport)."""

    def __init__(
        self,
        token: str,
        base_url: str = DEFAULT_API_URL,
        *,
        requests_per_second: float = 4.0,
        max_attempts: int = 5,
        backoff: float = 0.5,
        max_wait: float = 60.0,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not token:
            raise InvalidRequest("No Prolific API token is configured.")
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.max_wait = max_wait
        self.sleep = sleep
        self.limiter = RateLimiter(requests_per_second, sleep=sleep)
        self.http = httpx.Client(
            base_url=base_url if base_url.endswith("/") else base_url + "/",
            headers={"Authorization": f"Token {token}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ProlificClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- transport ------------------------------------------------------------------

    def _wait_for(self, attempt: int, response: httpx.Response | None) -> float:
        given = retry_after_seconds(response.headers.get("Retry-After")) if response else None
        if given is None:
            given = self.backoff * (2**attempt) * (1 + random.random() / 2)
        return min(given, self.max_wait)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict | None = None,
        repeatable: bool,
    ) -> Any:
        """Send one API request and return its decoded JSON body (None when empty).

        A 429 is always retried (Prolific did not act on it). Server errors and lost
        connections are retried only when `repeatable`; otherwise they raise
        OutcomeUnknown. Other 4xx raise ProlificError at once."""
        path = path.lstrip("/")
        for attempt in range(self.max_attempts):
            last = attempt == self.max_attempts - 1
            self.limiter.wait()
            try:
                response = self.http.request(method, path, json=json, params=params)
            except httpx.TransportError as error:
                if not repeatable:
                    raise OutcomeUnknown(f"{method} {path}: no answer ({error})") from error
                if last:
                    raise
                self.sleep(self._wait_for(attempt, None))
                continue
            if response.status_code == 429 and not last:
                self.sleep(self._wait_for(attempt, response))
                continue
            if response.status_code >= 500:
                if not repeatable:
                    raise OutcomeUnknown(
                        f"{method} {path}: Prolific answered {response.status_code}"
                    )
                if not last:
                    self.sleep(self._wait_for(attempt, response))
                    continue
            if response.status_code >= 400:
                raise ProlificError(response.status_code, _body(response))
            return _body(response)
        raise AssertionError("unreachable")  # pragma: no cover

    # --- submissions ----------------------------------------------------------------

    def iter_submissions(self, study_id: str, page_size: int = 200) -> Iterator[Submission]:
        """Every submission of Prolific study `study_id`, page by page: pages are
        followed through the answer's `_links.next.href` (Prolific's own
        pagination), or `next` where an answer gives it there."""
        path: str | None = f"studies/{study_id}/submissions/"
        params: dict | None = {"page_size": page_size}
        seen = 0
        while path:
            page = self.request("GET", path, params=params, repeatable=True) or {}
            rows = page.get("results", [])
            for row in rows:
                yield Submission.from_api(row)
            seen += len(rows)
            link = (page.get("_links") or {}).get("next") or page.get("next")
            href = link.get("href") if isinstance(link, dict) else link
            if not href or not rows:
                break
            base = str(self.http.base_url)
            path = href[len(base) :] if href.startswith(base) else href
            params = None  # the link carries the page and its size

    def list_submissions(self, study_id: str) -> list[Submission]:
        return list(self.iter_submissions(study_id))

    def approve(self, submission_id: str) -> Any:
        """Approve one submission (documented idempotent: repeating it changes nothing)."""
        return self.request(
            "POST",
            f"submissions/{submission_id}/transition/",
            json={"action": "APPROVE"},
            repeatable=True,
        )

    def reject(self, submission_id: str, message: str, category: str) -> Any:
        """Reject one submission; `message` (to the participant, 100+ characters) and
        `category` (REJECTION_CATEGORIES) are checked here first (InvalidRequest)."""
        validate_rejection(message, category)
        return self.request(
            "POST",
            f"submissions/{submission_id}/transition/",
            json={"action": "REJECT", "message": message.strip(), "rejection_category": category},
            repeatable=True,
        )

    def bulk_approve(self, submission_ids: list[str]) -> Any:
        """Approve many submissions in one call (at most BULK_LIMIT ids), the way
        Prolific recommends for paying many people (its approvals are processed
        asynchronously). Approving an approved submission changes nothing, so the
        call is repeated after a lost answer."""
        if not submission_ids:
            raise InvalidRequest("No submissions to approve.")
        if len(submission_ids) > BULK_LIMIT:
            raise InvalidRequest(f"At most {BULK_LIMIT} submissions per bulk approval.")
        return self.request(
            "POST",
            "submissions/bulk-approve/",
            json={"submission_ids": list(submission_ids)},
            repeatable=True,
        )

    # --- bonuses --------------------------------------------------------------------

    def create_bonuses(self, study_id: str, lines: list[tuple[str, int]]) -> str:
        """Set up bonuses ((participant id, cents) pairs) for Prolific study
        `study_id` and return the bulk bonus payment's id. Nothing is paid yet. Not
        idempotent: sent once (OutcomeUnknown when no answer came)."""
        if not lines:
            raise InvalidRequest("No bonuses to set up.")
        body = self.request(
            "POST",
            "submissions/bonus-payments/",
            json={"study_id": study_id, "csv_bonuses": bonus_csv(lines)},
            repeatable=False,
        )
        if not isinstance(body, dict) or not body.get("id"):
            raise ProlificError(200, body, "Prolific's bonus set-up answer has no id.")
        return str(body["id"])

    def pay_bonuses(self, bonus_id: str) -> Any:
        """Pay a bulk bonus payment set up by create_bonuses. Prolific documents this
        call as not idempotent (a second call pays again): sent once."""
        return self.request(
            "POST", f"bulk-bonus-payments/{bonus_id}/pay/", json={}, repeatable=False
        )

    def get_submission(self, submission_id: str) -> dict:
        """GET /submissions/{id}/: its `bonus_payments` lists the bonuses paid on it, in
        cents (Prolific's only record of paid bonuses the API shows)."""
        return self.request("GET", f"submissions/{submission_id}/", repeatable=True) or {}


def _body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def already_paid(error: ProlificError) -> bool:
    """Whether Prolific refused a pay call because the bulk bonus payment was paid
    already (its error text says so)."""
    text = str(error.detail).lower()
    return error.status in (400, 409) and "already" in text and "paid" in text
