"""Every method on equal terms: the same problems, seeds and widths for ETS (with and without the
diversity term), REBASE, beam search, DVTS, best-of-N and a greedy sample.

For each method and width it prints accuracy by weighted majority vote and by best-of-N (last step
score), each with a 95 % Wilson interval, the KV-cache figure (docs/algorithm.md#the-kv-cache-figure),
tokens generated, model calls, wall time and tokens/s; then each method's ratios to REBASE at the
same width (the KV-cache ratio with a 95 % interval paired over the problems), and the difference of
each method to greedy on the same problems with a paired 95 % interval, and where each method's wrong
answers are lost: the right answer among its finished trajectories but out-voted, or never reached. It writes the run directories, `methods.json` (raw figures and ratios) and the plots of
`ets report` under --out.

    python bench/methods.py                  # full: the CPU models on held-out ASDiv problems (~1 h on 2 cores)
    python bench/methods.py --quick          # seconds: the scripted toy world (the test suite runs this)
    python bench/methods.py --width 64 --set retire_empty_steps=false   # any config key, for every method
    python bench/methods.py --methods rebase ets --width 16 --sweep lambdac=0.5,1,2,4   # ETS once per value
    python bench/methods.py --policy_host URL --reward_host URL --dataset math500 --config configs/reference/ets_16_math500.yaml

Runs resume: a method whose run directory is complete is read back, not searched again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ets.backends.factory import BackendSpec, build_backends  # noqa: E402
from ets.commands.run import parse_overrides, parse_sweep  # noqa: E402
from ets.config import SearchConfig  # noqa: E402
from ets.datasets import load_problems  # noqa: E402
from ets.evaluate import evaluate_settings  # noqa: E402
from ets.evaluate.grade import default_grader  # noqa: E402
from ets.evaluate.intervals import paired_difference, ratio_interval, wilson_interval  # noqa: E402
from ets.evaluate.report import build_report  # noqa: E402
from ets.runner import CHECKPOINT_NAME, checkpoint_files, read_checkpoint, run_problems  # noqa: E402

VOTE = "majority_vote/weighted/last"
BEST = "best_of_n/last"

# name -> config changes; greedy is one sample at temperature 0, whatever the width
METHODS = {
    # one sequence a problem: 16 problems at once fill its decoding batches as 4 problems of ETS's 8 children
    "greedy": {"select_method": "best_of_n", "width": 1, "temperature": 0.0, "num_threads": 16},
    "best_of_n": {"select_method": "best_of_n"},
    "ets": {"select_method": "softmax_costmodel"},
    "ets_no_diversity": {"select_method": "softmax_costmodel", "lambdas": 0.0},
    "rebase": {"select_method": "softmax"},
    "beam_search": {"select_method": "beam_search"},
    "dvts": {"select_method": "dvts"},
    "particle_filtering": {"select_method": "particle_filtering"},
}
COST_FIELDS = ("kv_cache_size", "tokens_generated", "model_calls", "time")
# the methods a --sweep varies (the others ignore the ETS keys a sweep is for: lambdac, lambdas)
SWEPT_METHODS = ("ets", "ets_no_diversity")


@dataclass
class Row:
    method: str
    width: int
    run_dir: Path
    vote: list[bool]  # per problem, correct under the weighted vote
    best: list[bool]  # per problem, correct under best-of-N (last)
    reached: list[bool]  # per problem, some finished trajectory has the right answer (what any pick could get)
    stats: dict
    kv_by_problem: dict[int, int]  # problem id -> its KV-cache figure, from the run's trees


    def figures(self) -> dict:
        n = len(self.vote)
        out = {"method": self.method, "width": self.width, "problems": n, "run": str(self.run_dir)}
        for name, correct in (("vote", self.vote), ("best", self.best)):
            k = sum(correct)
            low, high = wilson_interval(k, n)
            out[f"{name}_accuracy"], out[f"{name}_ci"] = k / n, [low, high]
        out["reached"] = sum(self.reached) / n
        out.update({k: self.stats[k] for k in COST_FIELDS})
        out["tokens_per_s"] = self.stats["tokens_generated"] / self.stats["time"] if self.stats["time"] else 0.0
        return out


def quick_dataset(path: Path, problems: int) -> str:
    """Toy questions whose answers the scripted world can give (a digit), for --quick."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(problems):
            fh.write(json.dumps({"question": f"toy problem {i}", "answer": str(i % 10)}) + "\n")
    return str(path)


