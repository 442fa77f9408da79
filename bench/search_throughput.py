"""Whole-search throughput on the CPU: generated tokens/s and problems/min of `ets run`'s search
(policy, PRM and embedder), the old way against today's, side by side in one process.

* ``old way``: the CPU default before the arithmetic PRM: SmolLM2 judging its own steps in a second
  llama.cpp context (each context on half the cores), the policy batching at most 16 sequences on its
  stored 4-bit weights, the embedder on torch's default threads (every core);
* ``today``: what `ets run` builds for the config (the factory itself): the model-free arithmetic PRM,
  the policy on every core with batches of up to 32 sequences on the 16-bit copy of its weights, the
  embedder on one torch thread;
* ``today, stored weights``: today's search with ``policy_weights: stored``, the policy computing with
  the shipped 4-bit file instead of its 16-bit copy (docs/cpu-models.md#weights): what the copy buys;
* ``policy alone``: today's policy with a constant-score PRM and no embedder: the same search shape
  with nothing but batched decoding, the ceiling of a whole search.

Problems go in rounds of ``--round`` problems; each round runs every mode in turn, so the modes share
the machine's load alike, and each mode searches a round's problems as `ets run` searches a data set
(``num_threads`` at a time, the next one starting when one finishes). Same problems, config and seed
throughout.

    .venv/bin/python bench/search_throughput.py --problems 8 --width 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ets.backends.base import Backends  # noqa: E402
from ets.backends.factory import BackendSpec, build_backends  # noqa: E402
from ets.backends.llamacpp import LlamaCppPolicy, build_llamacpp_judge, default_threads  # noqa: E402
from ets.backends.scripted import ScriptedReward  # noqa: E402
from ets.config import SearchConfig  # noqa: E402
from ets.datasets import load_problems  # noqa: E402
from ets.models import resolve_policy_model  # noqa: E402
from ets.runner import run_problems  # noqa: E402


TORCH_THREADS = {"old way (self-judge)": os.cpu_count() or 1}  # other modes: one, as the embedder sets it
OLD_NUM_THREADS = 4  # problems at once in the CPU config of the old way


def build_modes(config: SearchConfig) -> dict[str, Backends]:
    today = build_backends(BackendSpec(), config)  # exactly what `ets run` builds for this config
    seed = config.seed or 0
    stored = resolve_policy_model(config.policy_model, "stored")
    return {
        "old way (self-judge)": Backends(
            LlamaCppPolicy(stored, seed=seed, n_threads=default_threads(shared=True), n_batch_seqs=16),
            build_llamacpp_judge(stored, format=config.format_name, n_threads=default_threads(shared=True)),
            today.embedder),
        "today (arithmetic PRM)": today,
        "today, stored weights": build_backends(BackendSpec(), config.replace(policy_weights="stored")),
        "policy alone": Backends(today.policy, ScriptedReward(lambda question, steps: 0.5), None),
    }


async def main_async(args) -> None:
    config = SearchConfig.from_yaml(args.config).replace(width=args.width)
    problems = load_problems(args.dataset, args.problems)
    modes = build_modes(config)
    totals = {name: {"tokens": 0, "time": 0.0, "problems": 0} for name in modes}
    rounds = [problems[i:i + args.round] for i in range(0, len(problems), args.round)]
    with tempfile.TemporaryDirectory() as tmp:
        for number, batch in enumerate(rounds):
            for index, (name, backends) in enumerate(modes.items()):
                mode_config = config.replace(lambdas=0.0) if backends.embedder is None else config
                if name.startswith("old way"):
                    mode_config = mode_config.replace(num_threads=OLD_NUM_THREADS)
                torch.set_num_threads(TORCH_THREADS.get(name, 1))
                started = time.perf_counter()
                summary = await run_problems(batch, mode_config, backends, Path(tmp) / f"round{number}-mode{index}")
                totals[name]["time"] += time.perf_counter() - started
                totals[name]["tokens"] += summary.stats.tokens_generated
                totals[name]["problems"] += len(batch)
                print(f"round {number + 1}/{len(rounds)} {name}: {summary.stats.tokens_generated} tokens in "
                      f"{time.perf_counter() - started:.1f}s", file=sys.stderr)
    for backends in modes.values():
        backends.close()
    print(f"whole ETS search ({args.config}, width {config.width}, lambdas {config.lambdas}), "
          f"{len(problems)} problems of {args.dataset} in rounds of {args.round}, {os.cpu_count()} cores, "
          f"{config.num_threads} problems at once (old way: {OLD_NUM_THREADS}, on the stored weights)")
    print(f"{'mode':<24} {'tokens':>7} {'time s':>8} {'tok/s':>7} {'problems/min':>13}")
    rate = {}
    for name, t in totals.items():
        rate[name] = t["tokens"] / t["time"]
        print(f"{name:<24} {t['tokens']:>7} {t['time']:>8.1f} {rate[name]:>7.1f} {60 * t['problems'] / t['time']:>13.2f}")
    today = rate["today (arithmetic PRM)"]
    print(f"ratio today / old way: {today / rate['old way (self-judge)']:.2f}x tokens/s; "
          f"today / policy alone: {today / rate['policy alone']:.2f}; "
          f"16-bit / stored weights: {today / rate['today, stored weights']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="asdiv[0::20]")
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--round", type=int, default=8, help="problems a mode searches before the next mode's turn")
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--config", default=os.path.relpath(ROOT / "configs/cpu_ets.yaml"))  # printed as given
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
