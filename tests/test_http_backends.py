"""The HTTP policy and transport against local stand-in servers: request bodies,
n = k and its fallback, retries, timeouts, failover, load spreading, and a
server killed mid-run giving a clear error naming the URL, never a hang."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from ets.backends.base import BackendError, Context, SamplingParams
from ets.backends.http import HostPool, make_policy, parse_completion
from ets.backends.scripted import toy_world
from ets.config import SearchConfig
from ets.search import search
from standins.servers import StandinServer, free_port, run

PARAMS = SamplingParams(temperature=0.7, max_tokens=16, stop=("\n",), seed=3)
CTX = Context("What is 2+3?", "What is 2+3?", ())


@pytest.fixture
def openai_server():
    with StandinServer("openai", model="org/policy-7b") as server:
        yield server


# ---------------------------------------------------------------------------- policy requests


def test_one_request_per_expansion_with_n_k(openai_server):
    policy = make_policy([openai_server.url], model="org/policy-7b", max_concurrency=4, timeout=5)

    async def go():
        await policy.start()
        return await policy.generate(CTX, 4, PARAMS)

    steps = run(go())
    bodies = openai_server.posts("/v1/completions")
    assert len(bodies) == 1
    body = bodies[0]
    assert body["model"] == "org/policy-7b" and body["prompt"] == CTX.text
    assert body["n"] == 4 and body["max_tokens"] == 16 and body["temperature"] == 0.7
    assert body["stop"] == ["\n"] and body["seed"] == 3 and body["logprobs"] == 1
    assert body["include_stop_str_in_output"] is True  # vLLM (owned_by "vllm"): keep the delimiter
    assert len(steps) == 4
    for step in steps:
        assert step.text.endswith("\n") and step.finish_reason == "stop"
        assert step.num_tokens == len(step.text.split(" "))
    assert policy.model == "org/policy-7b"


def test_server_ignoring_n_falls_back_to_k_requests():
    with StandinServer("openai", model="m", ignore_n=True) as server:
        policy = make_policy(server.url, model=None, timeout=5)

        async def go():
            first = await policy.generate(CTX, 3, PARAMS)
            second = await policy.generate(CTX.child("a\n"), 3, PARAMS)
            return first, second

        first, second = run(go())
        ns = [b["n"] for b in server.posts("/v1/completions")]
    assert len(first) == 3 and len(second) == 3
    assert ns == [3, 1, 1, 1, 1, 1]  # one try with n=3, then n=1 requests only
    # distinct seeds so the k samples differ
    assert len({b["seed"] for b in server.posts("/v1/completions")[1:3]}) == 2


def test_stop_string_restored_per_server_family():
    # vLLM without include_stop_str_in_output: stop_reason says which stop matched
    resp = {"choices": [{"index": 1, "text": "b", "finish_reason": "stop", "stop_reason": "ки"},
                        {"index": 0, "text": "a", "finish_reason": "stop", "stop_reason": None},
                        {"index": 2, "text": "c c", "finish_reason": "length", "stop_reason": None}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 6,
                      "prompt_tokens_details": {"cached_tokens": 3}}}
    steps = parse_completion(resp, ("ки",))
    assert [s.text for s in steps] == ["a", "bки", "c c"]  # EOS (stop_reason None): nothing appended
    assert [s.finish_reason for s in steps] == ["stop", "stop", "length"]
    assert steps[0].prompt_tokens_computed == 2 and steps[0].prompt_tokens_reused == 3
    assert sum(s.num_tokens for s in steps) == pytest.approx(6, abs=1)
    # llama.cpp: no stop_reason, stop stripped: the delimiter is put back
    steps = parse_completion({"choices": [{"index": 0, "text": "x = 1", "finish_reason": "stop"}],
                              "usage": {"completion_tokens": 4}}, ("\n\n",))
    assert steps[0].text == "x = 1\n\n" and steps[0].num_tokens == 4


def test_count_tokens_falls_back_to_usage(openai_server):
    policy = make_policy(openai_server.url, model="org/policy-7b", timeout=5)
    assert run(policy.count_tokens("one two three four")) == 4


# ---------------------------------------------------------------------------- start-up checks


def test_wrong_model_fails_at_start_naming_url(openai_server):
    policy = make_policy(openai_server.url, model="other/model", timeout=5)
    with pytest.raises(BackendError) as err:
        run(policy.start())
    assert openai_server.url in str(err.value) and "other/model" in str(err.value)
    assert "org/policy-7b" in str(err.value)


def test_short_model_name_matches_served_path(openai_server):
    policy = make_policy(openai_server.url, model="policy-7b", timeout=5)
    run(policy.start())
    assert policy.model == "org/policy-7b"


def test_unreachable_server_fails_fast_naming_url():
    url = f"http://127.0.0.1:{free_port()}"
    policy = make_policy(url, timeout=5, backoff=0.05)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as err:
        run(policy.start())
    assert url in str(err.value) and "cannot reach the policy server" in str(err.value)
    assert time.monotonic() - t0 < 5


# ---------------------------------------------------------------------------- retries, timeouts


def test_5xx_retried_with_backoff_then_success():
    with StandinServer("openai", model="m", fail_first=2) as server:
        policy = make_policy(server.url, model="m", timeout=5, backoff=0.01, retries=3)
        steps = run(policy.generate(CTX, 2, PARAMS))
        assert len(steps) == 2
        assert policy.pool.stats.retries == 2  # the two 503s
        assert len(server.posts("/v1/completions")) == 3


def test_4xx_is_not_retried():
    with StandinServer("openai", model="m") as server:
        pool = HostPool(server.url, what="policy", timeout=5, backoff=0.01)
        with pytest.raises(BackendError) as err:
            run(pool.post("/v1/completions", {"model": "m", "prompt": "x", "bogus_field": 1}))
        assert "HTTP 400" in str(err.value) and "bogus_field" in str(err.value)
        assert pool.stats.retries == 0 and len(server.posts("/v1/completions")) == 1


def test_retries_exhausted_names_url_and_attempts():
    with StandinServer("openai", model="m", fail_first=100) as server:
        policy = make_policy(server.url, model="m", timeout=5, backoff=0.01, retries=2)
        with pytest.raises(BackendError) as err:
            run(policy.generate(CTX, 2, PARAMS))
        msg = str(err.value)
        assert server.url + "/v1/completions" in msg and "after 3 attempt(s)" in msg and "HTTP 503" in msg
        assert policy.pool.stats.retries == 2


def test_hanging_server_times_out_bounded():
    with StandinServer("openai", model="m", hang=True) as server:
        policy = make_policy(server.url, model="m", timeout=0.5, backoff=0.01, retries=1)
        t0 = time.monotonic()
        with pytest.raises(BackendError) as err:
            run(policy.generate(CTX, 2, PARAMS))
        assert time.monotonic() - t0 < 4
        assert "no answer within 0.5s" in str(err.value) and server.url in str(err.value)
        server.hang = False


# ---------------------------------------------------------------------------- several hosts


def test_load_spreads_over_hosts_and_fails_over():
    with StandinServer("openai", model="m") as a, StandinServer("openai", model="m") as b:
        policy = make_policy([a.url, b.url], model="m", timeout=5, imbalance=0)

        async def go():
            ctxs = [Context(f"q{i}", f"q{i}", ()) for i in range(12)]
            await asyncio.gather(*(policy.generate(c, 2, PARAMS) for c in ctxs))

        run(go())
        assert len(a.posts("/v1/completions")) > 0 and len(b.posts("/v1/completions")) > 0
    # one host dead: requests go to the other, no error
    with StandinServer("openai", model="m") as alive:
        dead = f"http://127.0.0.1:{free_port()}"
        policy = make_policy([dead, alive.url], model="m", timeout=5, backoff=0.01)
        policy._started = True  # skip the start check (it would refuse the dead host)
        policy.model = "m"
        steps = run(policy.generate(CTX, 2, PARAMS))
        assert len(steps) == 2 and len(alive.posts("/v1/completions")) >= 1


def test_same_question_sticks_to_one_host():
    with StandinServer("openai", model="m") as a, StandinServer("openai", model="m") as b:
        policy = make_policy([a.url, b.url], model="m", timeout=5)

        async def go():
            for i in range(4):  # sequential: loads equal, affinity decides
                await policy.generate(CTX.child(f"s{i}\n"), 2, PARAMS)

        run(go())
        counts = sorted([len(a.posts("/v1/completions")), len(b.posts("/v1/completions"))])
        assert counts == [0, 4]


# ---------------------------------------------------------------------------- a whole search; a killed server


def _scripted_reward():
    return toy_world()[1]


def test_search_through_http_policy_has_in_process_shape(openai_server):
    config = SearchConfig(width=4, select_method="softmax", policy_model_type="raw", max_step_tokens=16,
                          max_tokens=200, seed=1)
    policy = make_policy(openai_server.url, model="org/policy-7b", timeout=5)
    result = run(search("What is 2+3?", config, policy=policy, reward=_scripted_reward()))
    s = result.stats
    assert s.model_calls > 0 and s.tokens_generated > 0 and s.kv_cache_size > 0
    expansions = [b for b in openai_server.posts("/v1/completions") if "n" in b]  # not count_tokens' request
    assert s.expansions == len(expansions)
    assert result.answers and all({"text", "steps", "step_scores"} <= set(a) for a in result.answers)
    for a in result.answers:
        assert len(a["step_scores"]) == len(a["steps"])


def test_killed_server_mid_run_gives_error_naming_url(tmp_path, standin_script):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(standin_script), "--kind", "openai", "--port", str(port), "--model", "m"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("ready")
        url = f"http://127.0.0.1:{port}"
        policy = make_policy(url, model="m", timeout=3, backoff=0.05, retries=2)
        reward = _scripted_reward()
        calls = {"n": 0}

        class KillingReward:
            async def score(self, contexts):
                calls["n"] += 1
                if calls["n"] == 2:  # the server dies after the second round of expansions
                    proc.kill()
                    proc.wait()
                return await reward.score(contexts)

        config = SearchConfig(width=6, select_method="softmax", policy_model_type="raw", max_step_tokens=16,
                              max_tokens=400)
        t0 = time.monotonic()
        with pytest.raises(BackendError) as err:
            run(search("q: count the words", config, policy=policy, reward=KillingReward()))
        elapsed = time.monotonic() - t0
        assert url in str(err.value) and "after 3 attempt(s)" in str(err.value)
        assert policy.pool.stats.retries >= 2
        assert elapsed < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
