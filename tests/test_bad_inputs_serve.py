"""`ets serve` and our PRM server say the truth.

* a server is `ready` only when the process started answers: a port out of range or in use, a host that
  is not this machine's, a model file that is not there are refused (exit 2, one line) before anything
  starts; a start that fails is one line and exit 1, never 143; Ctrl-C is 130 and SIGTERM 143;
* ``POST /score``: a text the PRM cannot read is a 4xx naming the context (never a 500 the client
  retries), a body over the limit is 413 with a message, and ``/health`` answers while a batch is scored.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import pytest
from standins.servers import StandinServer, free_port

from ets.backends.base import Context
from ets.backends.scripted import toy_world
from ets.cli import main
from ets.serve.commands import says_token, wait_ready

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from fastapi.testclient import TestClient  # noqa: E402

from ets.serve.reward_server import create_app  # noqa: E402


def context(*steps: str) -> dict:
    return {"question": "What is 1 + 1?", "prompt": "What is 1 + 1?", "steps": list(steps)}


# ------------------------------------------------------------------ refused before the engine starts


def never_started(*args, **kwargs):
    raise AssertionError("an engine was started")


@pytest.fixture
def listening():
    """A port another program listens on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


REFUSED = [
    ("--port 70000", ["reward", "--port", "70000"], "--port 70000: a port is a number from 1 to 65535"),
    ("--port 0", ["policy", "--port", "0"], "--port 0: a port is a number from 1 to 65535"),
    ("--host not an address", ["reward", "--host", "999.1.1.1"], "--host 999.1.1.1: not an address or name"),
    ("--host not this machine's", ["reward", "--host", "192.0.2.1"], "--host 192.0.2.1: not an address of this machine"),
    ("--model not there (ets)", ["reward", "--model", "/nonexistent.gguf"],
     "--model /nonexistent.gguf: no such file; expected a GGUF file or a built-in policy"),
    ("--model not there (llamacpp)", ["policy", "--model", "/nonexistent.gguf"], "--model /nonexistent.gguf: no such file"),
    ("--wait 0", ["reward", "--wait", "0"], "--wait 0.0: expected a number of seconds > 0"),
    ("vllm without --model", ["policy", "--engine", "vllm"], "policy --engine vllm needs --model"),
]


