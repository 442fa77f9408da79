"""Live: ``ets serve policy --engine ets`` (our llama.cpp engine behind /v1/completions) with the built-in
SmolLM2, started once for the module; driven by our HTTP policy client and by raw requests: seeded answers
are the in-process engine's own draws, n samples are independent, stop strings and token counts are right,
cached prompt tokens are reported, concurrent requests share decoding calls, and ``ets run`` searches
through it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from ets.backends.base import Context, SamplingParams, request_seed  # noqa: E402
from ets.backends.http import make_policy  # noqa: E402
from ets.backends.llamacpp import LlamaCppPolicy  # noqa: E402
from ets.backends.llamacpp.weights import resolve_policy_model  # noqa: E402
from ets.formats import get_format  # noqa: E402
from standins.servers import free_port  # noqa: E402
from test_http_live import stop  # noqa: E402

MODEL = "smollm2-135m"
FORMAT = get_format("small_instruct")  # the built-in model's prompt format
QUESTION = "Tom has 3 apples and buys 2 more. How many apples does he have?"
PROMPT = FORMAT.prompt(QUESTION)
N_CTX = 2048
# one llama.cpp thread, server and in-process alike: on a shared 2-core machine two threads that wait on
# each other are 10x slower, and the same thread count keeps the two engines' arithmetic the same
THREADS = {"ETS_LLAMA_THREADS": "1"}


@pytest.fixture(scope="module")
def url():
    proc = subprocess.Popen(
        [sys.executable, "-m", "ets", "serve", "policy", "--engine", "ets", "--model", MODEL,
         "--port", str(free_port()), "--n-ctx", str(N_CTX), "--wait", "180", "--", "--max-body-mb", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **THREADS})
    try:
        found = proc.stdout.readline().strip()
        assert found.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else found
        yield found
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def local(url):
    """The server's model file (a built-in policy's faster copy, which may depend on the threads) and
    settings in this process."""
    info = httpx.get(url + "/info", trust_env=False).json()
    assert info["model_path"] == str(resolve_policy_model(info["model_path"])) and info["threads"] == 1
    policy = LlamaCppPolicy(info["model_path"], n_ctx=N_CTX, n_threads=1)
    policy.engine.split_last = True  # as the server's
    yield policy
    policy.close()


def post(url: str, path: str = "/v1/completions", **body) -> httpx.Response:
    return httpx.post(url + path, json={"prompt": PROMPT, **body}, timeout=120, trust_env=False)


def client_steps(url: str, n: int, params: SamplingParams, context: Context | None = None):
    policy = make_policy(url, model=MODEL, timeout=120)

    async def go():
        await policy.start()
        try:
            return await policy.generate(context or Context(QUESTION, PROMPT, ()), n, params)
        finally:
            await policy.aclose()

    return policy, asyncio.run(go())


def test_the_server_is_ours_and_the_client_speaks_its_dialect(url, local):
    models = httpx.get(url + "/v1/models", trust_env=False).json()["data"]
    assert [(m["id"], m["owned_by"]) for m in models] == [(MODEL, "ets")]
    policy = make_policy(url, model=MODEL, timeout=60)

    async def go():
        await policy.start()
        try:
            return await policy.count_tokens(PROMPT)
        finally:
            await policy.aclose()

    count = asyncio.run(go())
    assert policy.dialect[url] == "ets" and policy.protocol == "openai /v1/completions (ets)"
    assert count == len(local.engine.tokenize(PROMPT)) > 100
    body = policy.body(PROMPT, 4, SamplingParams(stop=("\n",), seed=1), "ets")
    assert "logprobs" not in body and body["include_stop_str_in_output"] is True


def test_a_seeded_request_is_the_in_process_engines_draw_and_repeats(url, local):
    params = SamplingParams(temperature=0.8, max_tokens=12, stop=FORMAT.stop, seed=3, stream=11)
    _, first = client_steps(url, 2, params)
    _, again = client_steps(url, 2, params)
    drawn = lambda steps: [(s.text, s.num_tokens, s.finish_reason) for s in steps]  # noqa: E731
    assert len(first) == 2 and drawn(first) == drawn(again)
    # the prompt once for both samples: evaluated the first time, found in the cache the second
    assert (first[0].prompt_tokens_computed, first[1].prompt_tokens_computed, again[0].prompt_tokens_computed) \
        == (len(local.engine.tokenize(PROMPT)), 0, 1)
    # the client's seed for this expansion, given to the engine in process: the same texts and counts
    seed = request_seed(3, 11, 0)
    mine = local.submit(PROMPT, 2, SamplingParams(temperature=0.8, max_tokens=12, stop=FORMAT.stop,
                                                  seed=seed)).result(timeout=120)
    assert drawn(first) == drawn(mine)
    for step in first:
        assert 1 <= step.num_tokens <= 12
        assert step.finish_reason == "length" or step.text.endswith(FORMAT.stop[0])
    other = client_steps(url, 2, SamplingParams(temperature=0.8, max_tokens=12, stop=FORMAT.stop, seed=4,
                                                stream=11))[1]
    assert drawn(other) != drawn(first)


def test_the_samples_of_one_request_are_independent_draws(url):
    # the same stream for every sample would give n equal texts; hot sampling makes equal texts rare
    differ = 0
    for seed in range(4):
        choices = post(url, n=2, max_tokens=8, temperature=1.5, seed=seed).json()["choices"]
        assert [c["index"] for c in choices] == [0, 1]
        differ += choices[0]["text"] != choices[1]["text"]
    assert differ >= 3


def test_stop_strings_end_the_text_and_are_cut_unless_kept(url):
    cut = post(url, n=2, max_tokens=16, temperature=0.8, seed=2, stop=[" "]).json()
    kept = post(url, n=2, max_tokens=16, temperature=0.8, seed=2, stop=" ", include_stop_str_in_output=True).json()
    for a, b in zip(cut["choices"], kept["choices"]):
        assert a["finish_reason"] == b["finish_reason"] == "stop" and a["stop_reason"] == b["stop_reason"] == " "
        assert b["text"] == a["text"] + " " and " " not in a["text"].strip()
        assert a["ets"]["completion_tokens"] == b["ets"]["completion_tokens"] <= 16
    assert cut["usage"]["completion_tokens"] == sum(c["ets"]["completion_tokens"] for c in cut["choices"])


def test_a_length_cut_counts_max_tokens_per_choice(url):
    body = post(url, n=3, max_tokens=5, temperature=0.8, seed=6).json()
    assert [(c["finish_reason"], c["stop_reason"], c["ets"]["completion_tokens"]) for c in body["choices"]] == \
        [("length", None, 5)] * 3
    assert body["usage"]["completion_tokens"] == 15


def test_the_prompt_found_in_the_cache_is_reported_as_cached_tokens(url):
    prompt = FORMAT.prompt("A box holds 7 pens. How many pens are in 3 boxes?")
    first = post(url, prompt=prompt, max_tokens=2, seed=1).json()["usage"]
    second = post(url, prompt=prompt, max_tokens=2, seed=1).json()["usage"]
    assert first["prompt_tokens"] == second["prompt_tokens"] > 100
    # all but the last token, whose logits are computed again
    assert second["prompt_tokens_details"]["cached_tokens"] == second["prompt_tokens"] - 1
    _, steps = client_steps(url, 1, SamplingParams(max_tokens=2, seed=1),
                            Context("q", prompt, ()))
    assert (steps[0].prompt_tokens_computed, steps[0].prompt_tokens_reused) == (1, second["prompt_tokens"] - 1)


def test_concurrent_requests_are_decoded_together(url):
    """Four requests in flight at once: one llama_decode call extends all of them, so the calls are far
    fewer than the tokens (a server decoding one request at a time makes a call a token)."""
    info = lambda: httpx.get(url + "/info", trust_env=False).json()  # noqa: E731
    before = info()
    prompts = [FORMAT.prompt(f"A shop sells {k} pens a day. How many pens does it sell in {k + 2} days?")
               for k in (3, 4, 5, 6)]

    async def go():
        async with httpx.AsyncClient(timeout=120, trust_env=False) as client:
            return await asyncio.gather(*(client.post(url + "/v1/completions", json={
                "prompt": p, "max_tokens": 12, "temperature": 0.8, "seed": 1}) for p in prompts))

    started = time.monotonic()
    answers = [r.json() for r in asyncio.run(go())]
    elapsed = time.monotonic() - started
    after = info()
    tokens = sum(a["usage"]["completion_tokens"] for a in answers)
    calls = after["decode_calls"] - before["decode_calls"]
    assert after["requests"] - before["requests"] == 4 and tokens >= 4 * 6
    # batched: about 12 token calls and a prompt call each; one at a time: a call for every token
    assert calls <= tokens / 2, (calls, tokens, elapsed)


@pytest.mark.parametrize("fields, status, param", [
    ({"logprobs": 1}, 400, "logprobs"),
    ({"stream": True}, 400, "stream"),
    ({"top_p": 0.5}, 400, "top_p"),
    ({"n": 0}, 400, "n"),
    ({"prompt": ["a", "b"]}, 400, "prompt"),
    ({"max_tokens": N_CTX}, 400, "max_tokens"),
    ({"temperature": "hot"}, 400, "temperature"),
    ({"model": "another"}, 404, "model"),
])
def test_a_field_the_engine_cannot_honour_is_refused_naming_it(url, fields, status, param):
    r = post(url, **{"max_tokens": 2, **fields})
    assert r.status_code == status and r.json()["error"]["param"] == param, r.text
    assert param in r.json()["error"]["message"]


def test_a_body_over_the_limit_is_413(url):
    r = post(url, prompt="x " * 40_000, max_tokens=2)
    assert r.status_code == 413 and "--max-body-mb" in r.json()["error"]["message"]


def test_ets_run_searches_through_the_server(url, tmp_path):
    out = tmp_path / "run" / "answers.json"
    proc = subprocess.run(
        [sys.executable, "-m", "ets", "run", "--input_path", "gsm8k", "--num_samples", "2", "--width", "2",
         "--policy_host", url, "--policy_model", MODEL, "--prompt_format", "small_instruct",
         "--select_method", "softmax", "--set", "max_step_tokens=8", "--set", "max_depth=2", "--set", "seed=1",
         "--output_path", str(out), "--quiet"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    answers = json.loads(out.read_text())
    run = json.loads((out.parent / "run.json").read_text())
    assert len(answers) == 2 and run["protocols"]["policy"] == "openai /v1/completions (ets)"
    trees = sorted((out.parent / "trees").iterdir())
    assert len(trees) == 2
