"""Streaming CSV and JSON: rows are encoded as they come from the database, a batch
at a time, so an export of any size runs in constant memory."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

import numpy as np
from django.db import DatabaseError, connections
from django.db.backends.postgresql.psycopg_any import is_psycopg3
from django.db.models import QuerySet
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
# On PostgreSQL (psycopg 3) an export is one COPY whose output is byte for byte what
# csv_lines and json_lines write (Python's float repr, str(datetime), csv quoting,
# csv_safe, json.dumps' ASCII escaping). CSV: COPY's own CSV format of the columns, each
# printed as Python prints its value; Python only turns LF line ends into CR LF and
# applies csv_safe on the rare rows that need it (csv_copy_lines). JSON: one text field
# per row in COPY's binary format, which carries the finished object verbatim, and the
# server only strips COPY's framing. Elsewhere (SQLite for `make run`) the Python path
# above runs.

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


def _py_float(col: str) -> str:
    """Python's repr of a float8: PostgreSQL's shortest round-trip text (the default
    extra_float_digits=1) plus ".0" on whole numbers. Both switch to exponents below
    1e-4 and from 1e16; between 1e15 and 1e16 PostgreSQL already writes an exponent,
    a range no exported float reaches (lams and confidences lie in [0, 1], rt_ms is
    capped by answers.MAX_RT_MS)."""
    # NaN and the infinities fail the abs() test (NaN sorts above every number).
    return (
        f"CASE WHEN {col} = trunc({col}) AND abs({col}) < 1e15 THEN {col}::text || '.0'"
        f" ELSE {col}::text END"
    )


def _py_datetime(col: str) -> str:
    """str() of an aware UTC datetime: microseconds only when not zero, '+00:00'."""
    utc = f"({col} AT TIME ZONE 'UTC')"
    return (
        f"to_char({utc}, CASE WHEN date_trunc('second', {col}) = {col}"
        f" THEN 'YYYY-MM-DD HH24:MI:SS' ELSE 'YYYY-MM-DD HH24:MI:SS.US' END) || '+00:00'"
    )


def _csv_value(col: str, kind: str) -> str:
    """One column for COPY's CSV output, the text csv.writer prints for the Python
    value: COPY quotes where csv.writer's QUOTE_MINIMAL does (a comma, a double quote,
    CR or LF). Text and integers go as they are (csv_copy_lines applies csv_safe and
    prints '' as nothing, on the rare rows that need it); floats get Python's repr
    (whole numbers tested first: the common case costs one comparison)."""
    if kind == "bool":
        return f"CASE WHEN {col} THEN 'True' WHEN NOT {col} THEN 'False' END"
    if kind == "float":
        return (
            f"CASE WHEN {col} <> trunc({col}) THEN {col}::text"
            f" WHEN {col} = 'NaN' THEN 'nan' WHEN {col} = 'Infinity' THEN 'inf'"
            f" WHEN {col} = '-Infinity' THEN '-inf' ELSE {_py_float(col)} END"
        )
    if kind == "datetime":
        # The ISO text (DateStyle ISO, which psycopg requires) is str()'s where the
        # microseconds are zero (both leave them out) or end in a non-zero digit (both
        # print six); to_char for the rest, where PostgreSQL drops trailing zeros.
        return (
            f"CASE WHEN date_part('microseconds', {col})::int8 %% 10 <> 0"
            f" OR date_trunc('second', {col}) = {col}"
            f" THEN ({col} AT TIME ZONE 'UTC')::text || '+00:00' ELSE {_py_datetime(col)} END"
        )
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
        text = _py_float(col)
    elif kind == "datetime":
        text = f"'\"' || {_py_datetime(col)} || '\"'"
    else:
        text = _json_string(col)
    return f"coalesce({text}, 'null')"


def copy_select(
    fmt: str, header: Sequence[str], kinds: Sequence[str], sql: str, raw_json: Sequence[str] = ()
) -> str:
    """The SELECT that turns `sql`'s rows (columns in header order, of the given kinds)
    into what the export prints: for CSV each cell's text as csv.writer prints it, for
    COPY's CSV format to quote and join; for JSON one text per row, ',\\n' and the JSON
    object (the caller drops the first row's comma)."""
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
    line = "E',\\n{' || " + " || ', ' || ".join(pieces) + " || '}'"
    return f"SELECT {line} {source}"


_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_COPY_HEADER = len(_COPY_SIGNATURE) + 8  # flags and header-extension length
COPY_BATCH_BYTES = 1 << 16  # bytes per chunk handed to the server


def copy_rows(chunks: Iterable[bytes], skip_first: int = 0) -> Iterator[bytes]:
    """The one text field of each row of a COPY ... (FORMAT binary) stream, joined into
    chunks of about COPY_BATCH_BYTES; `skip_first` bytes are cut from the first row.
    libpq hands over one row per chunk, the fast path; any other split is reassembled."""
    pending = b""
    started = False
    out: list[bytes] = []
    size = 0
    for chunk in chunks:
        if pending or not started:
            chunk = pending + bytes(chunk)
            pending = b""
            if not started:
                if len(chunk) < _COPY_HEADER:
                    pending = chunk
                    continue
                if not chunk.startswith(_COPY_SIGNATURE):
                    raise ValueError("not a binary COPY stream")
                chunk, started = chunk[_COPY_HEADER:], True
        n = len(chunk)
        if n > 6 and chunk[:2] == b"\x00\x01" and int.from_bytes(chunk[2:6]) == n - 6:
            row = chunk[6:] if not skip_first else chunk[6 + skip_first :]
            skip_first = 0
            out.append(row)
            size += len(row)
        else:
            pos = 0
            while n - pos >= 2:
                if chunk[pos : pos + 2] == b"\xff\xff":  # the trailer
                    pos = n
                    break
                if chunk[pos : pos + 2] != b"\x00\x01":
                    raise ValueError("COPY rows must hold one field")
                if n - pos < 6:
                    break
                length = int.from_bytes(chunk[pos + 2 : pos + 6])
                if n - pos - 6 < length:
                    break
                row = chunk[pos + 6 + skip_first : pos + 6 + length]
                skip_first = 0
                out.append(row)
                size += len(row)
                pos += 6 + length
            pending = bytes(chunk[pos:])
        if size >= COPY_BATCH_BYTES:
            yield b"".join(out)
            out, size = [], 0
    if out:
        yield b"".join(out)


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


def _csv_block(rows: list[bytes]) -> bytes:
    """Rows of COPY's CSV output, each ending in LF, as csv_lines writes them. A block
    without an LF inside a cell or a suspect cell (nearly all) is rewritten at once."""
    block = b"".join(rows)
    if block.count(b"\n") == len(rows) and not _block_may_differ(block):
        return block.replace(b"\n", b"\r\n")
    return b"".join(_csv_row(bytes(row)) for row in rows)


def csv_copy_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The rows of a COPY ... (FORMAT csv) stream as csv_lines writes them (csv_safe,
    CR LF line ends), in chunks of about COPY_BATCH_BYTES. COPY sends each row as one
    chunk (libpq's CopyData message) ending in LF."""
    rows: list[bytes] = []
    size = 0
    for chunk in chunks:
        rows.append(chunk)
        size += len(chunk)
        if size >= COPY_BATCH_BYTES:
            yield _csv_block(rows)
            rows, size = [], 0
    if rows:
        yield _csv_block(rows)


def _copy_plan(queryset: QuerySet) -> tuple[str, tuple, list[str]] | None:
    """The queryset's SQL, parameters and column kinds, or None where the COPY path does
    not apply (not PostgreSQL with psycopg 3, or a column type it cannot print)."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql" or not is_psycopg3:
        return None
    compiler = queryset.query.get_compiler(using=queryset.db)
    sql, params = compiler.as_sql()
    kinds = [_KINDS.get(col.output_field.get_internal_type()) for col, _, _ in compiler.select]
    if None in kinds:
        return None
    return sql, params, kinds


def _copy_stream(
    using: str, fmt: str, select: str, params: tuple, prefix: bytes, suffix: bytes
) -> Iterator[bytes]:
    """prefix, then the COPY's rows, then suffix. Closing the generator (a client gone
    mid-export) leaves the `with copy` block: psycopg cancels the query on the server
    and drains what was already sent, so the connection is free at once."""
    yield prefix
    with connections[using].cursor() as cursor:
        # The per-row expressions look costly to the planner, whose JIT would then spend
        # seconds compiling them for an export that runs in less.
        cursor.execute("SET jit = off")
        try:
            copy_format = "csv" if fmt == "csv" else "binary"
            copy_sql = f"COPY ({select}) TO STDOUT (FORMAT {copy_format})"
            with cursor.cursor.copy(copy_sql, params) as copy:
                yield from csv_copy_lines(copy) if fmt == "csv" else copy_rows(copy, 1)
        finally:
            try:
                cursor.execute("RESET jit")
            except DatabaseError:  # an aborted transaction: its rollback undoes the SET
                pass
    yield suffix


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
    way."""
    plan = _copy_plan(queryset)
    if plan is None:
        return streaming_export(
            fmt, filename, header, queryset.iterator(chunk_size=chunk_size), raw_json
        )
    sql, params, kinds = plan
    select = copy_select(fmt, header, kinds, sql, raw_json)
    if fmt == "json":
        prefix, suffix, content_type = b"[", b"\n]\n", "application/json"
    else:
        prefix, suffix, content_type = "".join(csv_lines(header, ())).encode(), b"", "text/csv"
    response = StreamingHttpResponse(
        _copy_stream(queryset.db, fmt, select, params, prefix, suffix), content_type=content_type
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}.{fmt}"'
    return response
