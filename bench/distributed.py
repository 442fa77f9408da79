"""The Ray runner against the local one, on the scripted toy world (no model).

What it measures: the searching that happens in the runner's own process(es)
-- tree bookkeeping, selection, the scripted policy and PRM -- for a wide
search (width 256 by default, so a problem costs ~0.1 s of CPU). That is the
part Ray spreads; with real models the model time is on the servers, which
scale by adding hosts, not by this runner. Problems per second, wall time of
the whole run directory (actor start-up included, ``ray.init`` not):

* ``local``: ``ets.runner.run_problems`` in this process,
* ``ray xN``: ``run_problems_ray`` with N workers on a local Ray cluster.

Every run's answers are checked equal to the local run's.

    .venv/bin/python bench/distributed.py [--problems 40] [--width 256] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from ets import SearchConfig
from ets.backends.factory import BackendSpec, build_backends
from ets.datasets import Problem, load_problems
from ets.runner import run_problems

GSM8K = Path(__file__).parents[1] / "tests" / "data" / "gsm8k_sample.jsonl"


def make_problems(count: int) -> list[Problem]:
    base = load_problems(str(GSM8K))
    return [Problem(id=i, question=f"{base[i % len(base)].question} (variant {i})", answer=base[i % len(base)].answer,
                    record={}) for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=2, help="runs of each; the best is reported")
    args = parser.parse_args()

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a local cluster on 127.0.0.1 only
    import ray

    from ets.distributed import run_problems_ray

    problems = make_problems(args.problems)
    config = SearchConfig(width=args.width, select_method="softmax", prompt_format="raw", num_threads=4)
    spec = BackendSpec(scripted=True)
    print(f"{len(problems)} toy-world problems, width {args.width}, {os.cpu_count()} CPUs")

    with tempfile.TemporaryDirectory() as tmp:
        def timed(label, run):
            best = float("inf")
            for r in range(args.repeat):
                run_dir = Path(tmp) / f"{label.replace(' ', '_')}_{r}"
                t = time.perf_counter()
                run(run_dir)
                best = min(best, time.perf_counter() - t)
            answers = json.loads((run_dir / "answers.json").read_text())
            print(f"  {label:8s} {best:6.2f} s  {len(problems) / best:6.1f} problems/s")
            return answers

        reference = timed("local", lambda d: asyncio.run(
            run_problems(problems, config, build_backends(spec, config), d, resume=False)))

        cpus = os.cpu_count() or 1
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level="WARNING")
        try:
            for n in args.workers:
                answers = timed(f"ray x{n}", lambda d, n=n: run_problems_ray(
                    problems, config, spec, d, num_workers=n, resume=False))
                assert answers == reference, f"ray x{n}: answers differ from the local run"
        finally:
            ray.shutdown()


if __name__ == "__main__":
    from results import recorded  # bench/ is on the path of a bench run as a script

    with recorded():
        main()
