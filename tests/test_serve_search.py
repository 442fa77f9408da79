"""`ets serve search`: the search behind an OpenAI endpoint, driven by the openai client.

Mostly against scripted worlds whose answers and statistics are known by hand (the app in-process,
the client over FastAPI's TestClient); the bad bodies, the busy server and the timeout; and once a
real `ets serve search` process with the built-in CPU models.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from standins.servers import free_port

from ets.backends.base import BackendError
from ets.backends.scripted import ScriptedPolicy, ScriptedReward, toy_world
from ets.backends.base import Backends
from ets.config import SearchConfig
from ets.evaluate.extract import extract_answer
from ets.search import search

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from fastapi.testclient import TestClient  # noqa: E402

from ets.serve.search_server import create_app, setting_from  # noqa: E402

QUESTION = "What is 3 + 4?"  # 5 words: the raw prompt is 5 tokens
MODEL = "ets-search"
# path p's answer and the PRM's score of it: 7 wins a vote weighted by the last score (0.6 + 0.6 > 0.9),
# 5 wins best-of-N by the last score
ANSWERS = {0: ("5", 0.9), 1: ("7", 0.6), 2: ("7", 0.6), 3: ("9", 0.3)}


class Recording(ScriptedPolicy):
    """A two-step world: step one is ``Step one, path k.``, step two answers ANSWERS[k]; the sampling
    parameters of every call are kept."""

    def __init__(self, delay: float = 0.0):
        super().__init__(self.step, delay=delay)
        self.params = []

    @staticmethod
    def step(question, steps, k):
        if not steps:
            return f"Step one, path {k}.\n"
        path = int(steps[0].split("path ")[1][0])
        return f"The answer is: {ANSWERS[path][0]}\n"

    async def generate(self, context, n, params):
        self.params.append(params)
        return await super().generate(context, n, params)


def score(question, steps):
    return 0.5 if len(steps) == 1 else ANSWERS[int(steps[0].split("path ")[1][0])][1]


def world(delay: float = 0.0, **keys) -> tuple[Backends, SearchConfig]:
    config = SearchConfig.from_dict({"select_method": "best_of_n", "width": 4, "prompt_format": "raw",
                                     "temperature": 0.8, "max_step_tokens": 8, "max_tokens": 64, **keys})
    return Backends(Recording(delay), ScriptedReward(score)), config


def client_of(test_client) -> "openai.OpenAI":
    """The openai client, talking to the app through FastAPI's TestClient (an httpx.Client)."""
    return openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=test_client, max_retries=0)


def ask(client, content: str = QUESTION, **kwargs):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}], **kwargs)


# ------------------------------------------------------------------ answers and statistics


def test_the_answer_is_the_trajectory_the_weighted_vote_picks_with_the_search_statistics():
    backends, config = world()
    with TestClient(create_app(backends, config)) as http:
        reply = ask(client_of(http))
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "Step one, path 2.\nThe answer is: 7"  # the vote's winner: the last 7
    assert reply.choices[0].finish_reason == "stop" and reply.model == MODEL
    ets = reply.model_extra["ets"]
    assert (ets["answer"], ets["picked"], ets["trajectories"]) == ("7", 2, 4)
    assert ets["selection"] == "majority_vote/weighted/last"
    assert (ets["select_method"], ets["width"]) == ("best_of_n", 4)
    stats = ets["stats"]
    # best-of-N at width 4: 4 first steps, then one answer under each; 4 tokens a step
    assert (stats["model_calls"], stats["expansions"], stats["tokens_generated"]) == (8, 5, 32)
    # depth 0: the prompt (5); depth 1: the prompt and the 4 first steps (5 + 16)
    assert stats["kv_cache_size"] == 5 + 21
    assert 0 <= stats["time"] < 5 and "tree" not in ets
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (5, 32, 37)


