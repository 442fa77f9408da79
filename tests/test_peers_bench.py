"""bench/peers.py: its-hub's algorithms reach our policy with our prompt text, sampling settings and
calculator, and our PRM's scores; the counting proxy counts what the server answered."""

import asyncio
import importlib.util
import json
import math
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from ets.backends.arithmetic import ArithmeticPRM
from ets.backends.base import Policy, Step
from ets.config import SearchConfig
from ets.datasets import Problem
from ets.evaluate import evaluate_settings
from ets.search import prompt_text

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "peers.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_peers", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class RecordingPolicy(Policy):
    """A wrong sum first (the calculator must fix it), then the answer line."""

    def __init__(self):
        self.seen = []

    async def generate(self, context, n, params):
        self.seen.append((context, params))
        text = "He has 3 + 4 = 8 apples.\n" if not context.steps else "Therefore, the final answer is: 7.\n"
        return [Step(text, 6) for _ in range(n)]

    async def count_tokens(self, text):
        return len(text.split())


def test_its_hub_particle_filtering_runs_on_our_prompt_policy_and_prm():
    pytest.importorskip("its_hub", reason="its-hub is not installed (pip install -e '.[peers]')")
    bench = load_bench()
    config = SearchConfig.from_yaml(ROOT / "configs" / "cpu_ets_qwen.yaml").replace(width=4)
    question = "Tom has 3 apples and gets 4 more. How many apples does he have?"
    problem = Problem(id=17, question=question, answer="7", record={})
    policy, prm = RecordingPolicy(), ArithmeticPRM.for_policy(config.policy_model)
    lm, peer_prm = bench.build_peer_adapters(config, policy, prm, {question: problem.id})
    algorithm = bench.peer_algorithm("particle_filtering", config, peer_prm)
    result = asyncio.run(algorithm.ainfer(lm, question, budget=4, return_response_only=False))

    # two steps for each of the 4 particles, then its-hub stops them at the answer marker
    assert len(policy.seen) == 8
    corrected = "He has 3 + 4 = 7 apples.\n"
    prompt = prompt_text(config, question)
    firsts = [c for c, _ in policy.seen if not c.steps]
    seconds = [c for c, _ in policy.seen if c.steps]
    assert len(firsts) == len(seconds) == 4
    # the text our search would send: the prompt format's prompt, then the corrected steps
    assert all(c.text == prompt for c in firsts)
    assert all(c.text == prompt + corrected and c.steps == (corrected,) for c in seconds)
    params = [p for _, p in policy.seen]
    assert {(p.stop, p.max_tokens, p.temperature, p.seed) for p in params} == {(("\n",), 48, 0.4, 1)}
    assert len({p.stream for p in params}) == 8  # every request its own draw

    final = ["He has 3 + 4 = 7 apples.", "Therefore, the final answer is: 7."]
    assert [r["content"] for r in result.responses] == ["\n".join(final)] * 4
    # its-hub weighs a particle by the logit of our PRM's score of its newest step
    score = prm.score_steps(question, [s + "\n" for s in final])
    assert result.log_weights_lst == pytest.approx([math.log(score / (1 - score))] * 4)

    async def scores(q, steps):
        return [prm.score_steps(q, steps[: i + 1]) for i in range(len(steps))]

    step_scores = asyncio.run(scores(question, tuple(s + "\n" for s in final)))
    finished, picked = bench.peer_answers(problem, config, result, lambda q, steps: step_scores)
    assert len(finished["model_answer"]) == 4 and len(picked["model_answer"]) == 1
    assert finished["model_answer"][0]["text"] == prompt + corrected + final[1] + "\n"
    assert finished["model_answer"][0]["step_scores"][-1] == pytest.approx(score)
    graded = evaluate_settings([finished, picked], ["best_of_n/last"], config.format_name)["best_of_n/last"]
    assert graded.num_correct == 2


def test_beam_width_divides_the_width_nearest_ours_from_below():
    bench = load_bench()
    # ours: ceil(sqrt(width)) beams; its-hub needs a divisor of the width
    assert [bench.peer_beam_width(w) for w in (4, 8, 9, 16, 7)] == [2, 2, 3, 4, 1]


def test_counting_proxy_counts_completions_and_their_tokens():
    bench = load_bench()
    answer = {"choices": [{"text": "x", "index": 0, "finish_reason": "stop"}], "usage": {"completion_tokens": 5}}

    class Upstream(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self._reply(answer)

        def do_GET(self):
            self._reply({"data": [{"id": "m"}]})

        def _reply(self, body):
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    proxy = bench.CountingProxy(f"http://127.0.0.1:{upstream.server_address[1]}")
    try:
        with httpx.Client(trust_env=False) as client:
            assert client.get(proxy.url + "/v1/models").json() == {"data": [{"id": "m"}]}
            for _ in range(3):
                assert client.post(proxy.url + "/v1/completions", json={"prompt": "p"}).json() == answer
            client.post(proxy.url + "/extras/tokenize/count", json={"input": "p"})
        assert proxy.counts() == (3, 15)  # completions only: not the model list, not the token count
    finally:
        proxy.close()
        upstream.shutdown()
        upstream.server_close()
