"""ETS selection: our in-process solve against the reference's way (PuLP + CBC,
one solver process per call), side by side on the golden trees.

Three ways of solving the same keep-program, interleaved case by case:
``cbc`` (the reference's), ``highs-milp`` (the MILP in-process) and ``highs``
(the default: dynamic programming over the tree with branch and bound over
clusters, HiGHS as fallback). Prints the median time per selection call, the
median of the per-case speed-ups against CBC, and whether the allocations
agree with each other and with the reference's expected allocations.

    .venv/bin/python bench/selection.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from ets import Tree
from ets.selection import allocate

CASES = Path(__file__).parents[1] / "tests" / "data" / "selection_public.json"


class TableEmbedder:
    def __init__(self, table):
        self.table = table

    def encode(self, sentences):
        return np.array([self.table[s] for s in sentences])


def timed(case, solver, repeat):
    tree = Tree.from_nodes(case["nodes"])
    embedder = TableEmbedder(case["embeddings"]) if case["embeddings"] else None
    params = {**case["params"], "ilp_solver": solver}
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        alloc = allocate("softmax_costmodel", tree, case["candidates"], case["width"], params, embedder=embedder)
        times.append(time.perf_counter() - start)
    return min(times), {str(k): v for k, v in alloc.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="calls per case and solver (the fastest counts)")
    args = parser.parse_args()
    cases = [c for c in json.loads(CASES.read_text()) if c["method"] == "softmax_costmodel"]
    solvers = ("cbc", "highs-milp", "highs")
    timed(cases[0], "highs-milp", 1)  # first-call imports are not what we measure
    times = {s: [] for s in solvers}
    agree = {s: 0 for s in solvers}
    expected = {s: 0 for s in solvers}
    for case in cases:
        # interleave the solvers so machine noise hits all alike
        allocs = {}
        for solver in solvers:
            seconds, allocs[solver] = timed(case, solver, args.repeat)
            times[solver].append(seconds)
            expected[solver] += allocs[solver] == case["expected_alloc"]
        for solver in solvers:
            agree[solver] += allocs[solver] == allocs["cbc"]
    sizes = [len(c["candidates"]) for c in cases]
    print(f"ETS selection on {len(cases)} golden trees ({min(sizes)}-{max(sizes)} candidates), best of {args.repeat} calls each")
    labels = {"cbc": "reference way (PuLP + CBC process)", "highs-milp": "HiGHS MILP in-process",
              "highs": "ets default (tree DP + HiGHS)"}
    for solver in solvers:
        speedups = [c / t for c, t in zip(times["cbc"], times[solver])]
        print(f"  {labels[solver]:36s} median {1e3 * statistics.median(times[solver]):6.2f} ms/call, "
              f"speed-up vs CBC median {statistics.median(speedups):5.1f}x (min {min(speedups):.1f}x); "
              f"same allocation as CBC {agree[solver]}/{len(cases)}, as the reference {expected[solver]}/{len(cases)}")


if __name__ == "__main__":
    main()
