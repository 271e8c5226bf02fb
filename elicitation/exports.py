"""Streaming CSV and JSON: rows are encoded as they come from the database, a batch
at a time, so an export of any size runs in constant memory."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np
from django.db import DatabaseError, connections
from django.db.backends.postgresql.psycopg_any import is_psycopg3
from django.db.models import QuerySet
from django.db.models.expressions import Col
from django.http import StreamingHttpResponse

FORMATS = ("csv", "json")
BATCH_ROWS = 1000  # rows per chunk handed to the server


def _batches(rows: Iterable[Sequence]) -> Iterator[list[Sequence]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, BATCH_ROWS)):
        yield batch


# A spreadsheet reads a cell starting with one of these as a formula (OWASP, "CSV
# Injection"); researcher-chosen names such as class folders reach the exports.
FORMULA_STARTS = frozenset("=+-@\t\r")


def _is_number(text: str) -> bool:
    if text != text.strip():  # float() would accept "\t1"
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_safe(value: object) -> object:
    """One CSV cell as a spreadsheet will not run it: text that starts like a formula
    (=, +, -, @, tab, CR) gets a leading single quote (OWASP's CSV injection advice).
    Numbers, and text that is a plain number such as "-0.5", stay as they are."""
    if isinstance(value, str) and value[:1] in FORMULA_STARTS and not _is_number(value):
        return "'" + value
    return value


def _safe_rows(batch: list[Sequence]) -> list[Sequence]:
    """csv_safe on every cell, rows with nothing to neutralise passed as they are (a
    row is rebuilt only when a text cell starts like a formula: a third less CPU)."""
    return [
        [csv_safe(cell) for cell in row]
        if any(isinstance(cell, str) and cell[:1] in FORMULA_STARTS for cell in row)
        else row
        for row in batch
    ]


def csv_lines(header: Sequence[str], rows: Iterable[Sequence]) -> Iterator[str]:
    """CSV text; JSON columns arrive as JSON text, datetimes print as ISO 8601. Every
    cell, the header's included, passes through csv_safe: every CSV the platform
    writes comes from here."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([csv_safe(name) for name in header])
    for batch in _batches(rows):
        writer.writerows(_safe_rows(batch))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def json_lines(
    header: Sequence[str], rows: Iterable[Sequence], raw_json: Sequence[str] = ()
) -> Iterator[str]:
    """A JSON array of objects; columns named in raw_json hold JSON text and are spliced
    in as they are rather than decoded and encoded again."""
    raw_positions = [header.index(name) for name in raw_json]
    plain_positions = [i for i in range(len(header)) if i not in raw_positions]
    yield "["
    separator = "\n"
    for batch in _batches(rows):
        parts = []
        for row in batch:
            text = json.dumps({header[i]: row[i] for i in plain_positions}, default=str)
            spliced = "".join(
                f', "{header[i]}": {row[i] if row[i] is not None else "null"}'
                for i in raw_positions
            )
            parts.append(separator + text[:-1] + spliced + "}")
            separator = ",\n"
        yield "".join(parts)
    yield "\n]\n"


def streaming_export(
    fmt: str,
    filename: str,
    header: Sequence[str],
    rows: Iterable[Sequence],
    raw_json: Sequence[str] = (),
) -> StreamingHttpResponse:
    if fmt == "json":
        content, content_type = json_lines(header, rows, raw_json), "application/json"
    else:
        content, content_type = csv_lines(header, rows), "text/csv"
    response = StreamingHttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}.{fmt}"'
    return response


# --- the same bytes from PostgreSQL's COPY -------------------------------------------
#
# On PostgreSQL (psycopg 3) an export is one COPY (two for a large one: SPLIT_ROWS) whose
# output is byte for byte what csv_lines and json_lines write (Python's float repr,
# str(datetime), csv quoting, csv_safe, json.dumps' ASCII escaping). CSV: COPY's own CSV
# format of the columns, each printed as Python prints its value; Python only turns LF
# line ends into CR LF and applies csv_safe on the rare rows that need it
# (csv_copy_lines). JSON: one text field per row, the finished object, which COPY prints
# verbatim (JSON_COPY_OPTIONS) and the server passes on as it comes (json_copy_lines).
# The COPY runs on a psycopg2 connection of its own, which reads its rows in C
# (_pipe_copy). Elsewhere (SQLite for `make run`) the Python path above runs.

