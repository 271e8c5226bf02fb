"""Exports through PostgreSQL's COPY: the same bytes as the Python path (csv_lines and
json_lines over export_rows) on awkward data, through the export's own connection
(_pipe_copy, a committed database; also as two COPYs on two connections, split at any
row) and the request's (_cursor_copy, inside a transaction), and a client gone
mid-export frees the database connections at once."""

import socket
import tempfile
import threading
import time

import pytest
from django.db import connection
from django.test import Client

from datasets.models import Pair, Stimulus
from elicitation import exports, reports
from elicitation.exports import csv_lines, json_copy_lines, json_lines, streaming_export
from elicitation.models import Judgment, Session
from tests.test_api import answered_study  # noqa: F401 (fixture)

HEADER = [name for name, _ in reports.EXPORT_COLUMNS]
AWKWARD_TEXT = [
    '=HYPERLINK("x")',
    "+cmd",
    "-1e5",
    "-1_000.5",
    "+inf",
    "-NaN",
    "-1e",
    "@sum",
    "\tTab",
    "\r\nline",
    "-",
    "",
    'quote " and, comma',
    "Zürich ✓ 😀",
    "-ünï",
    "back\\slash\x7f\x01",
]


def python_export(params: dict, judgments) -> bytes:
    """The export as the Python path writes it for the same judgments."""
    fmt = params.get("as", "csv")
    response = streaming_export(
        fmt, "x", HEADER, reports.export_rows(judgments), reports.EXPORT_JSON_COLUMNS
    )
    return b"".join(c if isinstance(c, bytes) else c.encode() for c in response.streaming_content)


def served(client, url: str, params: dict) -> bytes:
    response = client.get(url, params)
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content)


def assert_same_bytes(client, study, monkeypatch=None, source: str = "") -> None:
    """Both export endpoints, CSV and JSON, with and without the excluded sessions,
    write the Python path's bytes; with `source`, each through that COPY reader."""
    assert exports._copy_plan(reports.export_queryset(Judgment.objects.all())), "COPY path"
    used: list[str] = []
    if source:
        for name in ("_pipe_copy", "_cursor_copy"):
            reader = getattr(exports, name)

            def spy(*args, _reader=reader, _name=name):
                used.append(_name)
                return _reader(*args)

            monkeypatch.setattr(exports, name, spy)
    every = {"include_excluded": "1"}
    for params in ({}, {"as": "json"}, every, {"as": "json", **every}):
        include = "include_excluded" in params
        judgments = reports.study_judgments(study, include)
        expected = python_export(params, judgments)
        assert served(client, f"/api/studies/{study.slug}/export/", params) == expected, params
        everything = reports.counted(Judgment.objects.all(), include)
        expected = python_export(params, everything)
        assert served(client, "/api/judgments/export/", params) == expected, params
    if source:
        assert used == [source] * 8, used


@pytest.fixture
def researcher(client, django_user_model):
    user = django_user_model.objects.create_superuser("res", "res@example.org", "pw-123456")
    client.force_login(user)
    return user


