"""Whole-search throughput on the CPU: generated tokens/s and problems/min of `ets run`'s search
(policy, PRM and embedder), the old way against today's, side by side in one run.

* ``old way``: the CPU default before the arithmetic PRM: SmolLM2 judging its own steps in a second
  llama.cpp context (each context on half the cores), the policy batching at most 16 sequences, a row
  each, on its stored 4-bit weights, the embedder on torch's default threads (every core);
* ``today``: what `ets run` builds for the config (the factory itself): the model-free arithmetic PRM,
  the policy on every core with batches of up to 32 sequences on the copy of its weights that decodes
  faster on this machine (``policy_weights: auto``: 16-bit or 8-bit), the embedder on one torch thread;
* ``today, a row a child``: today's search with every child decoded in a batch row of its own, as
  before children in one state (the same tokens so far) shared one: what that sharing buys;
* ``today, stored weights``: today's search with ``policy_weights: stored``, the policy computing with
  the shipped 4-bit file instead of a copy (docs/cpu-models.md#weights): what the copy buys;
* ``policy alone``: today's policy with a constant-score PRM and no embedder: nothing but batched
  decoding, on the tree ETS grows when every score is equal (another tree than today's).

Each mode lives in a process of its own, as each would in `ets run`: torch and llama.cpp share one
OpenMP runtime in a process, and a mode run after the old way's two-thread torch work decoded 10-25 %
slower than the same mode in a fresh process. Problems go in rounds of ``--round`` problems; each
round runs every mode in turn (one process works, the others wait), so the modes share the machine's
load alike, and each mode searches a round's problems as `ets run` searches a data set
(``num_threads`` at a time, the next one starting when one finishes). Same problems, config and seed
throughout.

    .venv/bin/python bench/search_throughput.py --problems 16 --width 8
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ets.backends.base import Backends  # noqa: E402
from ets.backends.factory import BackendSpec, build_backends, build_cpu_reward, build_embedder, cpu_policy_file  # noqa: E402
from ets.backends.llamacpp import LlamaCppPolicy, build_llamacpp_judge, default_threads  # noqa: E402
from ets.backends.scripted import ScriptedReward  # noqa: E402
from ets.config import SearchConfig  # noqa: E402
from ets.datasets import load_problems  # noqa: E402
from ets.runner import run_problems  # noqa: E402


OLD_WAY, TODAY, STORED, ALONE = "old way (self-judge)", "today (arithmetic PRM)", "today, stored weights", "policy alone"
ROW_A_CHILD = "today, a row a child"
MODES = (OLD_WAY, TODAY, ROW_A_CHILD, STORED, ALONE)
OLD_NUM_THREADS = 4  # problems at once in the CPU config of the old way


def build_mode(name: str, config: SearchConfig) -> tuple[Backends, SearchConfig]:
    """The backends a mode searches with and the config it searches by."""
    seed = config.seed or 0
    if name == OLD_WAY:
        stored = cpu_policy_file(BackendSpec(), config.replace(policy_weights="stored"))
        embedder = build_embedder(config, BackendSpec())
        import torch

        torch.set_num_threads(os.cpu_count() or 1)  # the old embedder ran on torch's default threads
        backends = Backends(
            LlamaCppPolicy(stored, seed=seed, n_threads=default_threads(shared=True), n_batch_seqs=16, share_rows=False),
            build_llamacpp_judge(stored, format=config.format_name, n_threads=default_threads(shared=True)),
            embedder)
        return backends, config.replace(num_threads=OLD_NUM_THREADS)
    if name == TODAY:
        return build_backends(BackendSpec(), config), config  # exactly what `ets run` builds for this config
    if name == STORED:
        return build_backends(BackendSpec(), config.replace(policy_weights="stored")), config
    if name == ROW_A_CHILD:
        spec = BackendSpec()
        return Backends(todays_policy(config, share_rows=False), build_cpu_reward(spec, config),
                        build_embedder(config, spec)), config
    return Backends(todays_policy(config), ScriptedReward(lambda question, steps: 0.5), None), config.replace(lambdas=0.0)


def todays_policy(config: SearchConfig, **options) -> LlamaCppPolicy:
    """The policy `ets run` builds beside the arithmetic PRM (every core), with ``options`` changed."""
    return LlamaCppPolicy(cpu_policy_file(BackendSpec(), config), seed=config.seed or 0,
                          n_threads=default_threads(shared=False), **options)


def serve_mode(name: str, config: SearchConfig, problems: list, conn) -> None:
    """A mode's process: build its backends, then search the slices of ``problems`` it is sent,
    answering (tokens generated, seconds); None ends it."""
    backends, config = build_mode(name, config)
    conn.send("ready")
    with tempfile.TemporaryDirectory() as tmp:
        while (job := conn.recv()) is not None:
            number, start, stop = job
            started = time.perf_counter()
            summary = asyncio.run(run_problems(problems[start:stop], config, backends, Path(tmp) / f"round{number}"))
            conn.send((summary.stats.tokens_generated, time.perf_counter() - started))
    backends.close()


def receive(name: str, conn):
    """The next answer of a mode's process; a process that died (its traceback is above) ends the bench."""
    try:
        return conn.recv()
    except EOFError:
        sys.exit(f"bench/search_throughput.py: the process of mode {name!r} failed (its error is above)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="asdiv[0::20]")
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--round", type=int, default=8, help="problems a mode searches before the next mode's turn")
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--config", default=os.path.relpath(ROOT / "configs/cpu_ets.yaml"))  # printed as given
    args = ap.parse_args()

    config = SearchConfig.from_yaml(args.config).replace(width=args.width)
    problems = load_problems(args.dataset, args.problems)
    n_problems = len(problems)
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no thread pool inherited
    workers = {}
    for name in MODES:
        conn, child = spawn.Pipe()
        process = spawn.Process(target=serve_mode, args=(name, config, problems, child), daemon=True)
        process.start()
        child.close()  # the process holds its own end: when it dies, receive() sees the pipe close
        workers[name] = (process, conn)
    for name, (process, conn) in workers.items():
        receive(name, conn)  # "ready": its models are loaded
    totals = {name: {"tokens": 0, "time": 0.0, "problems": 0} for name in MODES}
    rounds = [(start, min(start + args.round, n_problems)) for start in range(0, n_problems, args.round)]
    for number, (start, stop) in enumerate(rounds):
        for name, (process, conn) in workers.items():
            conn.send((number, start, stop))
            tokens, seconds = receive(name, conn)
            totals[name]["tokens"] += tokens
            totals[name]["time"] += seconds
            totals[name]["problems"] += stop - start
            print(f"round {number + 1}/{len(rounds)} {name}: {tokens} tokens in {seconds:.1f}s", file=sys.stderr)
    for process, conn in workers.values():
        conn.send(None)
        process.join()

    print(f"whole ETS search ({args.config}, width {config.width}, lambdas {config.lambdas}), "
          f"{n_problems} problems of {args.dataset} in rounds of {args.round}, {os.cpu_count()} cores, "
          f"{config.num_threads} problems at once (old way: {OLD_NUM_THREADS}, on the stored weights), a process a mode; "
          f"today's weights: {cpu_policy_file(BackendSpec(), config).name}")
    print(f"{'mode':<24} {'tokens':>7} {'time s':>8} {'tok/s':>7} {'problems/min':>13}")
    rate = {}
    for name, t in totals.items():
        rate[name] = t["tokens"] / t["time"]
        print(f"{name:<24} {t['tokens']:>7} {t['time']:>8.1f} {rate[name]:>7.1f} {60 * t['problems'] / t['time']:>13.2f}")
    today = rate[TODAY]
    print(f"ratio today / old way: {today / rate[OLD_WAY]:.2f}x tokens/s; "
          f"today / policy alone: {today / rate[ALONE]:.2f}; "
          f"shared rows / a row a child: {today / rate[ROW_A_CHILD]:.2f}x; "
          f"copy / stored weights: {today / rate[STORED]:.2f}x")


if __name__ == "__main__":
    from results import recorded  # bench/ is on the path of a bench run as a script

    with recorded():
        main()
