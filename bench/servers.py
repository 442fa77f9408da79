"""Model servers for the benches: ``ets serve ROLE ...`` in a process of its own, its URL once it answers
(``ets serve`` prints it when the server is ready), its output in a log file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(argv: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``ets serve *argv --port FREE`` (argv: the role first, then its options; engine flags after ``--``);
    returns the process and its URL once it answers, or stops the bench naming the log."""
    proc = launch_serve(argv, log, env)
    return proc, served_url(proc, argv[0], log)


def launch_serve(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``ets serve *argv --port FREE`` started, not waited for (servers that start together: one
    :func:`served_url` each, after)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    before, sep, after = (argv[:argv.index("--")], ["--"], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [], [])
    cmd = [sys.executable, "-m", "ets", "serve", *before, "--port", str(free_port()), *sep, *after]
    print(f"starting ets serve {argv[0]} (its log: {log})", file=sys.stderr)
    with log.open("w") as err:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, **(env or {})})


def served_url(proc: subprocess.Popen, role: str, log: Path) -> str:
    """The URL ``ets serve`` prints once its server answers; stops the bench naming the log if it exits."""
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.wait()
        raise SystemExit(f"ets serve {role} did not start (exit {proc.returncode}); see {log}")
    return url


def stop_server(proc: subprocess.Popen, wait: float = 60) -> None:
    """SIGTERM (``ets serve`` stops its engine, then exits), then SIGKILL after ``wait`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