def awkward(answered_study):  # noqa: F811
    """answered_study with awkward text, floats, times and responses in every column
    the export prints, and one session excluded."""
    study, sessions = answered_study
    Session.objects.filter(pk=sessions[0].pk).update(excluded=True)
    judgments = list(Judgment.objects.filter(study=study).order_by("pk"))
    assert len(judgments) >= 4
    # Awkward names everywhere a researcher or participant id reaches the export.
    for i, pair in enumerate(Pair.objects.filter(pk__in=[j.pair_id for j in judgments])):
        pair.class1 = AWKWARD_TEXT[(2 * i) % len(AWKWARD_TEXT)]
        pair.class2 = AWKWARD_TEXT[(2 * i + 1) % len(AWKWARD_TEXT)]
        pair.name = AWKWARD_TEXT[(3 * i + 5) % len(AWKWARD_TEXT)]
        pair.save()
    for i, session in enumerate(sessions):
        session.participant.public_id = ["-0.5", "=1+1 ✓"][i]
        session.participant.save()
        session.condition.name = ['+x, "y"', "Ünïcode 😀"][i]
        session.condition.save()
    stimulus = Stimulus.objects.filter(pair__stimulus_set=study.stimulus_set).first()
    # Four judgments: lam, confidence and rt_ms (not null) take four of these each.
    floats = [1e-05, 1e20, -0.0, 123.0, 0.1 + 0.2, None, 1 / 3, 12345678.9]
    floats += [float("nan"), float("inf"), -float("inf"), 1234.5678]
    for i, judgment in enumerate(judgments):
        judgment.lam = floats[i % 4]
        judgment.confidence = floats[4 + i % 4]
        judgment.rt_ms = floats[8 + i % 4]
        judgment.client_started_at = [None, -5, 1_700_000_000_000][i % 3]
        judgment.stimulus = stimulus if i % 2 else None
        judgment.response = [
            {"final_lam": 0.5, "note": 'a,"b"\n ✓'},
            {},
            [1, -2.5, "😀"],
            "-1",
        ][i % 4]
        judgment.save()
    # No microseconds (str() leaves them out), then trailing zeros that PostgreSQL's
    # text drops and str() keeps, then a last digit that is not zero.
    times = ["05", "05.120000", "05.000010", "05.100000", "05.000001", "59.999990"]
    for judgment, seconds in zip(judgments, times, strict=False):
        Judgment.objects.filter(pk=judgment.pk).update(
            created_at=f"2026-01-02T03:04:{seconds}+00:00"
        )
    return study


def test_copy_export_in_a_transaction_writes_the_python_path_bytes(
    answered_study,  # noqa: F811
    client,
    researcher,
    monkeypatch,
):
    """Inside a transaction (its rows not committed) the request's connection runs COPY."""
    assert_same_bytes(client, awkward(answered_study), monkeypatch, "_cursor_copy")


@pytest.mark.django_db(transaction=True)
def test_copy_export_writes_the_python_path_bytes(
    answered_study,  # noqa: F811
    client,
    researcher,
    monkeypatch,
):
    """In autocommit the export's own connection runs COPY, read in C through a pipe."""
    assert_same_bytes(client, awkward(answered_study), monkeypatch, "_pipe_copy")


def spy_splits(monkeypatch) -> list:
    """The list of what each export's _begin_split returned (None: one COPY)."""
    begun: list = []
    begin = exports._begin_split

    def spy(*args):
        begun.append(begin(*args))
        return begun[-1]

    monkeypatch.setattr(exports, "_begin_split", spy)
    return begun


@pytest.mark.django_db(transaction=True)
def test_copy_export_in_two_parts_writes_the_python_path_bytes(
    answered_study,  # noqa: F811
    client,
    researcher,
    monkeypatch,
):
    """Split into two COPYs on two connections (every export above the threshold, here
    0), at the key range's midpoint and then at every row: before the first (an empty
    first half), between any two awkward rows (LFs and quotes inside cells, formula
    starts, the JSON separators at the seam), after the last (an empty second half)."""
    study = awkward(answered_study)
    monkeypatch.setattr(exports, "SPLIT_ROWS", 0)
    begun = spy_splits(monkeypatch)
    assert_same_bytes(client, study, monkeypatch, "_pipe_copy")
    assert len(begun) == 8 and all(begun), begun  # every export in two parts
    ids = sorted(Judgment.objects.filter(study=study).values_list("pk", flat=True))
    every = {"include_excluded": "1"}
    expected = {fmt: python_export({"as": fmt}, reports.study_judgments(study, True))
                for fmt in ("csv", "json")}  # fmt: skip
    for boundary in [ids[0] - 1, *ids]:
        monkeypatch.setattr(exports, "_split_point", lambda first, last, b=boundary: b)
        for fmt in ("csv", "json"):
            got = served(client, f"/api/studies/{study.slug}/export/", {"as": fmt, **every})
            assert got == expected[fmt], (boundary, fmt)
    assert len(begun) == 8 + 2 * (len(ids) + 1) and all(begun)