# Django field types by the way a cell prints; a column of any other type keeps the
# whole export on the Python path.
_KINDS = {
    "AutoField": "int",
    "BigAutoField": "int",
    "SmallAutoField": "int",
    "IntegerField": "int",
    "BigIntegerField": "int",
    "SmallIntegerField": "int",
    "PositiveIntegerField": "int",
    "PositiveBigIntegerField": "int",
    "PositiveSmallIntegerField": "int",
    "BooleanField": "bool",
    "FloatField": "float",
    "DateTimeField": "datetime",
    "CharField": "text",
    "SlugField": "text",
    "TextField": "text",
}


def _py_float(col: str, for_json: bool = False) -> str:
    """Python's repr of a float8: PostgreSQL's shortest round-trip text (the default
    extra_float_digits=1) plus ".0" on whole numbers, 'nan', 'inf' and '-inf' for NaN
    and the infinities (for_json: json.dumps' 'NaN', 'Infinity' and '-Infinity', which are
    PostgreSQL's own). Both switch to exponents below 1e-4 and from 1e16; between 1e15
    and 1e16 PostgreSQL already writes an exponent, a range no exported float reaches
    (lams and confidences lie in [0, 1], rt_ms is capped by answers.MAX_RT_MS).
    Fractions are tested first and whole numbers second, so the common cases cost one
    or two float comparisons; NaN and the infinities fail both (NaN equals its trunc()
    and sorts above every number), NULL falls through all to NULL."""
    special = (
        ""
        if for_json
        else f" WHEN {col} = 'NaN' THEN 'nan' WHEN {col} = 'Infinity' THEN 'inf'"
        f" WHEN {col} = '-Infinity' THEN '-inf'"
    )
    return (
        f"CASE WHEN {col} <> trunc({col}) THEN {col}::text"
        f" WHEN abs({col}) < 1e15 THEN {col}::text || '.0'{special} ELSE {col}::text END"
    )


# date_bin's origin: a whole second, so the bins below fall on whole seconds.
_EPOCH = "timestamptz '2000-01-01 00:00:00+00'"


def _py_datetime(col: str) -> str:
    """str() of an aware UTC datetime: microseconds only when not zero, six digits,
    '+00:00'. The ISO text of the UTC time (DateStyle ISO, which psycopg requires) is
    str()'s where the microseconds are zero (both leave them out) or end in a non-zero
    digit (both print six); where PostgreSQL drops trailing zeros, rpad puts them back.
    date_bin tells the cases apart by integer arithmetic on the timestamp (date_part
    and date_trunc convert it to a calendar date first, to_char formats generically:
    each twice the cost or more)."""
    text = f"({col} AT TIME ZONE 'UTC')::text"
    return (
        f"CASE WHEN date_bin('10 microseconds', {col}, {_EPOCH}) <> {col}"
        f" OR date_bin('1 second', {col}, {_EPOCH}) = {col} THEN {text} || '+00:00'"
        f" ELSE rpad({text}, 26, '0') || '+00:00' END"
    )


def _csv_value(col: str, kind: str) -> str:
    """One column for COPY's CSV output, the text csv.writer prints for the Python
    value: COPY quotes where csv.writer's QUOTE_MINIMAL does (a comma, a double quote,
    CR or LF). Text and integers go as they are (csv_copy_lines applies csv_safe and
    prints '' as nothing, on the rare rows that need it); floats get Python's repr,
    datetimes str()."""
    if kind == "bool":
        return f"CASE WHEN {col} THEN 'True' WHEN NOT {col} THEN 'False' END"
    if kind == "float":
        return _py_float(col)
    if kind == "datetime":
        return _py_datetime(col)
    return col