def test_best_of_n_by_the_last_score_picks_the_highest_trajectory():
    backends, config = world()
    with TestClient(create_app(backends, config, setting=setting_from("last", False, None))) as http:
        reply = ask(client_of(http))
    assert reply.choices[0].message.content == "Step one, path 0.\nThe answer is: 5"
    assert (reply.model_extra["ets"]["answer"], reply.model_extra["ets"]["selection"]) == ("5", "best_of_n/last")


def test_completions_answer_the_prompt_and_return_the_tree_on_request():
    backends, config = world()
    with TestClient(create_app(backends, config)) as http:
        reply = client_of(http).completions.create(model=MODEL, prompt=QUESTION, extra_body={"ets": {"return_tree": True}})
    assert reply.object == "text_completion" and reply.choices[0].text == "Step one, path 2.\nThe answer is: 7"
    tree = reply.model_extra["ets"]["tree"]
    assert len(tree) == 9 and tree[0]["text"] == QUESTION  # the root and 4 + 4 children
    assert sorted(node["text"][len(QUESTION):] for node in tree if node["leaf"]) == [
        f"Step one, path {p}.\nThe answer is: {ANSWERS[p][0]}\n" for p in range(4)]


def test_temperature_and_seed_apply_and_max_tokens_lowers_the_budget():
    backends, config = world(seed=3)
    with TestClient(create_app(backends, config)) as http:
        client = client_of(http)
        ask(client)
        assert {(p.temperature, p.seed) for p in backends.policy.params} == {(0.8, 3)}  # the config's
        backends.policy.params.clear()
        ask(client, temperature=0.25, seed=11)
        assert {(p.temperature, p.seed) for p in backends.policy.params} == {(0.25, 11)}
        # 4 tokens after the prompt: the first step uses them up, so no trajectory reaches its answer
        short = ask(client, max_tokens=4)
    assert short.choices[0].message.content == "" and short.choices[0].finish_reason == "length"
    assert short.model_extra["ets"]["answer"] is None and short.model_extra["ets"]["stats"]["model_calls"] == 4


def test_the_server_searches_as_the_library_does():
    """ETS on the toy world: the server's statistics and answer are those of ets.search with the same config."""
    policy, reward = toy_world()
    config = SearchConfig.from_dict({"width": 6, "prompt_format": "raw", "lambdas": 0.0, "seed": 5})
    direct = asyncio.run(search("How many legs do 3 spiders have?", config, policy=policy, reward=reward))
    with TestClient(create_app(Backends(policy, reward), config)) as http:
        reply = ask(client_of(http), "How many legs do 3 spiders have?")
    stats = reply.model_extra["ets"]["stats"]
    assert {k: v for k, v in stats.items() if k != "time"} == \
        {k: v for k, v in direct.stats.to_dict().items() if k != "time"}
    texts = ["".join(a["steps"]).strip() for a in direct.answers]
    assert reply.choices[0].message.content in texts
    assert reply.model_extra["ets"]["trajectories"] == len(direct.answers)


def test_health_models_and_info():
    backends, config = world()
    with TestClient(create_app(backends, config, token="t0k", model_name="my-ets")) as http:
        assert http.get("/health").json() == {"status": "ok", "token": "t0k"}
        assert [m.id for m in client_of(http).models.list()] == ["my-ets"]
        info = http.get("/info").json()
    assert info["server"] == "ets-search" and info["config"]["width"] == 4 and info["max_searches"] == 8


# ------------------------------------------------------------------ what the client must change


def chat_body(**fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}], **fields}


