"""The throw-away PostgreSQL database of the benchmarks that need one (export,
analytics): the one place that makes it and points Django at it."""

import os
import sys
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
SERVER = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")


def recreate_database(name: str) -> str:
    """Drop and create `name` on the BENCH_PG server; returns its DATABASE_URL."""
    conn = psycopg2.connect(f"{SERVER}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return f"{SERVER}/{name}"


def django_setup(name: str) -> None:
    """Start Django on database `name` of the BENCH_PG server, with a media folder of
    its own and the in-process test client allowed as a host."""
    sys.path.insert(0, str(ROOT))
    os.environ["DATABASE_URL"] = f"{SERVER}/{name}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hillmix_site.settings")
    os.environ.setdefault("MEDIA_ROOT", f"/tmp/{name}-media")
    os.environ["ALLOWED_HOSTS"] = "testserver"
    import django

    django.setup()