def _json_string(col: str) -> str:
    """json.dumps of a str (ensure_ascii): to_json escapes as Python does within
    printable ASCII; other characters become \\uXXXX (surrogate pairs above U+FFFF)."""
    code = "ascii(ch)"
    escaped = (
        f"(SELECT string_agg(CASE WHEN {code} < 127 THEN ch"
        f" WHEN {code} < 65536 THEN '\\u' || lpad(to_hex({code}), 4, '0')"
        f" ELSE '\\u' || to_hex(55296 + (({code} - 65536) >> 10))"
        f" || '\\u' || to_hex(56320 + (({code} - 65536) & 1023)) END, '' ORDER BY n)"
        f" FROM regexp_split_to_table(to_json({col})::text, '') WITH ORDINALITY AS x(ch, n))"
    )
    return (
        f"CASE WHEN octet_length({col}) = char_length({col}) AND strpos({col}, E'\\x7f') = 0"
        f" THEN to_json({col})::text"
        f" WHEN {col} IS NOT NULL THEN {escaped} END"
    )


def _json_value(col: str, kind: str) -> str:
    """One value as json.dumps(..., default=str) writes it; NULL is null."""
    if kind == "int":
        text = f"{col}::text"
    elif kind == "bool":
        text = f"CASE WHEN {col} THEN 'true' WHEN NOT {col} THEN 'false' END"
    elif kind == "float":  # NaN and +-Infinity print as json.dumps does
        text = _py_float(col, for_json=True)
    elif kind == "datetime":
        text = f"'\"' || {_csv_value(col, kind)} || '\"'"
    else:
        text = _json_string(col)
    return f"coalesce({text}, 'null')"


def copy_select(
    fmt: str, header: Sequence[str], kinds: Sequence[str], sql: str, raw_json: Sequence[str] = ()
) -> str:
    """The SELECT that turns `sql`'s rows (columns in header order, of the given kinds)
    into what the export prints: for CSV each cell's text as csv.writer prints it, for
    COPY's CSV format to quote and join; for JSON one text per row, the JSON object and
    a comma (json_copy_lines drops the last row's)."""
    cols = [f"c{i}" for i in range(len(header))]
    source = f"FROM ({sql}) AS t({', '.join(cols)})"
    if fmt == "csv":
        cells = ", ".join(_csv_value(c, k) for c, k in zip(cols, kinds, strict=True))
        return f"SELECT {cells} {source}"
    pieces = [
        f"'{json.dumps(name)}: ' || {_json_value(c, k)}"
        for name, c, k in zip(header, cols, kinds, strict=True)
        if name not in raw_json
    ]
    pieces += [
        f"'{json.dumps(name)}: ' || coalesce({cols[header.index(name)]}, 'null')"
        for name in raw_json
    ]
    line = "'{' || " + " || ', ' || ".join(pieces) + " || '},'"
    return f"SELECT {line} {source}"


# Bytes of rows _cursor_copy joins into one block.
COPY_BATCH_BYTES = 1 << 16
# The pipe between the thread running COPY and the response (Linux's F_SETPIPE_SZ; the
# default is 64 KB): fewer, larger reads.
PIPE_BYTES = 1 << 20
# JSON lines travel as one-column CSV whose delimiter and quote are control characters
# that JSON text never holds raw (to_json and jsonb escape every character below
# U+0020), so COPY prints each line as it is, with no quoting.
JSON_COPY_OPTIONS = "FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02'"
# What a COPY's session needs for the printed values to be Python's (see _csv_value).
COPY_SETTINGS = (
    "SET jit = off; SET DateStyle = 'ISO'; SET TimeZone = 'UTC';"
    " SET extra_float_digits = 1; SET client_encoding = 'UTF8'"
)


# Where COPY's CSV may differ from csv.writer after csv_safe: a cell (after a comma or
# at a row's start, quoted or not) that starts like a formula, or an empty string, which
# COPY quotes ("") and csv.writer leaves empty. Plain numbers start with "-" too: their
# rows are checked and come out unchanged.
_SUSPECT_CELL = re.compile(rb'(?:^|,)(?:"?[=+\-@\t\r]|""(?=,|\n|$))', re.MULTILINE)