@pytest.mark.parametrize("fmt", ["csv", "json"])
@pytest.mark.django_db(transaction=True)
def test_the_two_parts_read_one_snapshot(
    answered_study,  # noqa: F811
    client,
    researcher,
    monkeypatch,
    fmt,
):
    """A withdrawal (a judgment erased) and a save (a judgment changed), both in the
    second half and committed after the first connection took its snapshot but before
    the second opened: the export is still the rows as they were at its start."""
    study, _ = answered_study
    monkeypatch.setattr(exports, "SPLIT_ROWS", 0)
    begun = spy_splits(monkeypatch)
    expected = python_export({"as": fmt}, reports.study_judgments(study, True))
    *_, changed, erased = Judgment.objects.filter(study=study).order_by("pk")
    connect = exports._connect
    opened: list = []

    def connect_after_changes(*args):
        opened.append(None)
        if len(opened) == 2:  # the export's second connection
            Judgment.objects.filter(pk=changed.pk).update(lam=0.123)
            Judgment.objects.filter(pk=erased.pk).delete()
        return connect(*args)

    monkeypatch.setattr(exports, "_connect", connect_after_changes)
    url = f"/api/studies/{study.slug}/export/"
    assert served(client, url, {"as": fmt, "include_excluded": "1"}) == expected
    assert len(opened) == 2 and begun[0][0].endswith(f"<= {erased.pk - 2}) TO STDOUT (" + (
        "FORMAT csv)" if fmt == "csv" else exports.JSON_COPY_OPTIONS + ")"))  # fmt: skip
    assert not Judgment.objects.filter(pk=erased.pk).exists()  # the changes were made


class FailingSpool:
    """A second half's file that fails when written to (a full disk)."""

    def write(self, data: bytes) -> int:
        raise OSError("No space left on device")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.django_db(transaction=True)
def test_an_error_in_the_second_part_cuts_the_response_off(
    answered_study,  # noqa: F811
    client,
    researcher,
    monkeypatch,
):
    """The second COPY fails: the response ends with an error, its body cut short (at
    most the first half's bytes), as for a COPY failing in the middle of one part."""
    study, _ = answered_study
    monkeypatch.setattr(exports, "SPLIT_ROWS", 0)
    monkeypatch.setattr(exports, "_spool", FailingSpool)
    begun = spy_splits(monkeypatch)
    for fmt in ("csv", "json"):
        expected = python_export({"as": fmt}, reports.study_judgments(study, False))
        response = client.get(f"/api/studies/{study.slug}/export/", {"as": fmt})
        assert response.status_code == 200
        received = b""
        with pytest.raises(OSError, match="No space left"):
            for chunk in response.streaming_content:
                received += chunk
        assert expected.startswith(received) and len(received) < len(expected), fmt
    assert len(begun) == 2 and all(begun)


PRINTED_FLOATS = [0.0, -0.0, 1.0, -7.0, 123.0, 0.5, 0.1 + 0.2, 1 / 3, 1e-05, 1.5e-07, 1e-4]
PRINTED_FLOATS += [12345678.9, 1e14 + 1, 999999999999999.0, 1e16, 1e20, -1e300, 5e-324]
PRINTED_FLOATS += [float("nan"), float("inf"), -float("inf"), None]
PRINTED_TIMES = ["00", "00.000001", "00.000010", "00.000100", "00.001000", "00.010000"]
PRINTED_TIMES += ["00.100000", "00.120000", "00.123450", "00.123456", "59.999999", "59.99999"]


@pytest.mark.django_db
def test_sql_prints_floats_and_times_as_python_does():
    """The SQL expressions print each awkward float as repr() (CSV) and json.dumps (JSON)
    do, and each time as str() does: whole numbers, negative zero, exponents, the
    subnormal, NaN and the infinities; microseconds zero, with trailing zeros, full."""
    import datetime
    import json

    floats = ", ".join(
        "(NULL::float8)" if x is None else f"('{x!r}'::float8)" for x in PRINTED_FLOATS
    )
    times = [datetime.datetime.fromisoformat(f"2026-01-02T03:04:{s}+00:00") for s in PRINTED_TIMES]
    stamps = ", ".join(f"('{t.isoformat()}'::timestamptz)" for t in times)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {exports._csv_value('x', 'float')}, {exports._json_value('x', 'float')}"
            f" FROM (VALUES {floats}) AS v(x)"
        )
        printed = cursor.fetchall()
        cursor.execute(f"SELECT {exports._csv_value('x', 'datetime')} FROM (VALUES {stamps}) v(x)")
        printed_times = [text for (text,) in cursor.fetchall()]
    expected = [(None, "null") if x is None else (repr(x), json.dumps(x)) for x in PRINTED_FLOATS]
    assert printed == expected
    assert printed_times == [str(t.astimezone(datetime.UTC)) for t in times]