BAD = [
    ("not JSON", b"{not json", 400, "the body is not JSON"),
    ("a JSON list", [1, 2], 400, "the body is a JSON list; expected an object"),
    ("no messages", {"model": MODEL}, 400, "messages: expected a non-empty list"),
    ("no user message", {"model": MODEL, "messages": [{"role": "system", "content": "Be brief."}]}, 400,
     "messages: no user message"),
    ("an empty question", chat_body(messages=[{"role": "user", "content": "  "}]), 400, "the question is empty"),
    ("an image", chat_body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]), 400,
     "messages[0].content[0]: a image_url part; the search reads text parts only"),
    ("n 2", chat_body(n=2), 400, "n: 2 is not supported by the search"),
    ("stream", chat_body(stream=True), 400, "stream: true is not supported by the search"),
    ("top_p", chat_body(top_p=0.5), 400, "top_p: 0.5 is not supported by the search"),
    ("a temperature string", chat_body(temperature="hot"), 400, 'temperature: expected a number, got "hot"'),
    ("a negative temperature", chat_body(temperature=-1), 400, "temperature: must be >= 0.0, got -1.0"),
    ("a fractional seed", chat_body(seed=1.5), 400, "seed: expected an integer, got 1.5"),
    ("max_tokens 0", chat_body(max_tokens=0), 400, "max_tokens: expected at least 1, got 0"),
    ("an unknown ets key", chat_body(ets={"width": 2}), 400, "ets: expected an object whose only key is return_tree"),
    ("another model", chat_body(model="gpt-4o"), 404, "model \"gpt-4o\": not served here; this server serves 'ets-search'"),
]