@pytest.mark.parametrize("argv, said", [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED])
def test_refused_in_one_line_before_any_engine_starts(argv, said, monkeypatch, capsys):
    monkeypatch.setattr("ets.serve.commands.subprocess.Popen", never_started)
    if "--port" not in argv:
        argv = [*argv, "--port", str(free_port())]
    assert main(["serve", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"ets serve: {said}"), err
    assert len([line for line in err.splitlines() if line.startswith("ets serve:")]) == 1


def test_a_port_in_use_is_refused_not_reported_ready(listening, monkeypatch, capsys):
    monkeypatch.setattr("ets.serve.commands.subprocess.Popen", never_started)
    assert main(["serve", "reward", "--port", str(listening)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "ready" not in err
    assert err == (f"ets serve: port {listening} on 127.0.0.1 is in use (another server?): choose another --port, "
                   "or stop that server\n")


def ets_serve(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ets.cli", "serve", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_another_server_on_the_port_is_refused_even_when_it_answers_health():
    with StandinServer("openai") as other:  # answers GET /health with 200
        proc = ets_serve("reward", "--port", str(other.port))
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and out == "" and "ready" not in err
    assert err.strip().splitlines() == [f"ets serve: port {other.port} on 127.0.0.1 is in use (another server?): "
                                        "choose another --port, or stop that server"]


# ------------------------------------------------------------------ readiness is the started process's


def test_a_health_answer_without_our_token_is_not_ready():
    with StandinServer("openai") as other:
        with pytest.raises(TimeoutError, match=r"within 1s \(another server answered\)"):
            wait_ready(other.url, None, timeout=1, path="/health", ours=says_token("ours"))
        wait_ready(other.url, None, timeout=1, path="/health")  # without the check, any 200 would do


def test_an_answer_after_the_process_exited_is_not_ready():
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with StandinServer("openai") as other:
        proc.wait()
        with pytest.raises(RuntimeError, match="exited with code 3"):
            wait_ready(other.url, proc, timeout=5)


def test_a_start_that_fails_is_one_line_and_exit_1_not_143(tmp_path):
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a model" * 100)
    proc = ets_serve("reward", "--model", str(garbage), "--port", str(free_port()))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and out == "" and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("ets serve:")]
    assert lines[0].startswith("ets serve: starting reward server:")  # what it runs, then one line: why it stopped
    assert lines[1:] == [err.strip().splitlines()[-1]]
    assert lines[1].startswith("ets serve: cannot load the PRM:") and str(garbage) in lines[1]


def test_our_server_run_alone_says_why_in_one_line():
    out = subprocess.run([sys.executable, "-m", "ets.serve.reward_server", "--port", "70000"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and out.stderr == "ets reward server: --port 70000: a port is a number from 1 to 65535\n"


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_ready_means_our_server_answers_and_a_signal_stops_it(sig, code):
    port = free_port()
    proc = ets_serve("reward", "--port", str(port))
    url = proc.stdout.readline().strip()  # printed once ready
    assert url == f"http://127.0.0.1:{port}"
    import httpx

    health = httpx.get(url + "/health", trust_env=False).json()
    assert health["status"] == "ok" and len(health["token"]) == 32
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code and "Traceback" not in err, err
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health", trust_env=False, timeout=2)


# ------------------------------------------------------------------ /score: what the PRM cannot read


@pytest.fixture
def arithmetic_client():
    from ets.backends.arithmetic import ArithmeticPRM

    with TestClient(create_app(ArithmeticPRM.for_policy(None), model_name="arithmetic")) as client:
        yield client


@pytest.mark.parametrize("step, why", [
    ("1" * 5000 + " + 1 = 2", "a number with too many digits"),
    ("(" * 330 + "1" + ")" * 330 + " = 1", "nested too deeply"),
], ids=["5000 digits", "330 nested parentheses"])
def test_a_text_the_prm_cannot_read_is_a_422_naming_the_context(step, why, arithmetic_client):
    fine = context("1 + 1 = 2")
    r = arithmetic_client.post("/score", json={"contexts": [fine, fine, context("1 + 1 = 2\n", step), fine]})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"contexts[2]: the PRM cannot read it: {why} (")
    assert arithmetic_client.post("/score", json={"contexts": [fine]}).status_code == 200  # the server goes on


def test_a_broken_prm_is_still_a_500():
    class Broken:
        async def score(self, contexts):
            raise ValueError("model not loaded")

    with TestClient(create_app(Broken())) as client:
        r = client.post("/score", json={"contexts": [context("x")]})
    assert r.status_code == 500 and "model not loaded" in r.json()["detail"]


def test_malformed_requests_are_422():
    with TestClient(create_app(toy_world()[1])) as client:
        assert client.post("/score", content=b"{not json", headers={"content-type": "application/json"}
                           ).status_code == 422
        missing = client.post("/score", json={"contexts": [{"question": "q"}]})
        assert missing.status_code == 422 and "prompt" in str(missing.json()["detail"])


# ------------------------------------------------------------------ /score: big bodies, a busy PRM


def test_a_body_over_the_limit_is_413_with_a_message():
    with TestClient(create_app(toy_world()[1], max_body_bytes=1000)) as client:
        big = {"contexts": [context("1 + 1 = 2\n" * 200)]}
        r = client.post("/score", json=big)
        assert r.status_code == 413
        assert r.json()["detail"].startswith("the request body is ") and "over the server's limit of 1000" in \
            r.json()["detail"] and "send fewer contexts a request" in r.json()["detail"]

        def chunks():  # no Content-Length: counted as it comes
            yield b'{"contexts": [' + b" " * 1500
            yield b"]}"

        r = client.post("/score", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "more than 1000 bytes" in r.json()["detail"]
        assert client.post("/score", json={"contexts": [context("1 + 1 = 2")]}).status_code == 200


def test_the_default_limit_refuses_5_mb():
    with TestClient(create_app(toy_world()[1])) as client:
        r = client.post("/score", json={"contexts": [context("12 + 5 = 17\n" * 420_000)]})
    assert r.status_code == 413 and "over the server's limit of 4194304" in r.json()["detail"]


class Slow:
    """A PRM whose scoring holds its thread (as pure-Python work does) for ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def score(self, contexts):
        time.sleep(self.seconds)
        return [0.5 for _ in contexts]


@pytest.fixture
def live():
    """Serve an app on a loopback port in a thread: ``live(app) -> url``."""
    servers = []

    def start(app) -> str:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, None, timeout=10, path="/health")
        return url

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


def test_health_answers_while_a_batch_is_scored(live):
    import httpx

    url = live(create_app(Slow(3.0)))
    scoring = threading.Thread(target=httpx.post, args=(url + "/score",),
                               kwargs={"json": {"contexts": [context("x")]}, "timeout": 30, "trust_env": False})
    scoring.start()
    time.sleep(0.5)  # the batch is being scored now
    started = time.monotonic()
    assert httpx.get(url + "/health", trust_env=False, timeout=5).status_code == 200
    assert time.monotonic() - started < 1.0
    scoring.join()


def test_requests_beyond_the_queue_are_503_busy(live):
    import httpx

    url = live(create_app(Slow(2.0), max_waiting=1))
    first = threading.Thread(target=httpx.post, args=(url + "/score",),
                             kwargs={"json": {"contexts": [context("x")]}, "timeout": 30, "trust_env": False})
    first.start()
    time.sleep(0.5)
    r = httpx.post(url + "/score", json={"contexts": [context("y")]}, trust_env=False, timeout=30)
    assert r.status_code == 503 and r.json()["detail"] == "busy: 1 requests are waiting for the PRM"
    first.join()
    assert httpx.post(url + "/score", json={"contexts": [context("y")]}, trust_env=False, timeout=30).json() == \
        {"model": "ets-prm", "scores": [0.5]}


def test_scores_are_the_prms_through_the_scoring_thread():
    reward = toy_world()[1]
    ctxs = [Context("q", "q", ("a\n",) * i) for i in range(1, 6)]
    body = {"contexts": [{"question": c.question, "prompt": c.prompt, "steps": list(c.steps)} for c in ctxs]}
    with TestClient(create_app(reward)) as client:
        assert client.post("/score", json=body).json()["scores"] == asyncio.run(reward.score(ctxs))


def test_the_reason_file_is_removed(tmp_path, monkeypatch):
    """`ets serve` leaves no file of its own behind when a start fails."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"x" * 100)
    assert main(["serve", "reward", "--model", str(garbage), "--port", str(free_port())]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.gguf"]
    assert os.environ.get("ETS_SERVE_TOKEN") is None  # the token went to the engine only