def splits(stream: bytes) -> list[list[bytes]]:
    """The stream cut into blocks of several sizes, as the pipe may hand it over."""
    return [
        [stream[i : i + size] for i in range(0, len(stream), size)]
        for size in (1, 3, 7, 19, 100, max(len(stream), 1))
    ]


def test_json_copy_lines_writes_the_array_from_any_split():
    """COPY's lines '{...},' + LF, cut anywhere, make json_lines' array; none make '[]'
    as json_lines writes it; a quoted line (a raw control character) is an error."""
    objects = [b'{"a": 1, "b": "x,\\"y\\""}', b'{"a": 2, "b": "\\u00fc"}', b'{"r": null}']
    expected = "".join(json_lines(["k"], [[1], [2], [3]])).encode()
    assert expected.startswith(b'[\n{"k": 1},\n{"k": 2},\n') and expected.endswith(b"}\n]\n")
    for rows in (objects, objects[:1], []):
        stream = b"".join(row + b",\n" for row in rows)
        expected = b"[" + (b"\n" + b",\n".join(rows) if rows else b"") + b"\n]\n"
        for blocks in splits(stream):
            assert b"".join(json_copy_lines(blocks)) == expected, (rows, blocks[:2])
    with pytest.raises(ValueError):
        b"".join(json_copy_lines([b'\x02{"a": "\n"},\x02\n']))


def test_csv_copy_lines_writes_what_csv_lines_writes():
    """COPY's CSV rows (LF ends, "" for an empty string, no csv_safe) come out as
    csv_lines writes the same cells, in blocks where nothing needs fixing (the fast
    path) and where a cell does: formula starts, quoted or not, at a row's start or
    not, an LF inside a cell, an empty string, plain negative numbers; the stream cut
    into blocks anywhere, inside a row or a quoted cell."""
    plain = [["1", "name", "0.5", '{"a": 1}'], ["2", "x y", "0.25", "z"]]
    awkward = [
        ["3", "=1+1", "-0.5", "a\nb"],
        ["-4", "", "@x", "\r\nline"],
        ["5", '"q"', "+cmd", "\tTab"],
        ["+6", "-ünï", "-1e5", "ok"],
        ["7", "x y", "", "-"],
    ]

    def copy_csv(row: list[str]) -> bytes:  # COPY's quoting: also an empty string
        cells = [f'"{c.replace(chr(34), 2 * chr(34))}"' if c == "" or any(
            ch in c for ch in ',"\r\n') else c for c in row]  # fmt: skip
        return (",".join(cells) + "\n").encode()

    for rows in (plain, awkward, plain + awkward, awkward[:1], plain[:1], []):
        none_for_empty = [[c if c != "" else None for c in r] for r in rows]
        expected = "".join(csv_lines(HEADER[:0], none_for_empty))[2:].encode()
        for blocks in splits(b"".join(copy_csv(r) for r in rows)):
            assert b"".join(exports.csv_copy_lines(blocks)) == expected, (rows, blocks[:2])
    with pytest.raises(ValueError):  # a stream cut short inside a quoted cell
        b"".join(exports.csv_copy_lines([b'1,"a\nb\n']))