def _csv_row(row: bytes) -> bytes:
    """One COPY CSV row (ending in LF) as csv.writer writes its cells after csv_safe."""
    if not _SUSPECT_CELL.search(row):
        return row[:-1] + b"\r\n"
    cells = next(csv.reader(io.StringIO(row.decode(), newline="")))
    buffer = io.StringIO()
    csv.writer(buffer).writerow([csv_safe(cell) for cell in cells])
    return buffer.getvalue().encode()


# Bytes a spreadsheet formula starts with (FORMULA_STARTS), for the block check.
_FORMULA_BYTE = np.zeros(256, dtype=bool)
_FORMULA_BYTE[list(b"=+-@\t\r")] = True


def _block_may_differ(block: bytes) -> bool:
    """Whether any cell of these COPY CSV rows starts (quoted or not) like a formula or
    with a double quote (an empty string is printed as ""), by numpy over the block's
    cell starts (a regular expression takes ten times as long). Over-inclusive (a
    negative number, a quote at a cell's start), never less than _SUSPECT_CELL."""
    a = np.frombuffer(b"\n" + block + b"  ", dtype=np.uint8)  # spaces: no cell start
    after = np.flatnonzero((a == 44) | (a == 10)) + 1  # where a cell starts
    first = a[after]
    if _FORMULA_BYTE[first].any():
        return True
    quoted = after[first == 34] + 1
    second = a[quoted]
    return bool((_FORMULA_BYTE[second] | (second == 34)).any())


def _row_ends(a: np.ndarray) -> tuple[np.ndarray, bool]:
    """Where the rows of COPY CSV bytes `a` (starting at a row's start) end: the LFs
    outside quoted cells, after an even number of double quotes (a quoted cell holds
    an even number: its two and each doubled one). Also whether every LF ends a row."""
    lfs = np.flatnonzero(a == 10)
    quotes = np.flatnonzero(a == 34)
    if not quotes.size:
        return lfs, True
    outside = (np.searchsorted(quotes, lfs) & 1) == 0
    return lfs[outside], bool(outside.all())


def _csv_block(block: bytes, ends: np.ndarray, plain: bool) -> bytes:
    """Whole rows of COPY's CSV output (`ends`: each row's final LF) as csv_lines writes
    them. A block without an LF inside a cell (`plain`) or a suspect cell (nearly all)
    is rewritten at once; otherwise row by row."""
    if plain and not _block_may_differ(block):
        return block.replace(b"\n", b"\r\n")
    starts = [0, *(ends[:-1] + 1).tolist()]
    return b"".join(_csv_row(block[a : b + 1]) for a, b in zip(starts, ends.tolist(), strict=True))


def csv_copy_lines(blocks: Iterable[bytes]) -> Iterator[bytes]:
    """The rows of a COPY ... (FORMAT csv) stream, cut into blocks anywhere, as
    csv_lines writes them (csv_safe, CR LF line ends), a block of whole rows at a time;
    the bytes after a block's last row wait for the next block."""
    pending = b""
    for block in blocks:
        data = pending + block if pending else block
        ends, plain = _row_ends(np.frombuffer(data, dtype=np.uint8))
        if not ends.size:
            pending = data
            continue
        cut = int(ends[-1]) + 1
        pending = data[cut:]
        yield _csv_block(data[:cut], ends, plain)
    if pending:
        raise ValueError("COPY's CSV ended inside a row")


def json_copy_lines(blocks: Iterable[bytes]) -> Iterator[bytes]:
    """The JSON array json_lines writes, from a COPY (JSON_COPY_OPTIONS) of lines
    '{...},' cut into blocks anywhere: COPY ends each with LF, so '[', LF, the lines and
    their separators ',\\n' come out as they are; the last line's ',' and LF are held back
    to end the array. Raises ValueError where COPY quoted a line (a JSON line holding a
    raw control character, which neither to_json nor jsonb writes)."""
    yield b"["
    held = b""
    for block in blocks:
        if b"\x02" in block:
            raise ValueError("COPY quoted a JSON line")
        if not block:
            continue
        data = held + block if held else b"\n" + block
        held = data[-2:]
        yield data[:-2]
    if held not in (b"", b",\n"):
        raise ValueError("COPY's JSON lines ended inside a line")
    yield b"\n]\n"