async def run_method(name: str, width: int, problems, base: SearchConfig, backends, out: Path, model_type: str,
                     swept: tuple[str, str, object] | None = None) -> Row:
    """One method at one width; ``swept`` (key, value as written, value as read) varies one config key. A
    swept value equal to the base config's shares the unswept run's directory, so either run resumes the other."""
    config = base.replace(**{"width": width, **METHODS[name]})
    label, run_name = name, f"{name}_w{config.width}"
    if swept is not None:
        key, written, value = swept
        label = f"{name} {key}={written}"
        if value != getattr(config, key):
            run_name = f"{name}_{key}={written}_w{config.width}"
        config = config.replace(**{key: value})
    run_dir = out / run_name
    summary = await run_problems(problems, config, backends, run_dir)
    results = evaluate_settings(summary.answers, [VOTE, BEST], model_type)
    return Row(label, config.width, run_dir,
               [p.correct for p in results[VOTE].problems], [p.correct for p in results[BEST].problems],
               reached(results[VOTE].problems), summary.stats.to_dict(), kv_by_problem(run_dir))


def reached(problems) -> list[bool]:
    """Per problem, whether one of its vote's answer classes is right: the right answer was among the
    finished trajectories, whatever the pick."""
    grader = default_grader()
    return [any(grader.is_correct(answer, p.ground_truth) for answer, _ in p.votes) for p in problems]


def kv_by_problem(run_dir: Path) -> dict[int, int]:
    """Each problem's KV-cache figure, as its tree (the run's checkpoint) records it."""
    return stat_by_problem(run_dir, "kv_cache_size")


def stat_by_problem(run_dir: Path, name: str) -> dict[int, float]:
    """Each problem's search statistic ``name`` (a SearchStats field), as its tree records it."""
    out = {}
    for path in checkpoint_files(run_dir / "trees"):
        saved, _ = read_checkpoint(path)
        if saved is not None:
            out[int(CHECKPOINT_NAME.fullmatch(path.name).group(1))] = saved["stats"][name]
    return out


def ratios(rows: list[Row]) -> list[dict]:
    """Each method against REBASE at the same width: cost ratios and accuracy differences (points)."""
    rebase = {r.width: r for r in rows if r.method == "rebase"}
    out = []
    for r in rows:
        ref = rebase.get(r.width)
        if ref is None or r is ref:
            continue
        entry = {"method": r.method, "width": r.width}
        for k in COST_FIELDS:
            entry[f"{k}_ratio"] = r.stats[k] / ref.stats[k] if ref.stats[k] else None
        # the KV ratio's 95 % interval, paired over the problems: what a few costly problems can move
        shared = sorted(set(r.kv_by_problem) & set(ref.kv_by_problem))
        entry["kv_cache_size_ci"] = list(ratio_interval([r.kv_by_problem[i] for i in shared],
                                                        [ref.kv_by_problem[i] for i in shared])[1:]) if shared else None
        entry["vote_points"] = 100 * (sum(r.vote) - sum(ref.vote)) / len(r.vote)
        entry["best_points"] = 100 * (sum(r.best) - sum(ref.best)) / len(r.best)
        out.append(entry)
    return out


def versus_greedy(rows: list[Row]) -> list[dict]:
    """Each method's weighted-vote accuracy minus greedy's on the same problems, with a paired interval."""
    greedy = next((r for r in rows if r.method == "greedy"), None)
    out = []
    for r in rows:
        if greedy is None or r is greedy:
            continue
        diff, low, high = paired_difference(r.vote, greedy.vote)
        out.append({"method": r.method, "width": r.width, "points": 100 * diff, "ci": [100 * low, 100 * high]})
    return out


def _pct(x: float) -> str:
    return f"{100 * x:5.1f}"


def render(rows: list[Row], ratio_rows: list[dict], greedy_rows: list[dict]) -> str:
    lines = [
        f"{'method':<17} {'width':>5} {'WMV last % [95% CI]':>22} {'BoN last % [95% CI]':>22} "
        f"{'KV cache':>10} {'tokens':>8} {'calls':>7} {'time s':>8} {'tok/s':>6}",
    ]
    for r in rows:
        f = r.figures()
        lines.append(
            f"{r.method:<17} {r.width:>5} {_pct(f['vote_accuracy'])} [{_pct(f['vote_ci'][0])},{_pct(f['vote_ci'][1])}]"
            f"   {_pct(f['best_accuracy'])} [{_pct(f['best_ci'][0])},{_pct(f['best_ci'][1])}]"
            f"   {f['kv_cache_size']:>10} {f['tokens_generated']:>8} {f['model_calls']:>7} {f['time']:>8.1f} {f['tokens_per_s']:>6.1f}")
    if ratio_rows:
        lines += ["", "against REBASE at the same width (cost ratios, the KV one with its paired 95% CI; "
                  "accuracy difference in points):",
                  f"{'method':<17} {'width':>5} {'KV [95% CI]':>20} {'tokens':>7} {'calls':>6} {'time':>6} "
                  f"{'WMV pts':>8} {'BoN pts':>8}"]
        for e in ratio_rows:
            cells = [f"{e[f'{k}_ratio']:.2f}x" if e[f"{k}_ratio"] is not None else "-" for k in COST_FIELDS]
            ci = e["kv_cache_size_ci"]
            kv = f"{cells[0]} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else cells[0]
            lines.append(f"{e['method']:<17} {e['width']:>5} {kv:>20} {cells[1]:>7} {cells[2]:>6} {cells[3]:>6} "
                         f"{e['vote_points']:>+8.1f} {e['best_points']:>+8.1f}")
    lines += ["", "where the answers are lost (problems): right by the vote; the right answer among the finished "
              "trajectories but out-voted (best-of-N's pick right); never reached",
              f"{'method':<17} {'width':>5} {'right':>6} {'out-voted':>10} {'(BoN right)':>11} {'never reached':>14}"]
    for r in rows:
        out_voted = [reach and not vote for reach, vote in zip(r.reached, r.vote)]
        rescued = sum(o and b for o, b in zip(out_voted, r.best))
        lines.append(f"{r.method:<17} {r.width:>5} {sum(r.vote):>6} {sum(out_voted):>10} {rescued:>11} "
                     f"{r.reached.count(False):>14}")
    if greedy_rows:
        lines += ["", "against greedy on the same problems (weighted majority vote, points, paired 95% CI):"]
        for e in greedy_rows:
            lines.append(f"{e['method']:<17} {e['width']:>5} {e['points']:+6.1f} [{e['ci'][0]:+6.1f}, {e['ci'][1]:+6.1f}]")
    return "\n".join(lines)


