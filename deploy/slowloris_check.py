"""Slow-loris check: does the site keep answering while many clients trickle headers?

Starts gunicorn as deployed (gunicorn.conf.py) and nginx with deploy/nginx.conf (TLS with
a throwaway self-signed certificate made here; only addresses, certificate and folders are
swapped for local ones), then, once against bare gunicorn and once through nginx:
opens SOCKETS connections that each send a request line and then one header line every
INTERVAL seconds, never finishing (reconnecting when the server drops them, as the attack
does), and meanwhile sends an ordinary request every second on a fresh connection and
times its answer. All traffic goes to 127.0.0.1 and stops after HOLD seconds.

    .venv/bin/python deploy/slowloris_check.py [--sockets 200] [--interval 5] [--hold 30]

Needs nginx (apt-get install nginx-light) and openssl. Settings come from the
environment like the site's (DATABASE_URL etc.); the page probed, /, reads no rows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def render_nginx_conf(text: str, *, http: int, https: int, upstream: int, tmp: Path) -> str:
    """deploy/nginx.conf with its deployment addresses, certificate and folders replaced
    by local ones. Raises ValueError when a line it replaces is missing (the file and
    this check must change together)."""
    user = "user www-data;" if os.geteuid() == 0 else ""
    swaps = {
        "user nginx;": user,
        "pid /tmp/nginx.pid;": f"pid {tmp}/nginx.pid;",
        "access_log /dev/stdout no_query;": f"access_log {tmp}/access.log no_query;",
        "listen 80;": f"listen {HOST}:{http};",
        "listen 443 ssl;": f"listen {HOST}:{https} ssl;",
        "server web:8000;": f"server {HOST}:{upstream};",
        "/etc/nginx/certs/": f"{tmp}/certs/",
        "/srv/static/": f"{tmp}/static/",
    }
    for old, new in swaps.items():
        if old not in text:
            raise ValueError(f"deploy/nginx.conf no longer has {old!r}")
        text = text.replace(old, new)
    return text


def make_certificate(folder: Path) -> None:
    folder.mkdir(parents=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(folder / "privkey.pem"),
         "-out", str(folder / "fullchain.pem")],
        check=True, capture_output=True,
    )  # fmt: skip


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listening on {port} after {seconds} s")


@dataclass
class Run:
    name: str
    probes: list[float | None] = field(default_factory=list)  # seconds, None = no answer
    statuses: list[int] = field(default_factory=list)
    open_seen: list[int] = field(default_factory=list)  # slow sockets open at each probe
    reconnects: int = 0


async def _connect(
    port: int, tls: ssl.SSLContext | None, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection(HOST, port, ssl=tls, server_hostname="localhost" if tls else None),
        timeout,
    )


async def probe(port: int, tls: ssl.SSLContext | None, timeout: float) -> tuple[float, int] | None:
    """One ordinary request on a fresh connection: (seconds to the status line, status),
    or None when none came within `timeout`."""
    started = time.perf_counter()
    writer = None
    try:
        reader, writer = await _connect(port, tls, timeout)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Proto: https\r\n"
            b"Connection: close\r\n\r\n"
        )
        line = await asyncio.wait_for(reader.readline(), timeout - (time.perf_counter() - started))
        if not line.startswith(b"HTTP/"):
            return None
        return time.perf_counter() - started, int(line.split()[1])
    except (OSError, TimeoutError, ssl.SSLError, ValueError):
        return None
    finally:
        if writer is not None:
            writer.close()


async def loris(
    port: int,
    tls: ssl.SSLContext | None,
    interval: float,
    until: float,
    run: Run,
    open_now: list[int],
) -> None:
    """One slow client until `until` (monotonic seconds): a request line, then a header
    line every `interval` seconds; reconnects when the server drops it. `open_now[0]`
    counts the slow clients connected."""
    while time.monotonic() < until:
        writer = None
        try:
            reader, writer = await _connect(port, tls, 10)
            open_now[0] += 1
            try:
                writer.write(b"GET /?slow HTTP/1.1\r\nHost: localhost\r\n")
                await writer.drain()
                n = 0
                while time.monotonic() < until:
                    await asyncio.sleep(interval)
                    n += 1
                    writer.write(f"X-Slow-{n}: {secrets.token_hex(4)}\r\n".encode())
                    await writer.drain()
                    if reader.at_eof() or writer.transport.is_closing():
                        raise ConnectionResetError  # the server dropped it
            finally:
                open_now[0] -= 1
        except (OSError, TimeoutError, ssl.SSLError):
            run.reconnects += 1
            await asyncio.sleep(0.1)
        finally:
            if writer is not None:
                writer.close()


async def attack(
    name: str, port: int, tls: ssl.SSLContext | None, sockets: int, interval: float, hold: float
) -> Run:
    """`sockets` slow clients for `hold` seconds, and one probe a second meanwhile."""
    run = Run(name)
    open_now = [0]
    until = time.monotonic() + hold
    tasks = [
        asyncio.create_task(loris(port, tls, interval, until, run, open_now))
        for _ in range(sockets)
    ]
    await asyncio.sleep(min(3.0, hold / 4))  # every slow client connected and started
    while time.monotonic() < until - 1:
        run.open_seen.append(open_now[0])
        result = await probe(port, tls, timeout=5.0)
        run.probes.append(result[0] if result else None)
        if result:
            run.statuses.append(result[1])
        await asyncio.sleep(max(0.0, 1.0 - (result[0] if result else 5.0)))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return run


def report(run: Run, baseline: list[float | None]) -> str:
    answered = [p for p in run.probes if p is not None]
    base = [p for p in baseline if p is not None]
    base_ms = f"{1000 * statistics.median(base):.1f}" if base else "-"
    p50 = f"{1000 * statistics.median(answered):.1f}" if answered else "-"
    worst = f"{1000 * max(answered):.1f}" if answered else "-"
    codes = ",".join(sorted({str(s) for s in run.statuses})) or "-"
    return (
        f"{run.name:<34} {base_ms:>8} {statistics.mean(run.open_seen or [0]):>10.0f} "
        f"{run.reconnects:>10} "
        f"{len(answered):>4}/{len(run.probes):<4} {p50:>8} {worst:>8} {codes:>6}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds per header line")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds of attack per target")
    args = parser.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        print("nginx not found: apt-get install nginx-light", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="hillmix-slowloris-"))
    make_certificate(tmp / "certs")
    g_port, http_port, https_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "localhost,127.0.0.1",
        "BEHIND_TLS_PROXY": "true",
        "HILLMIX_TRUSTED_PROXIES": HOST,
        "STATIC_ROOT": str(tmp / "static"),
        "WEB_BIND": f"{HOST}:{g_port}",
    }
    env.setdefault("DATABASE_URL", f"sqlite:///{tmp}/db.sqlite3")
    python = sys.executable
    subprocess.run(
        [python, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    conf = tmp / "nginx.conf"
    conf.write_text(
        render_nginx_conf(
            (ROOT / "deploy" / "nginx.conf").read_text(),
            http=http_port, https=https_port, upstream=g_port, tmp=tmp,
        )
    )  # fmt: skip
    if os.geteuid() == 0:
        shutil.chown(tmp, "www-data")
    logs = open(tmp / "servers.log", "wb")  # noqa: SIM115 (open for the servers' lifetime)
    gunicorn = subprocess.Popen(
        [str(Path(python).with_name("gunicorn")), "hillmix_site.wsgi"],
        cwd=ROOT, env=env, stdout=logs, stderr=logs, start_new_session=True,
    )  # fmt: skip
    proxy = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(tmp), "-g", "daemon off;"],
        stdout=logs, stderr=logs, start_new_session=True,
    )  # fmt: skip
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE  # the throwaway certificate made above
    try:
        wait_for_port(g_port, gunicorn)
        wait_for_port(https_port, proxy)
        targets = [
            ("gunicorn alone (plain HTTP)", g_port, None),
            ("nginx (TLS) -> gunicorn", https_port, tls),
        ]
        rows = []
        for name, port, context in targets:
            # Unloaded: ten requests, the first ones warming the workers up.
            baseline = [(asyncio.run(probe(port, context, 5.0)) or (None,))[0] for _ in range(10)]
            baseline = baseline[5:]
            run = asyncio.run(attack(name, port, context, args.sockets, args.interval, args.hold))
            rows.append(report(run, baseline))
            time.sleep(2)  # let the server drop what is left of the attack
        print(
            f"{args.sockets} slow-loris sockets (a header line every {args.interval:g} s) for "
            f"{args.hold:g} s per target; one ordinary GET / per second, 5 s timeout\n"
            "slow open: slow sockets connected, mean over the probes (nginx drops each after\n"
            "client_header_timeout and it reconnects); answered: probes answered in 5 s\n"
            f"gunicorn.conf.py: {env.get('WEB_WORKERS', '4')} workers x "
            f"{env.get('WEB_THREADS', '4')} threads; nginx: deploy/nginx.conf\n"
        )
        print(
            f"{'target':<34} {'idle ms':>8} {'slow open':>10} {'reconnects':>10} "
            f"{'answered':>9} {'p50 ms':>8} {'max ms':>8} {'status':>6}"
        )
        print("\n".join(rows))
    finally:
        for process in (proxy, gunicorn):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(10)
        logs.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
