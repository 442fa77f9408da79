"""A token-logit PRM on upstream vLLM, scored two ways on the same texts: through ``/pooling`` of a
classifier server (what ``ets serve reward --engine vllm`` starts and ``ets run`` asks), and from the
prompt log-probabilities of the judgement tokens on a plain server (``/v1/completions`` with
``prompt_logprobs``: the text with '+' and with '-' appended, one request of two prompts).

    make vllm                                  # the vLLM environment at .venv-vllm and its stand-in model
    python bench/vllm_prm.py                   # 40 GSM8K problems; two vLLM servers, one core each

The stand-in PRM is the built-in SmolLM2-135M as a math-shepherd-style PRM (its '+' and '-' tokens read
after the step tag), the model the live tests use. The texts are the reference solutions of the first
GSM8K test problems cut after each of their steps, in math-shepherd's form (each step ending with
``ки``), and each problem's texts (nested prefixes of one solution) are sent at once, as a search sends
a batch of scores: a problem's scoring is timed one way, then the other (which first alternates from
problem to problem), and the ratio of the two ways' times is paired over the problems. Both servers are
up throughout, each on a core of its own (so a difference between the cores' other load is not
cancelled); only one is asked at a time. Prints the seconds per score each way, the ratio with
its 95 % interval and the largest difference between the two scores of a text.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from servers import launch_serve, served_url, stop_server  # noqa: E402

from ets.backends.base import Context  # noqa: E402
from ets.backends.http import make_reward  # noqa: E402
from ets.backends.prm_families import step_tag_text  # noqa: E402
from ets.datasets import load_problems  # noqa: E402
from ets.evaluate.intervals import ratio_interval  # noqa: E402

VLLM_VENV = ROOT / ".venv-vllm"
ENGINE_ARGS = ["--dtype", "float32", "--max-model-len", "2048"]  # the live tests' (tests/test_vllm_live.py)
POLICY_NAME, PRM_NAME = "smollm2-vllm", "smollm2-prm"
ANNOTATION = re.compile(r"<<[^>]*>>")  # GSM8K's calculator marks inside its solutions


def solution_contexts(problem) -> list[Context]:
    """The problem's reference solution cut after each step, every step ending with math-shepherd's tag."""
    lines = [ANNOTATION.sub("", line).strip() for line in problem.answer.split("####")[0].splitlines()]
    steps = [f"{'' if i == 0 else chr(10)}Step {i + 1}: {line} ки" for i, line in enumerate(lines) if line]
    prompt = problem.question + "\n"
    return [Context(problem.question, prompt, tuple(steps[:depth])) for depth in range(1, len(steps) + 1)]


async def logprob_score(client: httpx.AsyncClient, url: str, model: str, text: str) -> float:
    """p('+') / (p('+') + p('-')) after ``text``, from the prompt log-probabilities of both endings."""
    answer = await client.post(url + "/v1/completions", json={
        "model": model, "prompt": [text + "+", text + "-"], "max_tokens": 1, "temperature": 0,
        "prompt_logprobs": 0})
    answer.raise_for_status()
    # a choice per prompt (its index); each prompt's last entry: {token id: {logprob, ...}}
    choices = sorted(answer.json()["choices"], key=lambda c: c["index"])
    good, bad = (float(next(iter(c["prompt_logprobs"][-1].values()))["logprob"]) for c in choices)
    return 1.0 / (1.0 + math.exp(bad - good))


async def measure(problems, policy_url: str, reward_url: str, *, policy_name: str = POLICY_NAME,
                  prm_name: str = PRM_NAME) -> tuple[list[float], list[float], float, int]:
    """Per problem the seconds of its scoring through /pooling and through prompt logprobs; the largest
    difference of a text's two scores; the number of scores. The names: the served models'."""
    reward = make_reward(reward_url, api="vllm", reward_model_type="mistral", model=prm_name, timeout=300)
    await reward.start()
    pooling_times, logprob_times, largest, count = [], [], 0.0, 0
    async with httpx.AsyncClient(timeout=300, trust_env=False) as client:
        # each server's first request compiles its kernels
        await logprob_score(client, policy_url, policy_name, "warm up")
        await reward.score([Context("warm up", "warm up\n", ("Step 1: up ки",))])
        for i, problem in enumerate(problems):
            contexts = solution_contexts(problem)
            timed = {}
            for way in (("pooling", "logprobs") if i % 2 == 0 else ("logprobs", "pooling")):
                started = time.perf_counter()
                if way == "pooling":
                    scores = await reward.score(contexts)
                else:
                    scores = await asyncio.gather(*[logprob_score(client, policy_url, policy_name, step_tag_text(c))
                                                    for c in contexts])
                timed[way] = (time.perf_counter() - started, scores)
            pooling_times.append(timed["pooling"][0])
            logprob_times.append(timed["logprobs"][0])
            largest = max([largest, *(abs(a - b) for a, b in zip(timed["pooling"][1], timed["logprobs"][1],
                                                                 strict=True))])
            count += len(contexts)
    await reward.aclose()
    return pooling_times, logprob_times, largest, count


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", type=int, default=40, help="the first N GSM8K test problems (default 40)")
    ap.add_argument("--python", default=str(VLLM_VENV / "bin" / "python"), help="the vLLM environment's Python")
    ap.add_argument("--model", default=str(VLLM_VENV / "models" / "smollm2-135m"), help="the model folder")
    ap.add_argument("--out", default="runs/vllm_prm", help="the servers' logs")
    args = ap.parse_args(argv)
    if not Path(args.python).is_file() or not (Path(args.model) / "config.json").is_file():
        raise SystemExit(f"no vLLM environment or model folder ({args.python}, {args.model}): run make vllm")
    problems = load_problems("gsm8k", args.problems)
    out = Path(args.out)
    cores = sorted(os.sched_getaffinity(0))
    servers: dict[str, subprocess.Popen] = {}
    try:
        for role, name, core in (("policy", POLICY_NAME, cores[0]), ("reward", PRM_NAME, cores[-1])):
            env = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": str(core)}  # started together
            servers[role] = launch_serve([role, "--engine", "vllm", "--python", args.python, "--model", args.model,
                                          "--served-model-name", name, "--wait", "900", "--", *ENGINE_ARGS],
                                         out / f"{role}-server.log", env)
        policy_url, reward_url = (served_url(servers[role], role, out / f"{role}-server.log")
                                  for role in ("policy", "reward"))
        pooling, logprobs, largest, count = asyncio.run(measure(problems, policy_url, reward_url))
    finally:
        for proc in servers.values():
            stop_server(proc)
    ratio, low, high = ratio_interval(logprobs, pooling)
    print(f"a math-shepherd-style PRM on vLLM (the stand-in: SmolLM2-135M, float32, one core a server); "
          f"{count} scores of {len(problems)} GSM8K problems, each problem's at once")
    print(f"{'way':52} {'seconds':>8} {'ms/score':>9}")
    for way, times in (("/pooling, a classifier server (what ets run asks)", pooling),
                       ("prompt logprobs of '+' and '-', a plain server", logprobs)):
        print(f"{way:52} {sum(times):8.1f} {1000 * sum(times) / count:9.1f}")
    print(f"prompt logprobs / pooling, time: {ratio:.2f}x [{low:.2f}, {high:.2f}] (paired over problems)")
    print(f"largest difference between a text's two scores: {largest:.1e}")


if __name__ == "__main__":
    from results import recorded

    with recorded():
        main()
