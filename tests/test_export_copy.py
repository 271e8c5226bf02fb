"""Exports through PostgreSQL's COPY: the same bytes as the Python path (csv_lines and
json_lines over export_rows) on awkward data, and a client gone mid-export frees the
database connection at once."""

import socket
import time

import pytest
from django.db import connection
from django.test import Client

from datasets.models import Pair, Stimulus
from elicitation import exports, reports
from elicitation.exports import copy_rows, csv_lines, streaming_export
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


def assert_same_bytes(client, study) -> None:
    assert exports._copy_plan(reports.export_queryset(Judgment.objects.all())), "COPY path"
    every = {"include_excluded": "1"}
    for params in ({}, {"as": "json"}, every, {"as": "json", **every}):
        include = "include_excluded" in params
        judgments = reports.study_judgments(study, include)
        expected = python_export(params, judgments)
        assert served(client, f"/api/studies/{study.slug}/export/", params) == expected, params
        everything = reports.counted(Judgment.objects.all(), include)
        expected = python_export(params, everything)
        assert served(client, "/api/judgments/export/", params) == expected, params


@pytest.fixture
def researcher(client, django_user_model):
    user = django_user_model.objects.create_superuser("res", "res@example.org", "pw-123456")
    client.force_login(user)
    return user


def test_copy_export_writes_the_python_path_bytes(
    answered_study,  # noqa: F811
    client,
    researcher,
):
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
    floats = [1e-05, 1e20, -0.0, 123.0, 0.1 + 0.2, None, 1 / 3, 12345678.9]
    for i, judgment in enumerate(judgments):
        judgment.lam = floats[i % len(floats)]
        judgment.confidence = floats[(i + 3) % len(floats)]
        judgment.rt_ms = [1000.0, 0.001, 1234.5678][i % 3]
        judgment.client_started_at = [None, -5, 1_700_000_000_000][i % 3]
        judgment.stimulus = stimulus if i % 2 else None
        judgment.response = [
            {"final_lam": 0.5, "note": 'a,"b"\n ✓'},
            {},
            [1, -2.5, "😀"],
            "-1",
        ][i % 4]
        judgment.save()
    Judgment.objects.filter(pk=judgments[0].pk).update(
        created_at="2026-01-02T03:04:05+00:00"  # no microseconds: str() leaves them out
    )
    assert_same_bytes(client, study)


def test_copy_rows_reassembles_any_split():
    """Rows split across chunks, or several rows in one, come out whole."""
    rows = [b"a,b\r\n", b"", "ü,😀\r\n".encode(), b"x" * 70_000]
    stream = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
    stream += b"".join(b"\x00\x01" + len(r).to_bytes(4, "big") + r for r in rows)
    stream += b"\xff\xff"
    for size in (1, 3, 7, 19, 100, len(stream)):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert b"".join(copy_rows(chunks)) == b"".join(rows)
        assert b"".join(copy_rows(chunks, skip_first=1)) == b"".join(rows)[1:]


def test_csv_copy_lines_writes_what_csv_lines_writes():
    """COPY's CSV rows (LF ends, "" for an empty string, no csv_safe) come out as
    csv_lines writes the same cells, in blocks where nothing needs fixing (the fast
    path) and where a cell does: formula starts, quoted or not, at a row's start or
    not, an LF inside a cell, an empty string, plain negative numbers."""
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

    for rows in (plain, awkward, plain + awkward, awkward[:1], plain[:1]):
        for batch in (1, 1 << 16):
            exports.COPY_BATCH_BYTES = batch
            try:
                got = b"".join(exports.csv_copy_lines([copy_csv(r) for r in rows]))
            finally:
                exports.COPY_BATCH_BYTES = 1 << 16
            none_for_empty = [[c if c != "" else None for c in r] for r in rows]
            assert got == "".join(csv_lines(HEADER[:0], none_for_empty))[2:].encode(), rows


def active_copies() -> int:
    """Exports whose COPY the server is running now, other than this connection's."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state = 'active' AND query LIKE 'COPY (%%'"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_client_gone_mid_export_frees_the_connection_at_once(
    live_server, make_study, django_user_model
):
    """200,000 judgments (about 60 MB of CSV, more than every buffer between the database
    and the client): the client reads a little and hangs up; the COPY stops at once."""
    from elicitation.models import Participant
    from elicitation.services import start_session  # noqa: F401 (the app is loaded)

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
    received = b""
    while len(received) < 200_000:
        chunk = client.recv(65536)
        assert chunk, received[:300]
        received += chunk
    assert b"200 OK" in received.split(b"\r\n", 1)[0]
    time.sleep(0.5)
    assert active_copies() == 1  # the export is under way, held back by the client
    client.close()
    deadline = time.monotonic() + 3
    while active_copies() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert active_copies() == 0


# Last in the module: its module-wide import holds a transaction open until the end.
from tests.test_hmix import hmix_folder, imported, staff_client  # noqa: E402,F401


@pytest.mark.shared_data
def test_copy_export_of_the_hmix_import_writes_the_python_path_bytes(
    staff_client,  # noqa: F811
    imported,  # noqa: F811
    db,
):
    from elicitation.models import Study

    for study in Study.objects.filter(slug__startswith="hmix"):
        assert_same_bytes(staff_client, study)
