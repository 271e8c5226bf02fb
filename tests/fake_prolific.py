"""A local stand-in for the parts of Prolific's API the recruitment app uses
(https://docs.prolific.com/api-reference), with in-memory state, so no test ever
calls the real service.

Implemented: GET /studies/{id}/submissions/ (paged with page/page_size and
`_links.next.href`), GET /submissions/{id}/ (with `bonus_payments` in cents),
POST /submissions/{id}/transition/ (APPROVE / REJECT with Prolific's checks),
POST /submissions/bulk-approve/, POST /submissions/bonus-payments/ (csv_bonuses) and
POST /bulk-bonus-payments/{id}/pay/, which, as Prolific documents, pays again when
called twice. Error answers are injected with `fail_next` (e.g. 429 with Retry-After,
a 500 once); `drop_after` makes the server act on a request and then close the
connection without answering (a crash or a lost answer between steps); `hold`
blocks a request until the test releases it.
"""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from recruitment.prolific import MIN_REJECTION_MESSAGE, REJECTION_CATEGORIES

TOKEN = "fake-prolific-token"


@dataclass
class Injected:
    status: int
    headers: dict = field(default_factory=dict)
    body: object = None


class FakeProlific:
    """The server's state and hooks. `url` is the API base (…/api/v1/)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.submissions: dict[str, dict] = {}
        self.bulk_bonuses: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.failures: dict[str, list[Injected]] = defaultdict(list)
        self.drops: set[str] = set()
        self.holds: dict[str, tuple[threading.Event, threading.Event]] = {}
        self.payments: list[tuple[str, str, int]] = []  # (bulk id, participant, cents)
        self.answer_already_paid = False
        self._ids = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.server.handle_error = lambda *args: None  # dropped connections are on purpose
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- set-up -------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/api/v1/"

    def start(self) -> FakeProlific:
        self.thread.start()
        return self

    def stop(self) -> None:
        for _entered, release in self.holds.values():
            release.set()
        self.server.shutdown()
        self.server.server_close()

    def new_id(self, prefix: str) -> str:
        with self.lock:
            self._ids += 1
            return f"{prefix}{self._ids:020x}"

    def add_submission(
        self,
        study_id: str,
        participant_id: str,
        submission_id: str | None = None,
        status: str = "AWAITING REVIEW",
    ) -> dict:
        row = {
            "id": submission_id or self.new_id("sub"),
            "participant_id": participant_id,
            "study_id": study_id,
            "status": status,
            "started_at": "2026-11-30T10:00:00Z",
            "completed_at": "2026-11-30T10:20:00Z",
            "study_code": "DONE123",
            "bonus_payments": [],
        }
        self.submissions[row["id"]] = row
        return row

    def fail_next(
        self,
        kind: str,
        status: int,
        times: int = 1,
        headers: dict | None = None,
        body: object = None,
    ) -> None:
        """Answer the next `times` requests of `kind` (see _kind) with `status`."""
        for _ in range(times):
            self.failures[kind].append(
                Injected(status, headers or {}, body or {"error": {"detail": f"injected {status}"}})
            )

    def drop_after(self, kind: str) -> None:
        """Act on the next request of `kind`, then close the connection unanswered."""
        self.drops.add(kind)

    def hold(self, kind: str) -> tuple[threading.Event, threading.Event]:
        """Block requests of `kind` until the returned `release` is set; `entered` is
        set when one arrives."""
        pair = (threading.Event(), threading.Event())
        self.holds[kind] = pair
        return pair

    # --- what tests look at -------------------------------------------------------

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.requests if k == kind)

    def paid_to(self, participant_id: str) -> list[int]:
        return [cents for _b, pid, cents in self.payments if pid == participant_id]

    # --- the API ------------------------------------------------------------------

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                fake._serve(self, "GET")

            def do_POST(self) -> None:
                fake._serve(self, "POST")

        return Handler

    @staticmethod
    def _kind(method: str, path: str) -> str:
        for kind, pattern in (
            ("list", r"^/api/v1/studies/[^/]+/submissions/$"),
            ("bulk_approve", r"^/api/v1/submissions/bulk-approve/$"),
            ("create", r"^/api/v1/submissions/bonus-payments/$"),
            ("transition", r"^/api/v1/submissions/[^/]+/transition/$"),
            ("submission", r"^/api/v1/submissions/[^/]+/$"),
            ("pay", r"^/api/v1/bulk-bonus-payments/[^/]+/pay/$"),
        ):
            if re.match(pattern, path):
                return kind
        return "unknown"

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        kind = self._kind(method, parts.path)
        with self.lock:
            self.requests.append((kind, parts.path))
            injected = self.failures[kind].pop(0) if self.failures[kind] else None
        if kind in self.holds:
            entered, release = self.holds[kind]
            entered.set()
            release.wait(30)
        if handler.headers.get("Authorization") != f"Token {TOKEN}":
            return self._answer(handler, 401, {"error": {"detail": "Invalid token."}})
        if injected is not None:
            return self._answer(handler, injected.status, injected.body, injected.headers)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return self._answer(handler, 400, {"error": {"detail": "Malformed JSON."}})
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self.lock:
            status, answer = getattr(self, f"_{kind}", self._unknown)(parts.path, query, body)
        if kind in self.drops:
            self.drops.discard(kind)
            handler.close_connection = True
            handler.connection.close()  # acted on, never answered
            return None
        return self._answer(handler, status, answer)

    @staticmethod
    def _answer(handler, status: int, body, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, str(value))
        handler.end_headers()
        handler.wfile.write(data)

    def _unknown(self, path, query, body):
        return 404, {"error": {"detail": "Not found."}}

    def _list(self, path, query, body):
        study_id = path.split("/")[4]
        rows = [s for s in self.submissions.values() if s["study_id"] == study_id]
        size = int(query.get("page_size", 20))
        page = int(query.get("page", 1))
        chunk = rows[(page - 1) * size : page * size]
        more = page * size < len(rows)
        next_link = (
            {"href": f"{self.url}studies/{study_id}/submissions/?page={page + 1}&page_size={size}"}
            if more
            else None
        )
        results = [
            {k: v for k, v in s.items() if k not in ("bonus_payments", "study_id")} for s in chunk
        ]
        return 200, {
            "results": results,
            "_links": {"next": next_link},
            "meta": {"count": len(rows)},
        }

    def _submission(self, path, query, body):
        row = self.submissions.get(path.split("/")[4])
        if row is None:
            return 404, {"error": {"detail": "Not found."}}
        return 200, {
            **{k: v for k, v in row.items() if k != "participant_id"},
            "participant": row["participant_id"],
        }

    def _transition(self, path, query, body):
        row = self.submissions.get(path.split("/")[4])
        if row is None:
            return 404, {"error": {"detail": "Not found."}}
        action = body.get("action")
        if action == "APPROVE":
            target = "APPROVED"
        elif action == "REJECT":
            errors = {}
            if len(body.get("message") or "") < MIN_REJECTION_MESSAGE:
                errors["message"] = [
                    f"Ensure this field has at least {MIN_REJECTION_MESSAGE} characters."
                ]
            if body.get("rejection_category") not in REJECTION_CATEGORIES:
                errors["rejection_category"] = ["Not a valid choice."]
            if errors:
                return 400, {"error": {"detail": errors}}
            target = "REJECTED"
        else:
            return 400, {"error": {"detail": {"action": ["Not a valid choice."]}}}
        if row["status"] == target:
            return 200, row  # idempotent: the second request is ignored
        if row["status"] != "AWAITING REVIEW":
            return 400, {"error": {"detail": f"Cannot transition from {row['status']}."}}
        row["status"] = target
        return 200, row

    def _bulk_approve(self, path, query, body):
        ids = body.get("submission_ids") or []
        if not ids or any(i not in self.submissions for i in ids):
            return 400, {"error": {"detail": "Unknown submission ids."}}
        for i in ids:
            if self.submissions[i]["status"] == "AWAITING REVIEW":
                self.submissions[i]["status"] = "APPROVED"
        return 200, "The request to bulk approve has been made successfully."

    def _create(self, path, query, body):
        study_id = body.get("study_id")
        members = {
            s["participant_id"]: s for s in self.submissions.values() if s["study_id"] == study_id
        }
        members.update({s["id"]: s for s in list(members.values())})
        lines, wrong = [], []
        for line in (body.get("csv_bonuses") or "").splitlines():
            try:
                who, amount = line.split(",")
                cents = int(Decimal(amount) * 100)
            except (ValueError, InvalidOperation):
                return 400, {"error": {"detail": f"Malformed line: {line!r}"}}
            if who not in members or cents <= 0:
                wrong.append(who)
            lines.append((members.get(who, {}).get("participant_id", who), cents))
        if not lines or wrong:
            return 400, {"error": {"detail": f"Invalid ids: {wrong}"}}
        bonus_id = f"bulk{len(self.bulk_bonuses) + 1:020x}"
        self.bulk_bonuses[bonus_id] = {"study": study_id, "lines": lines, "paid": 0}
        amount = sum(c for _, c in lines) / 100
        return 201, {
            "id": bonus_id,
            "study": study_id,
            "amount": amount,
            "fees": 0.0,
            "total_amount": amount,
            "vat": 0.0,
        }

    def _pay(self, path, query, body):
        bonus_id = path.split("/")[4]
        bulk = self.bulk_bonuses.get(bonus_id)
        if bulk is None:
            return 404, {"error": {"detail": "Not found."}}
        if bulk["paid"] and self.answer_already_paid:
            return 400, {"error": {"detail": "This bulk bonus payment has already been paid."}}
        bulk["paid"] += 1  # as documented: not idempotent, a second call pays again
        for pid, cents in bulk["lines"]:
            self.payments.append((bonus_id, pid, cents))
            for s in self.submissions.values():
                if s["participant_id"] == pid and s["study_id"] == bulk["study"]:
                    s["bonus_payments"].append(cents)
        return 202, (
            f"Bulk bonus payment with ID {bonus_id} is being processed "
            "asynchronously. Payments will be completed shortly."
        )