@pytest.mark.parametrize("body, status, said", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_a_bad_body_is_refused_naming_what_to_change(body, status, said):
    backends, config = world()
    with TestClient(create_app(backends, config)) as http:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = http.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert error["message"].startswith(said) and r.json()["detail"] == error["message"]
        assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
        assert backends.policy.requests == 0  # nothing was searched
        assert http.post("/v1/chat/completions", json=chat_body()).status_code == 200  # the server goes on


def test_the_openai_client_sees_a_refusal_as_its_own_error():
    backends, config = world()
    with TestClient(create_app(backends, config)) as http:
        with pytest.raises(openai.BadRequestError, match="n: 3 is not supported by the search") as caught:
            ask(client_of(http), n=3)
        assert caught.value.param == "n"
        with pytest.raises(openai.BadRequestError, match="prompt: expected one question as a string"):
            client_of(http).completions.create(model=MODEL, prompt=["one question", "and another"])


def test_a_body_over_the_limit_is_413():
    backends, config = world()
    with TestClient(create_app(backends, config, max_body_bytes=2000)) as http:
        r = http.post("/v1/chat/completions", json=chat_body(messages=[{"role": "user", "content": "x " * 2000}]))
    assert r.status_code == 413
    assert "over the server's limit of 2000 (--max-body-mb): send one question a request" in r.json()["error"]["message"]


def test_a_question_longer_than_the_budget_is_400():
    backends, config = world(max_tokens=10, max_step_tokens=4)
    with TestClient(create_app(backends, config)) as http:
        r = http.post("/v1/chat/completions", json=chat_body(messages=[{"role": "user", "content": "word " * 12}]))
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("the question: the prompt is 12 tokens")


# ------------------------------------------------------------------ busy, slow, broken


def test_searches_beyond_num_threads_wait_and_beyond_max_waiting_are_503():
    backends, config = world(delay=0.4, num_threads=1)  # a search: two policy rounds, about 0.8 s
    with TestClient(create_app(backends, config, max_waiting=1)) as http:
        client = client_of(http)
        replies = {}

        def first(name):
            replies[name] = ask(client)

        running = threading.Thread(target=first, args=("running",))
        running.start()
        time.sleep(0.3)
        waiting = threading.Thread(target=first, args=("waiting",))
        waiting.start()
        time.sleep(0.2)
        with pytest.raises(openai.InternalServerError, match="busy: 1 searches are running and 1 waiting") as busy:
            ask(client)
        assert busy.value.status_code == 503
        running.join()
        waiting.join()
    assert replies["running"].model_extra["ets"]["waited"] < 0.2
    assert replies["waiting"].model_extra["ets"]["waited"] > 0.4  # it waited for the first search's slot
    assert replies["waiting"].choices[0].message.content == "Step one, path 2.\nThe answer is: 7"


def test_a_search_over_the_timeout_is_504_and_its_slot_comes_free():
    backends, config = world(delay=1.0, num_threads=1)
    with TestClient(create_app(backends, config, timeout=0.3)) as http:
        started = time.monotonic()
        r = http.post("/v1/chat/completions", json=chat_body())
        assert r.status_code == 504 and time.monotonic() - started < 1.0
        assert r.json()["error"]["message"].startswith("the search did not end within the server's --timeout of 0.3 s")
        backends.policy.delay = 0.0
        assert http.post("/v1/chat/completions", json=chat_body()).status_code == 200  # the slot is free again


@pytest.mark.parametrize("exc, status, said", [
    (BackendError("HTTP 500 from the policy", "http://127.0.0.1:9/v1/completions"), 502,
     "a model server failed: HTTP 500 from the policy (http://127.0.0.1:9/v1/completions)"),
    (ValueError("no model loaded"), 500, "the search failed: ValueError: no model loaded"),
], ids=["a model server", "the search"])
def test_a_failure_is_a_5xx_saying_what_broke(exc, status, said):
    class Broken(ScriptedPolicy):
        async def generate(self, context, n, params):
            raise exc

    backends, config = world()
    backends.policy = Broken(Recording.step)
    with TestClient(create_app(backends, config)) as http:
        r = http.post("/v1/chat/completions", json=chat_body())
    assert r.status_code == status and r.json()["error"]["message"] == said


# ------------------------------------------------------------------ the command


def test_the_command_passes_its_flags_to_the_server(capsys):
    from ets.cli import main

    assert main(["serve", "search", "--dry-run", "--config", "configs/cpu_ets.yaml", "--width", "2",
                 "--policy_host", "http://127.0.0.1:8011", "--set", "seed=3", "--max-waiting", "4"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.endswith("-m ets.serve.search_server --config configs/cpu_ets.yaml --set seed=3 --width 2 "
                        "--policy_host http://127.0.0.1:8011 --max-waiting 4")


def test_a_bad_config_stops_the_server_in_one_line():
    out = subprocess.run([sys.executable, "-m", "ets.serve.search_server", "--scripted", "--set", "width=0",
                          "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("ets search server: ") and out.stderr.count("\n") == 1
    assert "width" in out.stderr and ">= 1" in out.stderr


def test_ets_serve_search_with_the_builtin_cpu_models():
    """A real `ets serve search` process, built-in SmolLM2 and arithmetic PRM, width 2: the openai client's
    answer is a finished trajectory of the tree the server searched, with its statistics."""
    port = free_port()
    # one llama.cpp thread: on a shared 2-core machine two threads that wait on each other are 10x slower
    proc = subprocess.Popen([sys.executable, "-m", "ets", "serve", "search", "--width", "2", "--set", "seed=1",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "ETS_LLAMA_THREADS": "1"})
    try:
        url = proc.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}", proc.stderr.read() if proc.poll() is not None else url
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "system", "content": "You solve math word problems."},
                                   {"role": "user", "content": "A pen costs 2 dollars. How much do 4 pens cost?"}],
            extra_body={"ets": {"return_tree": True}})
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143 and "Traceback" not in err, err
    content, ets = reply.choices[0].message.content, reply.model_extra["ets"]
    tree = ets["tree"]
    root = tree[0]["text"]
    finished = [node["text"][len(root):].strip() for node in tree if node["leaf"]]
    assert ets["width"] == 2 and 1 <= ets["trajectories"] == len(finished) <= 2
    assert content in finished and ets["answer"] == extract_answer(content, "small_instruct")
    stats = ets["stats"]
    assert stats["model_calls"] == len(tree) - 1  # one a child
    assert stats["tokens_generated"] == sum(node["num_step_tokens"] for node in tree[1:]) == \
        reply.usage.completion_tokens
    assert stats["kv_cache_size"] >= tree[0]["num_step_tokens"] == reply.usage.prompt_tokens > 100
