"""ETS selection: the default solver against HiGHS's MILP and the reference's way (PuLP + CBC,
one solver process per call), per whole selection call.

What is timed is the public ``allocate(...)`` with the parameters as a plain dict: the check
of the parameters, the softmax shares, the embedder call and the clustering, the solve and the
final allocation. Each call is timed ``--repeat`` times per solver, the solvers interleaved call
by call (machine noise hits all alike); the fastest time counts.

The calls: search-shaped trees grown by a scripted search (tests/data/search_trees.py) at widths
16, 64 and 256, in two embedding regimes (clusters of many members; nearly all singletons), with
the diversity term (lambdas 1.45) and without it; then the 60 golden trees and 300 small trees
built like them. Columns: median and worst time per call; CBC's median over the default's, and
the least of CBC's time over the default's on one call; highs-milp's median over the default's.
Allocations are compared with CBC's; where they differ the keep-sets are solved again and their
objectives compared ("tie": several optimal keep-sets, of which the default picks one by its
rule, docs/ets-solver.md; "lost": an objective below CBC's).

    .venv/bin/python bench/selection.py [--repeat 3] [--searches 5] [--small 300]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

from ets import Tree
from ets.selection import SelectionParams, allocate
from ets.selection.ets import SOLVERS, build_problem

DATA = Path(__file__).parents[1] / "tests" / "data"
SOLVER_NAMES = ("highs", "highs-milp", "cbc")
TIE = 1e-9  # objectives this close are equal


def load_search_trees():
    spec = importlib.util.spec_from_file_location("search_trees", DATA / "search_trees.py")
    module = sys.modules["search_trees"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TableEmbedder:
    def __init__(self, table):
        self.table = table

    def encode(self, sentences):
        import numpy as np

        return np.array([self.table[s] for s in sentences])


def golden_calls():
    cases = [c for c in json.loads((DATA / "selection_public.json").read_text()) if c["method"] == "softmax_costmodel"]
    return [(Tree.from_nodes(c["nodes"]), c["candidates"], c["width"], c["params"],
             TableEmbedder(c["embeddings"]) if c["embeddings"] else None) for c in cases]


def measure(calls, repeat):
    """Per call: the fastest time of each solver, and how the default's outcome compares with CBC's."""
    times = {s: [] for s in SOLVER_NAMES}
    same = ties = worse = 0
    for tree, candidates, remaining, params, embedder in calls:
        allocations = {}
        for solver in SOLVER_NAMES:
            solver_params = {**params, "ilp_solver": solver}
            best = float("inf")
            for _ in range(repeat):
                start = time.perf_counter()
                allocations[solver] = allocate("softmax_costmodel", tree, candidates, remaining, solver_params, embedder)
                best = min(best, time.perf_counter() - start)
            times[solver].append(best)
        if allocations["highs"] == allocations["cbc"]:
            same += 1
            continue
        problem = build_problem(tree, candidates, remaining, SelectionParams.from_mapping(params), embedder)
        ours, theirs = problem.value(SOLVERS["highs"](problem)), problem.value(SOLVERS["cbc"](problem))
        if abs(ours - theirs) <= TIE:
            ties += 1
        else:
            worse += 1
            print(f"  !! objective {ours!r} against CBC's {theirs!r}", file=sys.stderr)
    return times, same, ties, worse


def report(label, calls, repeat):
    times, same, ties, worse = measure(calls, repeat)
    ms = {s: [1e3 * t for t in times[s]] for s in SOLVER_NAMES}
    median = {s: statistics.median(ms[s]) for s in SOLVER_NAMES}
    worst = {s: max(ms[s]) for s in SOLVER_NAMES}
    sizes = [len(c[1]) for c in calls]
    cells = "  ".join(f"{median[s]:6.2f} {worst[s]:7.2f}" for s in SOLVER_NAMES)
    slowest = min(c / d for c, d in zip(ms["cbc"], ms["highs"]))  # the call where the default gains least
    print(f"{label:26s} {len(calls):5d} {min(sizes):4d}-{max(sizes):<4d} {cells}  {median['cbc'] / median['highs']:6.1f}x "
          f"{slowest:5.1f}x {median['highs-milp'] / median['highs']:5.1f}x  {same:4d} {ties:4d} {worse:4d}", flush=True)
    return median, worse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="calls per case and solver (the fastest counts)")
    parser.add_argument("--searches", type=int, default=5, help="scripted searches per width and regime")
    parser.add_argument("--small", type=int, default=300, help="small trees built like the golden ones")
    args = parser.parse_args()
    trees = load_search_trees()
    golden = golden_calls()
    allocate("softmax_costmodel", *golden[0][:3], {**golden[0][3], "ilp_solver": "highs-milp"}, golden[0][4])  # imports
    started = time.perf_counter()
    print(f"ETS selection, whole allocate() call with the parameters as a dict; per call the fastest of {args.repeat}; "
          "times in ms")
    print(f"{'calls':26s} {'count':>5s} {'cands':>9s}  {'default':>14s}  {'highs-milp':>14s}  {'cbc':>14s}  "
          f"{'cbc/default':>13s} {'milp/':>6s}  {'same':>4s} {'tie':>4s} {'lost':>4s}")
    print(f"{'':26s} {'':5s} {'':9s}  {'median':>6s} {'worst':>7s}  {'median':>6s} {'worst':>7s}  {'median':>6s} {'worst':>7s}  "
          f"{'median':>7s} {'least':>5s} {'default':>6s}  {'(allocation vs CBC)':>14s}")
    failures = []
    for width in (16, 64, 256):
        for regime in trees.REGIMES:
            grown = [call for q in range(args.searches) for call in trees.search_calls(width, regime, question=f"q{q}")]
            for lambdas in (1.45, 0.0):
                params = {"lambdac": 1.0, "lambdas": lambdas, "softmax_temperature": 0.2}
                calls = [(c.tree, c.candidates, c.remaining, params, c.embedder) for c in grown]
                label = f"width {width:3d} {regime:10s} " + ("div" if lambdas else "no div")
                median, worse = report(label, calls, args.repeat)
                failures += check(label, median, worse)
    median, worse = report("golden trees", golden, args.repeat)
    failures += check("golden trees", median, worse)
    small = [(c.call.tree, c.call.candidates, c.call.remaining, c.params, c.call.embedder)
             for c in trees.small_cases(args.small)]
    median, worse = report("small golden-like trees", small, args.repeat)
    failures += check("small golden-like trees", median, worse)
    print(f"default >= 10x faster than CBC and no slower than highs-milp (medians), objective never below CBC's: "
          f"{'yes' if not failures else 'NO: ' + '; '.join(failures)}  ({time.perf_counter() - started:.0f} s)")


def check(label, median, worse):
    out = []
    if median["cbc"] < 10 * median["highs"]:
        out.append(f"{label}: {median['cbc'] / median['highs']:.1f}x CBC")
    if median["highs"] > median["highs-milp"]:
        out.append(f"{label}: slower than highs-milp")
    if worse:
        out.append(f"{label}: {worse} objectives below CBC's")
    return out


if __name__ == "__main__":
    main()