async def main_async(args) -> dict:
    out = Path(args.out)
    if args.quick:
        dataset = quick_dataset(out / "toy.jsonl", args.problems or 6)
        spec = BackendSpec(scripted=True)
        base = SearchConfig(prompt_format="raw", lambdas=1.0, num_threads=4, seed=1)
        widths = args.width or [4, 8]
    else:
        dataset = args.dataset
        spec = BackendSpec(policy_hosts=tuple(args.policy_host or ()), reward_hosts=tuple(args.reward_host or ()),
                           reward_api=args.reward_api)
        base = SearchConfig.from_yaml(args.config)
        widths = args.width or [8]
    base = SearchConfig.from_dict({**base.to_dict(), **parse_overrides(args.overrides)}, source="--set")
    base = base.replace(seed=base.seed if base.seed is not None else 1)
    problems = load_problems(dataset, args.problems if not args.quick else None)
    model_type = base.format_name
    # one set of backends serves every method; the embedder is built when ETS's diversity term is on
    backends = build_backends(spec, base.replace(select_method="softmax_costmodel"), log=lambda m: print(m, file=sys.stderr))
    names = args.methods or list(METHODS)
    sweep = parse_sweep(args.sweep, base)
    rows: list[Row] = []
    try:
        for name in names:
            variants = [(sweep[0], *v) for v in sweep[1]] if sweep and name in SWEPT_METHODS else [None]
            for width in ([1] if name == "greedy" else widths):
                for swept in variants:
                    started = time.perf_counter()
                    rows.append(await run_method(name, width, problems, base, backends, out, model_type, swept))
                    print(f"{rows[-1].method} width {width}: done in {time.perf_counter() - started:.0f}s",
                          file=sys.stderr)
    finally:
        backends.close()
    ratio_rows, greedy_rows = ratios(rows), versus_greedy(rows)
    print(f"{len(problems)} problems of {dataset}; config {args.config if not args.quick else 'scripted toy world'}"
          f"{''.join(f' --set {item}' for item in args.overrides)}{f' --sweep {args.sweep}' if args.sweep else ''}"
          f"; seed {base.seed}")
    print(render(rows, ratio_rows, greedy_rows))
    report = build_report([r.run_dir for r in rows], out / "report", model_type=model_type, metric=VOTE)
    result = {"dataset": dataset, "problems": len(problems), "rows": [r.figures() for r in rows],
              "ratios_to_rebase": ratio_rows, "versus_greedy": greedy_rows,
              "plots": [str(p) for p in report.files if p.suffix == ".png"]}
    (out / "methods.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"\nmethods.json, runs and plots in {out}")
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the scripted toy world: seconds, for the test suite")
    ap.add_argument("--dataset", default="asdiv[10::20]", help="problems (default: the held-out ASDiv slice)")
    ap.add_argument("--problems", type=int, default=None, help="only the first N problems")
    ap.add_argument("--config", default=os.path.relpath(ROOT / "configs/cpu_ets.yaml"))  # printed as given
    ap.add_argument("--width", type=int, nargs="+", help="widths (default: 8; --quick: 4 8)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of the config for every method, e.g. --set retire_empty_steps=true")
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), help="a subset of the methods")
    ap.add_argument("--sweep", metavar="KEY=V1,V2,...",
                    help=f"run {' and '.join(SWEPT_METHODS)} once for each value of a config key, e.g. lambdac=0.5,1,2,4")
    ap.add_argument("--policy_host", nargs="+")
    ap.add_argument("--reward_host", nargs="+")
    ap.add_argument("--reward_api")
    ap.add_argument("--out", default=str(ROOT / "runs/methods"))
    args = ap.parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    from results import recorded  # bench/ is on the path of a bench run as a script

    with recorded(enabled="--quick" not in sys.argv):  # the toy world's table is no result
        main()
