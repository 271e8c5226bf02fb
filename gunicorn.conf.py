"""Gunicorn settings for every deployment: the Dockerfile, docker-compose and
bench/load.py start gunicorn from the project folder, where it reads this file."""

import gc
import os

bind = os.environ.get("WEB_BIND", "0.0.0.0:8000")
# Threads let a worker wait on PostgreSQL for one request while serving another.
worker_class = "gthread"
workers = int(os.environ.get("WEB_WORKERS", "4"))
threads = int(os.environ.get("WEB_THREADS", "4"))
accesslog = "-"
# The path without its query string: recruiter ids arrive in it (the study page moves
# them into a signed cookie and redirects to the bare address at once).
access_log_format = '%(h)s %(t)s "%(m)s %(U)s" %(s)s %(b)s %(L)s'
# Participants pause 5 to 20 s between answers; keep their connection open that long
# rather than reconnecting for every answer (and racing a closing connection).
keepalive = 30


def post_worker_init(worker: object) -> None:
    """Django's modules and settings live as long as the worker: freeze them out of
    the collector's full passes, which otherwise stop a request for ~60 ms (measured
    here) every time they run."""
    gc.freeze()
