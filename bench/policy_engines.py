"""The policy servers `ets serve policy` starts, side by side on the same search: `--engine ets` (our
llama.cpp engine behind /v1/completions: concurrent requests decoded together, prefixes copied between
sequences) against `--engine llamacpp` (llama-cpp-python's server, one request at a time).

    python bench/policy_engines.py                        # SmolLM2, configs/cpu_ets.yaml, 40 held-out problems
    python bench/policy_engines.py --config configs/cpu_ets_qwen.yaml --problems 20

Each engine serves the config's built-in policy alone on this machine, with the same llama.cpp threads;
the search (the config's method and width, the in-process PRM) runs against it over HTTP, one engine
after the other. Prints per engine the accuracy by weighted vote with its 95 % interval, wall time,
tokens generated, requests and tokens/s, then the ratio of the problems' search times (llamacpp over
ets) with its 95 % interval, paired over the problems. The samples differ between the engines (each
has its own sampler), so the accuracies are two draws, not a replay.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from methods import METHODS, Row, _pct, run_method, stat_by_problem  # noqa: E402
from servers import start_serve, stop_server  # noqa: E402

from ets.backends.factory import BackendSpec, build_backends  # noqa: E402
from ets.backends.llamacpp.library import default_threads  # noqa: E402
from ets.config import SearchConfig  # noqa: E402
from ets.datasets import load_problems  # noqa: E402
from ets.evaluate.intervals import ratio_interval, wilson_interval  # noqa: E402
from ets.models import DEFAULT_POLICY  # noqa: E402

ENGINES = ("ets", "llamacpp")


def method_of(config: SearchConfig) -> str:
    """bench/methods.py's name of the config's method (the one that sets only its select_method)."""
    return next(name for name, changes in METHODS.items() if changes == {"select_method": config.select_method})


async def search_on(engine: str, problems, base: SearchConfig, threads: int, out: Path) -> Row:
    """The config's search over HTTP against ``ets serve policy --engine ENGINE`` with the built-in policy."""
    model = base.policy_model or DEFAULT_POLICY
    # --n_threads: llama-cpp-python's flag, which ours takes too
    proc, url = start_serve(["policy", "--engine", engine, "--model", model, "--served-model-name", model,
                             "--", "--n_threads", str(threads)], out / f"{engine}-server.log")
    backends = build_backends(BackendSpec(policy_hosts=(url,)), base, log=lambda m: print(m, file=sys.stderr))
    try:
        return await run_method(method_of(base), base.width, problems, base, backends, out / engine,
                                base.format_name)
    finally:
        await backends.aclose()
        backends.close()
        stop_server(proc)


def render(rows: dict[str, Row]) -> str:
    lines = [f"{'engine':10} {'WMV last % [95% CI]':>22} {'time s':>8} {'tokens':>8} {'requests':>9} {'tok/s':>7}"]
    for engine, row in rows.items():
        n, k = len(row.vote), sum(row.vote)
        low, high = wilson_interval(k, n)
        t = row.stats["time"]
        lines.append(f"{engine:10} {_pct(k / n):>6} [{_pct(low)}, {_pct(high)}] {t:8.1f} "
                     f"{row.stats['tokens_generated']:8d} {row.stats['model_calls']:9d} "
                     f"{row.stats['tokens_generated'] / t if t else 0:7.1f}")
    times = {engine: stat_by_problem(row.run_dir, "time") for engine, row in rows.items()}
    shared = sorted(set(times["llamacpp"]) & set(times["ets"]))
    ratio, low, high = ratio_interval([times["llamacpp"][i] for i in shared], [times["ets"][i] for i in shared])
    lines.append(f"\nllamacpp / ets, the problems' search time: {ratio:.2f}x [{low:.2f}, {high:.2f}] "
                 f"(paired over {len(shared)} problems)")
    return "\n".join(lines)


async def main_async(args) -> None:
    base = SearchConfig.from_yaml(args.config)
    base = base.replace(seed=base.seed if base.seed is not None else 1)
    problems = load_problems(args.dataset, args.problems)
    out = Path(args.out)
    rows = {}
    for engine in ENGINES:
        rows[engine] = await search_on(engine, problems, base, args.threads, out)
        print(f"{engine}: done in {rows[engine].stats['time']:.0f}s", file=sys.stderr)
    print(f"{len(problems)} problems of {args.dataset}; config {args.config} ({base.select_method}, width "
          f"{base.width}, {base.num_threads} problems at once); seed {base.seed}; "
          f"ets serve policy --model {base.policy_model or DEFAULT_POLICY}, {args.threads} llama.cpp threads")
    print(render(rows))
    print(f"\nruns and server logs in {out}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="asdiv[10::20]", help="problems (default: the held-out ASDiv slice)")
    ap.add_argument("--problems", type=int, default=40, help="the first N problems (default 40)")
    ap.add_argument("--config", default=os.path.relpath(ROOT / "configs/cpu_ets.yaml"))  # printed as given
    ap.add_argument("--threads", type=int, default=default_threads(shared=False),
                    help="llama.cpp threads of each server (default: this machine's cores)")
    ap.add_argument("--out", default="runs/policy_engines")
    asyncio.run(main_async(ap.parse_args(argv)))


if __name__ == "__main__":
    from results import recorded

    with recorded():
        main()