def active_copies() -> int:
    """Exports whose COPY the server is running now, other than this connection's."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state = 'active' AND query LIKE 'COPY (%%'"
        )
        return cursor.fetchone()[0]


class SlowSpool:
    """The second half's file, slowed to about a row a millisecond until its connection
    is cancelled, so that the second COPY is still running when the client hangs up."""

    def __init__(self, cancelled: threading.Event, written: list[int]):
        self.file = tempfile.TemporaryFile()
        self.cancelled = cancelled
        self.written = written

    def write(self, data: bytes) -> int:
        if not self.cancelled.is_set():
            time.sleep(0.001)
        self.written[0] += data.count(b"\n")
        return self.file.write(data)

    def __getattr__(self, name: str):
        return getattr(self.file, name)


class Cancelled:
    """A connection that sets `event` when its query is cancelled."""

    def __init__(self, conn, event: threading.Event):
        self.conn = conn
        self.event = event

    def cancel(self) -> None:
        self.event.set()
        self.conn.cancel()

    def __getattr__(self, name: str):
        return getattr(self.conn, name)


@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.django_db(transaction=True)
def test_a_client_gone_mid_export_frees_the_connection_at_once(
    live_server, make_study, django_user_model, monkeypatch, parts
):
    """200,000 judgments (about 60 MB of CSV, more than every buffer between the database
    and the client): the client reads a little and hangs up; the COPY stops at once. In
    two parts, both COPYs (the second still running, slowed) stop and both connections
    close at once; the second half was not written to the end."""
    from elicitation.models import Participant
    from elicitation.services import start_session  # noqa: F401 (the app is loaded)

    monkeypatch.setattr(exports, "SPLIT_ROWS", 0 if parts == 2 else 10**9)
    cancelled = threading.Event()
    written = [0]
    opened: list = []
    connect = exports._connect

    def connect_second_cancelled(*args):
        opened.append(connect(*args))
        return Cancelled(opened[-1], cancelled) if len(opened) == 2 else opened[-1]

    monkeypatch.setattr(exports, "_connect", connect_second_cancelled)
    monkeypatch.setattr(exports, "_spool", lambda: SlowSpool(cancelled, written))
    study = make_study("construct", n_pairs=4)
    condition = study.conditions.first()
    participants = Participant.objects.bulk_create(Participant() for _ in range(200))
    sessions = Session.objects.bulk_create(
        Session(study=study, participant=p, condition=condition, trial_order=[])
        for p in participants
    )
    pair = Pair.objects.filter(stimulus_set=study.stimulus_set).first()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO elicitation_judgment
              (session_id, study_id, trial_index, interface, pair_id, is_repeat, response,
               lam, confidence, rt_ms, idempotency_key, created_at)
            SELECT %s + g / 1000, %s, g %% 1000, 'construct', %s, false,
                   '{"start_lam": 0.1, "final_lam": 0.5}', (g %% 11) / 10.0, 0.7,
                   1000 + g %% 5000, gen_random_uuid(), now()
            FROM generate_series(0, 199999) AS g
            """,
            [sessions[0].pk, study.pk, pair.pk],
        )
    user = django_user_model.objects.create_superuser("res", "res@example.org", "pw-123456")
    browser = Client()
    browser.force_login(user)
    host, port = live_server.thread.host, live_server.thread.port
    client = socket.create_connection((host, port), timeout=30)
    client.sendall(
        f"GET /api/studies/{study.slug}/export/ HTTP/1.1\r\nHost: {host}\r\n"
        f"Cookie: sessionid={browser.cookies['sessionid'].value}\r\n\r\n".encode()
    )
    try:  # the client gone whatever happens: an export held back would hold the tables
        received = b""
        while len(received) < 200_000:
            chunk = client.recv(65536)
            assert chunk, received[:300]
            received += chunk
        assert b"200 OK" in received.split(b"\r\n", 1)[0]
        # Under way, held back by the client (and slowed); on a busy machine the second
        # COPY may start a moment after the first bytes arrive.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
            active_copies() == parts and (parts == 1 or written[0] > 0)
        ):
            time.sleep(0.05)
        assert active_copies() == parts
        assert len(opened) == parts
    finally:
        client.close()
    deadline = time.monotonic() + 3
    while active_copies() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert active_copies() == 0
    while not all(conn.closed for conn in opened) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(conn.closed for conn in opened)
    if parts == 2:
        assert cancelled.is_set() and 0 < written[0] < 100_000, written
