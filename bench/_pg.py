"""A throw-away PostgreSQL database for the benchmarks that need one."""

import os

import psycopg2

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