def _copy_plan(queryset: QuerySet) -> tuple[str, tuple, list[str], int | None] | None:
    """The queryset's SQL, parameters, column kinds and the position of its ORDER BY key
    among the columns (None where it is not ordered by its primary key alone, ascending,
    and selects it: no split, _split_plan), or None where the COPY path does not apply
    (not PostgreSQL with psycopg 3, or a column type it cannot print)."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql" or not is_psycopg3:
        return None
    query = queryset.query
    compiler = query.get_compiler(using=queryset.db)
    sql, params = compiler.as_sql()
    kinds = [_KINDS.get(col.output_field.get_internal_type()) for col, _, _ in compiler.select]
    if None in kinds:
        return None
    pk = query.get_meta().pk
    key = None
    if query.order_by in (("pk",), (pk.name,), (pk.attname,)) and query.standard_ordering:
        key = next(
            (
                i
                for i, (col, _, _) in enumerate(compiler.select)
                if isinstance(col, Col) and col.target == pk and col.alias == query.base_table
            ),
            None,
        )
    if query.is_sliced:  # a WHERE outside the LIMIT would not reach the scan
        key = None
    return sql, params, kinds, key


def _cursor_copy(using: str, statement: str, params: tuple) -> Iterator[bytes]:
    """A COPY's output on the Django connection itself, in blocks of whole rows:
    psycopg 3 hands over one row at a time, a Python step per row. For a connection
    inside a transaction, whose own rows another connection would not see. Closing the
    generator (a client gone) leaves the `with copy` block: psycopg cancels the query
    and drains what was already sent, so the connection is free at once."""
    with connections[using].cursor() as cursor:
        # The per-row expressions look costly to the planner, whose JIT would then spend
        # seconds compiling them for an export that runs in less.
        cursor.execute("SET jit = off")
        try:
            with cursor.cursor.copy(statement, params) as copy:
                rows: list[bytes] = []
                size = 0
                for row in copy:
                    rows.append(row)
                    size += len(row)
                    if size >= COPY_BATCH_BYTES:
                        yield b"".join(rows)
                        rows, size = [], 0
                yield b"".join(rows)
        finally:
            try:
                cursor.execute("RESET jit")
            except DatabaseError:  # an aborted transaction: its rollback undoes the SET
                pass


# --- two COPYs on two connections for a large export (as pg_dump -j does) ------------
#
# The database process printing the rows bounds a COPY export (its CPU time is about
# twice the client's). Above SPLIT_ROWS (the planner's estimate) the rows are cut in
# two at the midpoint of their ORDER BY key (the primary key) range, both halves taken
# from one snapshot: the first connection opens a REPEATABLE READ transaction, reads
# the key's first and last values and exports its snapshot; the second imports it
# (SET TRANSACTION SNAPSHOT), so an answer saved or a participant withdrawn between the
# two starts cannot make the halves disagree. The first half is streamed through the
# pipe as a single COPY is; the second half's COPY runs at the same time, on the other
# core, into a temporary file, which is streamed after the first half: the two streams
# are the one COPY's bytes cut at a row's end, so csv_copy_lines and json_copy_lines
# see the same stream (the header once, JSON's separators right across the seam).

# Rows (the planner's estimate) from which an export runs as two COPYs: below it, a
# COPY costs the database under about 0.1 s, less than worth a second connection.
SPLIT_ROWS = 50_000


@dataclass(frozen=True)
class _SplitPlan:
    """A COPY statement in pieces for cutting its rows by their ORDER BY key, all with
    their parameters bound: `estimate` (EXPLAIN of the rows), `bounds` (the key's first
    and last value), `head` and `tail` of the COPY statement, between which a WHERE on
    column `key` goes."""

    estimate: str
    bounds: str
    head: str
    tail: str
    key: str

    def statement(self, condition: str = "") -> str:
        """The COPY of the rows whose key meets `condition` (e.g. '<= 12'), or all."""
        where = f" WHERE {self.key} {condition}" if condition else ""
        return f"{self.head}{where}{self.tail}"


def _connect(connect: dict):
    """A psycopg2 connection in autocommit with the session settings COPY needs."""
    import psycopg2  # only here: Django's own driver is psycopg 3

    conn = psycopg2.connect(**connect)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(COPY_SETTINGS)
    except BaseException:
        conn.close()
        raise
    return conn


def _spool():
    """Where the second half's COPY goes while the first half is sent: a temporary file
    (TMPDIR) behind a C write buffer of PIPE_BYTES, so that the export's memory stays
    constant (psycopg2 writes row by row: a Python-level file such as
    tempfile.SpooledTemporaryFile would take a Python step per row)."""
    return tempfile.TemporaryFile(buffering=PIPE_BYTES)


def _copy_thread(conn, statement: str, sink, close: bool) -> tuple[threading.Thread, list]:
    """A thread running copy_expert of `statement` into `sink` (closed or flushed at the
    end), started; and the list that receives its error, if any."""
    failed: list[BaseException] = []

    def produce() -> None:
        try:
            try:
                with conn.cursor() as cursor:
                    cursor.copy_expert(statement, sink)
            finally:
                sink.close() if close else sink.flush()
        except BaseException as error:  # handed to the reader
            failed.append(error)

    thread = threading.Thread(target=produce, name="export-copy", daemon=True)
    thread.start()
    return thread, failed


def _split_point(first: int, last: int) -> int:
    """The last key of the first half: the midpoint of the key range (two index look-ups;
    the median would cost a scan and a sort of every key before the first byte). Keys
    spread unevenly (ids left to other studies in between) only unbalance the halves."""
    return first + (last - first) // 2


def _begin_split(conn, split: _SplitPlan) -> tuple[str, str, str] | None:
    """On `conn` (autocommit), where the planner expects SPLIT_ROWS rows or more: a
    REPEATABLE READ transaction, the key's midpoint in it, and the two halves' COPY
    statements and the exported snapshot; None (no transaction) where one COPY will do."""
    with conn.cursor() as cursor:
        cursor.execute(split.estimate)
        plan = cursor.fetchone()[0]
        if isinstance(plan, str):
            plan = json.loads(plan)
        if plan[0]["Plan"]["Plan Rows"] < SPLIT_ROWS:
            return None
        cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cursor.execute(split.bounds)
        first, last = cursor.fetchone()
        if first is None or first == last:
            cursor.execute("ROLLBACK")
            return None
        middle = _split_point(int(first), int(last))
        cursor.execute("SELECT pg_export_snapshot()")
        snapshot = cursor.fetchone()[0]
    return split.statement(f"<= {middle}"), split.statement(f"> {middle}"), snapshot


def _pipe_copy(connect: dict, statement: str, split: _SplitPlan | None = None) -> Iterator[bytes]:
    """A COPY's output in blocks of up to PIPE_BYTES, cut anywhere, read from a pipe that
    a thread fills with psycopg2's copy_expert on a connection of its own (to the same
    database, as the same user): copy_expert takes each row from libpq in C, with the
    GIL released while it waits, where psycopg 3 takes a Python step per row (reading
    a million rows' CSV took 0.5 s of CPU this way, 0.9 s with psycopg 3). `connect`:
    psycopg2.connect's arguments; `statement` with its parameters bound. The export
    sees what is committed when it starts, as the Django connection in autocommit
    would. With `split`, a large export runs as two COPYs on two connections, the
    second half spooled to a temporary file meanwhile (see SPLIT_ROWS); the blocks are
    the same bytes. Closing the generator (a client gone) cancels every COPY still
    running and closes the connections at once. An error in either COPY raises here,
    after the blocks already yielded: the response is then cut off, as for an error
    in the middle of a single COPY (the second half's error is raised as soon as it is
    seen, possibly while the first half is still being sent)."""
    conns = [_connect(connect)]
    running: list[tuple[object, threading.Thread]] = []  # each COPY's connection, thread
    spool = None
    try:
        halves = _begin_split(conns[0], split) if split is not None else None
        second = None
        if halves is not None:
            statement, second_statement, snapshot = halves
            conns.append(_connect(connect))
            with conns[1].cursor() as cursor:
                cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cursor.execute("SET TRANSACTION SNAPSHOT %s", [snapshot])
            spool = _spool()
            second = _copy_thread(conns[1], second_statement, spool, close=False)
            running.append((conns[1], second[0]))
        read_end, write_end = os.pipe()
        try:
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except (AttributeError, OSError):  # not Linux, or above the system's limit
            pass
        with open(read_end, "rb", buffering=0) as source:
            try:
                sink = open(write_end, "wb", buffering=PIPE_BYTES)
            except BaseException:
                os.close(write_end)
                raise
            thread, failed = _copy_thread(conns[0], statement, sink, close=True)
            running.append((conns[0], thread))
            while block := source.read(PIPE_BYTES):
                if second is not None and second[1]:
                    raise second[1][0]
                yield block
        thread.join()
        if failed:
            raise failed[0]
        if second is not None:
            second[0].join()
            if second[1]:
                raise second[1][0]
            spool.seek(0)
            while block := spool.read(PIPE_BYTES):
                yield block
    finally:
        # The reader stopped early (a client gone, an error): stop every query now; a
        # first-half thread blocked on the pipe fails at once, its read end closed.
        for conn, thread in running:
            if thread.is_alive():
                conn.cancel()
        for _, thread in running:
            thread.join()
        for conn in conns:
            conn.close()
        if spool is not None:
            spool.close()


def _copy_export(fmt: str, header: Sequence[str], blocks: Iterator[bytes]) -> Iterator[bytes]:
    """The export's bytes from a COPY's blocks. Closing it (the server does when the
    client has gone) closes the COPY reader at once, whoever still holds a reference."""
    try:
        if fmt == "json":
            yield from json_copy_lines(blocks)
        else:
            yield "".join(csv_lines(header, ())).encode()
            yield from csv_copy_lines(blocks)
    finally:
        blocks.close()


def export_response(
    fmt: str,
    filename: str,
    header: Sequence[str],
    queryset: QuerySet,
    raw_json: Sequence[str] = (),
    chunk_size: int = 2000,
) -> StreamingHttpResponse:
    """The export of a values_list queryset (columns in header order) as CSV or JSON:
    through COPY on PostgreSQL, else through streaming_export; the same bytes either
    way. COPY runs on a connection of its own (_pipe_copy; two COPYs on two for a large
    export ordered by its primary key: SPLIT_ROWS) unless the request's connection is
    inside a transaction (_cursor_copy)."""
    plan = _copy_plan(queryset)
    if plan is None:
        return streaming_export(
            fmt, filename, header, queryset.iterator(chunk_size=chunk_size), raw_json
        )
    sql, params, kinds, key = plan
    select = copy_select(fmt, header, kinds, sql, raw_json)
    options = "FORMAT csv" if fmt == "csv" else JSON_COPY_OPTIONS
    statement = f"COPY ({select}) TO STDOUT ({options})"
    connection = connections[queryset.db]
    if connection.in_atomic_block:  # its rows are this transaction's: one COPY, on it
        blocks = _cursor_copy(queryset.db, statement, params)
    else:  # the parameters taken here: the server may iterate in another thread
        connection.ensure_connection()
        info = connection.connection.info  # the very parameters Django connected with
        connect = {**info.get_parameters(), "password": info.password or None}
        compose = connection.ops.compose_sql
        split = None
        if key is not None:
            # The key's first and last values, each read from one end of its index
            # (over the export's own SELECT, whose ORDER BY would make it a full sort).
            ids = queryset.order_by().values_list("pk", flat=True)
            ends = [ids.order_by(o)[:1].query.sql_with_params() for o in ("pk", "-pk")]
            split = _SplitPlan(
                estimate=compose(f"EXPLAIN (FORMAT JSON) {sql}", params),
                bounds=compose(
                    f"SELECT ({ends[0][0]}), ({ends[1][0]})", (*ends[0][1], *ends[1][1])
                ),
                head=compose(f"COPY ({select}", params),
                tail=f") TO STDOUT ({options})",
                key=f"c{key}",
            )
        blocks = _pipe_copy(connect, compose(statement, params), split)
    content = _copy_export(fmt, header, blocks)
    content_type = "application/json" if fmt == "json" else "text/csv"
    response = StreamingHttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}.{fmt}"'
    return response
