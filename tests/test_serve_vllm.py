"""`ets serve --engine vllm` without a live vLLM: the flags the search needs, PRMs served as classifiers of
their family's tokens, --python naming another environment; the server's own KV figures read from a
Prometheus answer; the protocol each role used, as run.json names it."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from ets.backends.http import make_policy, make_reward
from ets.backends.http.metrics import ServerWatch, parse_metrics
from ets.backends.prm_families import FAMILIES, vllm_classifier_overrides
from ets.cli import main
from ets.stats import SearchStats
from standins.servers import StandinServer, free_port


def dry(capsys, *argv) -> str:
    assert main(["serve", argv[0], "--dry-run", *argv[1:]]) == 0
    return capsys.readouterr().out.strip()


def overrides(command: str) -> dict:
    return json.loads(command.split("--hf-overrides ")[1].split("'")[1])


def test_vllm_policy_has_prefix_caching_and_cached_token_details(capsys):
    out = dry(capsys, "policy", "--engine", "vllm", "--model", "org/model")
    assert "--enable-prefix-caching --enable-prompt-tokens-details" in out


def test_sglang_policy_reports_cached_tokens(capsys):
    policy = dry(capsys, "policy", "--engine", "sglang", "--model", "org/model")
    assert "--enable-cache-report" in policy and "--enable-metrics" in policy
    assert "--enable-cache-report" not in dry(capsys, "reward", "--engine", "sglang", "--model", "org/prm")


def test_python_names_the_engine_environment(capsys, tmp_path):
    out = dry(capsys, "policy", "--engine", "vllm", "--model", "m", "--python", "/opt/vllm-env/bin/python")
    assert out.startswith("/opt/vllm-env/bin/python -m vllm.entrypoints.openai.api_server ")
    assert dry(capsys, "reward", "--engine", "vllm", "--model", "m").startswith(sys.executable + " -m vllm")


def test_python_without_the_engine_is_refused_naming_it(capsys, tmp_path):
    # this test's own Python exists but has no vLLM (or does: then the start would go on; not here)
    pytest.importorskip("fastapi")
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed in the test's Python")
    code = main(["serve", "policy", "--engine", "vllm", "--model", "m", "--python", sys.executable,
                 "--port", str(free_port())])
    assert code == 1 and f"vLLM is not installed in {sys.executable}" in capsys.readouterr().err
    missing = str(tmp_path / "no-python")
    assert main(["serve", "policy", "--engine", "vllm", "--model", "m", "--python", missing]) == 1
    assert f"--python {missing}: no such executable" in capsys.readouterr().err


def test_a_causal_lm_prm_is_served_as_a_classifier_of_its_tokens(capsys, tmp_path):
    folder = tmp_path / "math-shepherd-like"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["MistralForCausalLM"]}))
    out = dry(capsys, "reward", "--engine", "vllm", "--model", str(folder))
    assert "--runner pooling --convert classify" in out
    # [bad, good]: /pooling's last value is p(good), as the Qwen PRM's rows are
    assert overrides(out) == {"classifier_from_token": ["-", "+"], "method": "no_post_processing"}
    # named by the hub id, not in any cache: the name decides
    assert "--convert classify" in dry(capsys, "reward", "--engine", "vllm", "--model",
                                       "peiyi9979/math-shepherd-mistral-7b-prm")
    judge = dry(capsys, "reward", "--engine", "vllm", "--model", str(folder), "--prm-mode", "judge")
    assert overrides(judge)["classifier_from_token"] == ["No", "Yes"]


def test_a_prm_with_its_own_head_is_served_as_it_is(capsys, tmp_path):
    out = dry(capsys, "reward", "--engine", "vllm", "--model", "Qwen/Qwen2.5-Math-PRM-7B")
    assert "--trust-remote-code" in out and "--convert" not in out
    folder = tmp_path / "prm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForProcessRewardModel"]}))
    assert "--convert" not in dry(capsys, "reward", "--engine", "vllm", "--model", str(folder))
    forced = dry(capsys, "reward", "--engine", "vllm", "--model", str(folder), "--prm-mode", "step_tag")
    assert "--convert classify" in forced


def test_prm_modes_that_do_not_fit_the_engine_are_refused(capsys):
    assert main(["serve", "reward", "--engine", "vllm", "--model", "m", "--prm-mode", "arithmetic", "--dry-run"]) == 2
    assert "use --engine ets" in capsys.readouterr().err
    assert main(["serve", "reward", "--prm-mode", "head", "--dry-run"]) == 2
    assert "is for --engine vllm" in capsys.readouterr().err


def test_classifier_overrides_need_a_token_family():
    assert vllm_classifier_overrides(FAMILIES["rlhflow"])["classifier_from_token"] == ["-", "+"]
    with pytest.raises(ValueError, match="reads no tokens"):
        vllm_classifier_overrides(FAMILIES["qwen"])


# ---------------------------------------------------------------------------- the server's own figures

METRICS = """# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1200.0
vllm:prefix_cache_queries_total{engine="1",model_name="m"} 300.0
vllm:prefix_cache_queries_created{engine="0",model_name="m"} 1.7e9
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 900.0
vllm:prefix_cache_hits_total{engine="1",model_name="m"} 100.0
"""


def test_metrics_are_summed_over_engines_and_the_usage_is_the_highest():
    assert parse_metrics(METRICS) == {"kv_cache_usage": 0.5, "prefix_cache_queries": 1500.0,
                                      "prefix_cache_hits": 1000.0}
    assert parse_metrics("# nothing of vLLM\nprocess_cpu_seconds_total 3.0\n") == {}


# SGLang's documented /metrics (docs "Production Metrics"; collector.py's names), --enable-metrics on
SGLANG_METRICS = """# HELP sglang:prompt_tokens_total Number of prefill tokens processed.
# TYPE sglang:prompt_tokens_total counter
sglang:prompt_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 8.128902e+06
sglang:generation_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.557572e+06
# HELP sglang:token_usage The token usage
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.28
sglang:cache_hit_rate{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.007507552643049313
# TYPE sglang:cached_tokens_total counter
sglang:cached_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 6.1e+04
sglang:cached_tokens_created{model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.7e9
"""


def test_sglang_metrics_are_the_same_three_figures():
    assert parse_metrics(SGLANG_METRICS) == {"kv_cache_usage": 0.28, "prefix_cache_queries": 8.128902e6,
                                             "prefix_cache_hits": 6.1e4}
    # before the first request finishes SGLang declares its counters with no sample: they read as 0, so a run
    # started on a fresh server still watches it
    fresh = "\n".join(line for line in SGLANG_METRICS.splitlines() if line.startswith("#"))
    assert parse_metrics(fresh) == {"prefix_cache_queries": 0.0, "prefix_cache_hits": 0.0}


def test_server_watch_counts_a_span_and_its_peak(monkeypatch):
    answers = iter([
        {"prefix_cache_queries": 100.0, "prefix_cache_hits": 40.0, "kv_cache_usage": 0.1},
        {"prefix_cache_queries": 100.0, "prefix_cache_hits": 40.0, "kv_cache_usage": 0.7},  # polled meanwhile
        {"prefix_cache_queries": 350.0, "prefix_cache_hits": 240.0, "kv_cache_usage": 0.2},
    ])

    async def read(self):
        return next(answers)

    monkeypatch.setattr(ServerWatch, "read", read)

    async def go():
        watch = ServerWatch(["http://127.0.0.1:1"], interval=3600)  # no poll of its own: one, here
        await watch.begin(7)
        await watch.sample()
        figures = await watch.end(7)
        await watch.aclose()
        return figures

    assert asyncio.run(go()) == {"server_prefix_cache_queries": 250, "server_prefix_cache_hits": 200,
                                 "server_kv_cache_usage_peak": 0.7}


def test_server_figures_merge_as_counters_and_a_peak():
    a = SearchStats(server_prefix_cache_queries=10, server_prefix_cache_hits=4, server_kv_cache_usage_peak=0.3)
    a.add(SearchStats(server_prefix_cache_queries=5, server_prefix_cache_hits=5, server_kv_cache_usage_peak=0.2))
    assert (a.server_prefix_cache_queries, a.server_prefix_cache_hits, a.server_kv_cache_usage_peak) == (15, 9, 0.3)
    assert "Server prefix cache hits: 9\n" in a.stats_log()
    assert "Server" not in SearchStats(kv_cache_size=3).stats_log()  # the reference's four lines, as they were


# ---------------------------------------------------------------------------- protocols


def test_protocols_name_what_each_role_spoke():
    with StandinServer("vllm-pooling") as prm, StandinServer("openai") as pol:
        reward = make_reward(prm.url, reward_model_type="mistral", good_token_id=None)
        policy = make_policy(pol.url)

        async def go():
            await reward.start()
            await policy.start()
            await reward.aclose()
            await policy.aclose()

        assert reward.protocol is None  # not asked yet
        asyncio.run(go())
        # a token-logit family on a vLLM server: /pooling, found from the server, not the family's default (SGLang)
        assert reward.api == "vllm" and reward.protocol == "vllm /pooling"
        assert policy.protocol == "openai /v1/completions (vllm)"


# ---------------------------------------------------------------------------- a run records them


class MetricsServer:
    """A policy server's /metrics alone, whose counters grow only when ``work`` is called (as vLLM's grow
    with the requests it serves), so what a run records can be checked to the token."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import threading

        self.queries = self.hits = 0
        self.usage = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = (f'vllm:kv_cache_usage_perc{{engine="0"}} {outer.usage}\n'
                        f'vllm:prefix_cache_queries_total{{engine="0"}} {float(outer.queries)}\n'
                        f'vllm:prefix_cache_hits_total{{engine="0"}} {float(outer.hits)}\n').encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def work(self) -> None:
        self.queries += 100
        self.hits += 60
        self.usage = 0.05 * (self.queries // 100 % 7)  # rises and falls: the peak is not the last value

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_run_records_the_servers_figures_per_problem_and_for_the_run(tmp_path):
    from ets.backends.base import Backends
    from ets.backends.scripted import toy_world
    from ets.config import SearchConfig
    from ets.datasets import Problem
    from ets.runner import run_problems

    server = MetricsServer()
    policy, reward = toy_world()
    generate = policy.generate

    async def served(context, n, params):  # each expansion is served, and counted, by "the server"
        server.work()
        return await generate(context, n, params)

    policy.generate = served
    policy.hosts = [server.url]
    config = SearchConfig(width=3, select_method="softmax", prompt_format="raw", num_threads=1)
    problems = [Problem(i, f"What is {i} + {i}?", str(2 * i), {}) for i in range(3)]
    backends = Backends(policy, reward, description={"policy": "toy"})
    try:
        asyncio.run(run_problems(problems[:1], config, backends, tmp_path))  # one problem, then resumed
        summary = asyncio.run(run_problems(problems, config, backends, tmp_path))
    finally:
        server.stop()
    assert summary.resumed == 1
    per_problem = [json.loads((tmp_path / "trees" / f"q{i}.json").read_text())["stats"] for i in range(3)]
    for stats in per_problem:  # 100 queried and 60 found per expansion, and nothing else
        assert stats["server_prefix_cache_queries"] == 100 * stats["expansions"] > 0
        assert stats["server_prefix_cache_hits"] == 60 * stats["expansions"]
        assert 0 < stats["server_kv_cache_usage_peak"] <= 0.3
    run = json.loads((tmp_path / "run.json").read_text())["stats"]
    # the run: the resumed problem's figures plus this invocation's span, which here (one problem at a time) is
    # the sum of its problems'
    assert run["server_prefix_cache_queries"] == server.queries == sum(s["server_prefix_cache_queries"] for s in per_problem)
    assert run["server_prefix_cache_hits"] == server.hits
    assert run["server_kv_cache_usage_peak"] == max(s["server_kv_cache_usage_peak"] for s in per_problem)
    log = (tmp_path / "stats.log").read_text().splitlines()
    assert log[4:] == [f"Server prefix cache queries: {server.queries}", f"Server prefix cache hits: {server.hits}",
                       f"Server KV cache usage peak: {run['server_kv_cache_usage_peak']}"]
