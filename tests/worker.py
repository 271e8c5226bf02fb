"""A real Celery worker process on Redis, reading the test PostgreSQL database."""

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection

from hillmix_site.celery import app as celery_app

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Worker:
    process: subprocess.Popen
    log: Path
    queue: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _test_database_url() -> str:
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


@pytest.fixture
def start_worker(transactional_db, media_root, tmp_path):
    """Call it to start a worker (after setting up data in-process); stopped at teardown.
    Tasks sent meanwhile go to the worker's own queue."""
    if connection.vendor != "postgresql" or not os.environ.get("REDIS_URL"):
        pytest.skip("a real worker needs PostgreSQL and Redis (set DATABASE_URL and REDIS_URL)")
    workers: list[Worker] = []
    previous = (celery_app.conf.task_always_eager, celery_app.conf.task_default_queue)

    def start() -> Worker:
        queue = f"test-{uuid.uuid4().hex[:10]}"
        log = tmp_path / f"{queue}.log"
        env = {
            **os.environ,
            "DATABASE_URL": _test_database_url(),
            "MEDIA_ROOT": str(media_root),
            "HILLMIX_SHARED_DATA": str(settings.SHARED_DATA_DIR),
            "PYTHONUNBUFFERED": "1",
        }
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "hillmix_site",
                "worker",
                "-P",
                "prefork",
                "-c",
                "1",
                "-Q",
                queue,
                "-n",
                f"{queue}@%h",
                "--without-gossip",
                "--without-mingle",
                "-l",
                "INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = Worker(process, log, queue)
        workers.append(worker)
        deadline = time.monotonic() + 90
        while "ready." not in worker.output():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Celery worker did not start:\n{worker.output()}")
            time.sleep(0.3)
        celery_app.conf.task_always_eager = False
        celery_app.conf.task_default_queue = queue
        return worker

    yield start
    celery_app.conf.task_always_eager, celery_app.conf.task_default_queue = previous
    for worker in workers:
        if worker.process.poll() is None:
            os.killpg(worker.process.pid, signal.SIGTERM)
            try:
                worker.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.process.pid, signal.SIGKILL)
                worker.process.wait()


def wait_for(condition, timeout: float, worker: Worker | None = None, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    log = worker.output()[-4000:] if worker else ""
    pytest.fail(f"timed out waiting for {what}\n{log}")
