"""Live: llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``) with the
built-in CPU model and our PRM server, both started by ``ets serve`` on loopback
ports, once for the module; a search through both HTTP backends has the shape
and statistics of an in-process run; ``ets run`` against them writes the run files."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from dataclasses import fields

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from ets.backends.base import BackendError, Context, SamplingParams  # noqa: E402
from ets.backends.http import make_policy, make_reward  # noqa: E402
from ets.config import SearchConfig  # noqa: E402
from ets.search import search  # noqa: E402
from ets.stats import SearchStats  # noqa: E402
from standins.servers import free_port  # noqa: E402

FORMAT = "small_instruct"  # the CPU model's prompt format
QUESTION = "Tom has 3 apples and buys 2 more. How many apples does he have?"


def start(role: str, port: int) -> tuple[subprocess.Popen, str]:
    """``ets serve ROLE --port PORT``; returns once it printed the URL (it waits for the server to answer)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ets.cli", "serve", role, "--port", str(port), "--wait", "120"]
        + (["--n-ctx", "2048"] if role == "policy" else []),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"ets serve {role} did not print its URL (exit code {proc.wait()})")
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # ets serve stops its engine, then exits
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def servers():
    policy_proc, policy_url = start("policy", free_port())
    try:
        reward_proc, reward_url = start("reward", free_port())
    except Exception:
        stop(policy_proc)
        raise
    try:
        assert policy_url.startswith("http://127.0.0.1:") and reward_url.startswith("http://127.0.0.1:")
        yield policy_url, reward_url
    finally:
        stop(reward_proc)
        stop(policy_proc)


def config(**kw) -> SearchConfig:
    base = dict(width=2, select_method="softmax", prompt_format=FORMAT, max_step_tokens=12, max_tokens=560,  # prompt ~450
                max_depth=2, temperature=0.8, seed=5)
    base.update(kw)
    return SearchConfig(**base)


def test_llamacpp_server_policy(servers):
    policy_url, _ = servers
    policy = make_policy(policy_url, model=None, timeout=60)
    from ets.formats import get_format

    fmt = get_format(FORMAT)
    ctx = Context(QUESTION, fmt.prompt(QUESTION), ())

    async def go():
        await policy.start()
        n = await policy.count_tokens(ctx.prompt)
        steps = await policy.generate(ctx, 2, SamplingParams(temperature=0.8, max_tokens=8, stop=fmt.stop, seed=1))
        return n, steps

    n, steps = asyncio.run(go())
    assert policy.dialect[policy_url] == "llamacpp"
    assert policy.model.endswith(".gguf")
    assert n > 10
    assert len(steps) == 2
    for s in steps:
        assert 1 <= s.num_tokens <= 8
        assert s.finish_reason == "length" or s.text.endswith(fmt.stop[0])


def test_search_through_both_http_backends_matches_in_process_shape(servers):
    policy_url, reward_url = servers
    policy = make_policy(policy_url, timeout=60)
    reward = make_reward(reward_url, reward_model_type="llemma", timeout=60)  # detected as our server
    result = asyncio.run(search(QUESTION, config(), policy=policy, reward=reward, problem_id=0))
    assert reward.api == "ets"
    # the same fields as an in-process run's statistics, all filled
    assert {f.name for f in fields(result.stats)} == {f.name for f in fields(SearchStats)}
    s = result.stats
    assert s.model_calls > 0 and s.tokens_generated > 0 and s.kv_cache_size > 0 and s.expansions > 0
    assert s.time > 0
    nodes = result.tree.nodes
    assert len(nodes) == 1 + s.model_calls
    for node in nodes[1:]:
        assert 0.0 <= node.score <= 1.0
    for a in result.answers:
        assert set(a) >= {"text", "steps", "step_scores"} and len(a["steps"]) == len(a["step_scores"])


def test_ets_run_with_policy_host_and_reward_host(servers, tmp_path):
    policy_url, reward_url = servers
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": QUESTION, "answer": "5"}) + "\n")
    out = tmp_path / "out" / "answers.json"
    proc = subprocess.run(
        [sys.executable, "-m", "ets.cli", "run", "--input_path", str(data), "--output_path", str(out),
         "--policy_host", policy_url, "--reward_host", reward_url, "--prompt_format", FORMAT,
         "--width", "2", "--select_method", "softmax", "--set", "max_step_tokens=8", "--set", "max_depth=2",
         "--quiet"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    answers = json.loads(out.read_text())
    assert len(answers) == 1 and {"id", "question", "model_answer", "total_tokens"} <= set(answers[0])
    stats = (out.parent / "stats.log").read_text()
    assert "Number of Model Calls:" in stats and "Total KV cache size:" in stats


def test_wrong_policy_model_name_fails_fast(servers):
    policy_url, _ = servers
    policy = make_policy(policy_url, model="meta-llama/Llama-3.1-8B-Instruct", timeout=10)
    with pytest.raises(BackendError) as err:
        asyncio.run(policy.start())
    assert policy_url in str(err.value) and "Llama-3.1-8B-Instruct" in str(err.value)
