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

``--per-call``: the search-shaped calls at widths 64 and 256 (``--widths``) with the diversity
term, both regimes, ``--searches`` searches each; per call the fastest of ``--repeat`` runs of
each solver, the solvers interleaved and their order rotated. Per width: the median, 90th
percentile and worst per-call ratio of the default's time to highs-milp's and to CBC's (the five
calls of the worst ratios to highs-milp are timed again, 3 x ``--repeat`` more, and the worst of
them printed after), beside the same ratio of highs-milp to a second timing of itself (what noise
alone gives), and how many calls the default handed to HiGHS.

    .venv/bin/python bench/selection.py --per-call [--repeat 5] [--searches 5] [--widths 64 256] [--no-cbc]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

from ets import Tree
from ets.selection import SelectionParams, allocate
from ets.selection import ets as ets_module
from ets.selection.ets import SOLVERS, build_problem

DATA = Path(__file__).parents[1] / "tests" / "data"
SOLVER_NAMES = ("highs", "highs-milp", "cbc")
TIE = 1e-9  # objectives this close are equal
RETIMED = 5  # --per-call: the calls of the worst ratios to the MILP, timed again


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
    parser.add_argument("--per-call", action="store_true", help="per-call time ratios only (see above)")
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 256], help="widths of --per-call")
    parser.add_argument("--no-cbc", action="store_true", help="--per-call without CBC (for many searches)")
    args = parser.parse_args()
    trees = load_search_trees()
    golden = golden_calls()
    allocate("softmax_costmodel", *golden[0][:3], {**golden[0][3], "ilp_solver": "highs-milp"}, golden[0][4])  # imports
    if args.per_call:
        per_call(trees, args)
        return
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


def per_call(trees, args):
    """Per width, the per-call ratios of the default's time to highs-milp's and CBC's (see the module's text)."""
    import numpy as np

    print(f"command: {shlex.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(f"ETS selection with the diversity term (lambdas 1.45), whole allocate() call, per call the fastest of "
          f"{args.repeat}; ratios of per-call times ('again': the worst of the {RETIMED} worst calls timed again)")
    print(f"{'width':>5s} {'calls':>5s}  {'default/highs-milp':>27s}  {'highs-milp/itself':>20s}  "
          f"{'default/cbc':>20s}  {'to HiGHS':>8s}")
    print(f"{'':>5s} {'':>5s}  {'median    p90  worst  again':>27s}  {'median    p90  worst':>20s}  "
          f"{'median    p90  worst':>20s}")
    fallbacks = []
    milp = ets_module.solve_highs_milp  # the default's fallback looks it up in the module: count its calls there

    def counted(*a, **k):
        fallbacks.append(1)
        return milp(*a, **k)

    ets_module.solve_highs_milp = counted
    # "highs-milp" twice: the ratio between its two timings of one call is what noise alone gives
    runs = ("highs", "highs-milp", "highs-milp") + (() if args.no_cbc else ("cbc",))
    params = {"lambdac": 1.0, "lambdas": 1.45, "softmax_temperature": 0.2}
    for width in args.widths:
        calls = [call for regime in trees.REGIMES for q in range(args.searches)
                 for call in trees.search_calls(width, regime, question=f"q{q}")]
        times = np.full((len(calls), len(runs)), np.inf)
        fallbacks.clear()
        for c, call in enumerate(calls):
            for r in range(args.repeat):
                for j in np.roll(np.arange(len(runs)), r):  # each solver first in turn
                    solver_params = {**params, "ilp_solver": runs[j]}
                    start = time.perf_counter()
                    allocate("softmax_costmodel", call.tree, call.candidates, call.remaining, solver_params, call.embedder)
                    times[c, j] = min(times[c, j], time.perf_counter() - start)
        handed = len(fallbacks) // args.repeat
        ratio = times[:, 0] / times[:, 1]
        # a worst ratio may be a moment of load: the worst calls run again, more often
        worst = np.argsort(-ratio)[:RETIMED]
        for c in worst:
            call = calls[c]
            for r in range(3 * args.repeat):
                for j in (0, 1) if r % 2 else (1, 0):
                    start = time.perf_counter()
                    allocate("softmax_costmodel", call.tree, call.candidates, call.remaining,
                             {**params, "ilp_solver": runs[j]}, call.embedder)
                    times[c, j] = min(times[c, j], time.perf_counter() - start)
        retimed = (times[worst, 0] / times[worst, 1]).max()

        def cell(ratio):
            return f"{np.median(ratio):6.3f} {np.quantile(ratio, 0.9):6.3f} {ratio.max():6.3f}"

        cbc = f"{'-':>20s}" if args.no_cbc else cell(times[:, 0] / times[:, 3])
        print(f"{width:5d} {len(calls):5d}  {cell(ratio)} {retimed:6.3f}  {cell(times[:, 1] / times[:, 2])}  {cbc}  "
              f"{handed:8d}", flush=True)
    ets_module.solve_highs_milp = milp


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
    from results import recorded  # bench/ is on the path of a bench run as a script

    with recorded():
        main()
