"""Streaming CSV and JSON: rows are encoded as they come from the database, a batch
at a time, so an export of any size runs in constant memory."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

from django.http import StreamingHttpResponse

FORMATS = ("csv", "json")
BATCH_ROWS = 1000  # rows per chunk handed to the server


def _batches(rows: Iterable[Sequence]) -> Iterator[list[Sequence]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, BATCH_ROWS)):
        yield batch


def csv_lines(header: Sequence[str], rows: Iterable[Sequence]) -> Iterator[str]:
    """CSV text; JSON columns arrive as JSON text, datetimes print as ISO 8601."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for batch in _batches(rows):
        writer.writerows(batch)
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
