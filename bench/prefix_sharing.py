"""Tokens/s of the CPU policy with prefix sharing against re-evaluating each child's whole prompt.

One run, the same tree-shaped workload three ways, side by side:

* ``no sharing``  — every child evaluates its node's whole prompt, then decodes alone
  (what a backend without a prefix cache does: ``k`` prompt evaluations per expansion);
* ``shared prefix, sequential`` — the node's prompt is evaluated once (and found in the
  cache when its parent generated it), the ``k`` children are decoded one after another;
* ``shared prefix, batched`` — the same, and the children are decoded together as
  sequences of one llama.cpp batch sharing the prefix's cache cells: the ``k`` children of a
  node, and those of every node of the depth expanded at the same time (the default).

The workload: GSM8K test problems; each root is expanded into ``k`` children, and each
child into ``k`` grandchildren (depth 2), ``max_tokens`` tokens per step (no stop string,
so every mode does the same amount of generation).

    .venv/bin/python bench/prefix_sharing.py --problems 3 --k 4 --max_tokens 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from ets.backends.base import Context, SamplingParams  # noqa: E402
from ets.backends.llamacpp import DEFAULT_FORMAT, LlamaCppPolicy, default_threads  # noqa: E402
from ets.formats import get_format  # noqa: E402
from ets.models import builtin_dataset_path  # noqa: E402


def questions(n: int) -> list[str]:
    out = []
    with open(builtin_dataset_path("gsm8k"), encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["question"])
            if len(out) == n:
                break
    return out


async def workload(policy: LlamaCppPolicy, qs: list[str], k: int, depth: int, params: SamplingParams) -> dict:
    fmt = get_format(DEFAULT_FORMAT)
    generated = computed = reused = calls = 0
    started = time.perf_counter()
    for q in qs:
        frontier = [Context(q, fmt.prompt(q))]
        for _ in range(depth):
            nxt = []
            # as the search does: every node of a depth is expanded at once
            results = await asyncio.gather(*(policy.generate(ctx, k, params) for ctx in frontier))
            for ctx, steps in zip(frontier, results):
                calls += 1
                for s in steps:
                    generated += s.num_tokens
                    computed += s.prompt_tokens_computed
                    reused += s.prompt_tokens_reused
                    nxt.append(ctx.child(s.text))
            frontier = nxt
    elapsed = time.perf_counter() - started
    return {"time": elapsed, "generated": generated, "computed": policy.engine.prompt_tokens_computed,
            "reported_computed": computed, "reported_reused": reused, "requests": calls,
            "decode_calls": policy.engine.decode_calls, "tok_s": generated / elapsed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=3)
    ap.add_argument("--k", type=int, default=4, help="children per expanded node")
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--max_tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--model_path", default=None)
    args = ap.parse_args(argv)

    qs = questions(args.problems)
    params = SamplingParams(temperature=0.8, max_tokens=args.max_tokens, stop=(), seed=0)
    modes = [
        ("no sharing (whole prompt per child)", dict(share_prefix=False, n_batch_seqs=1)),
        ("shared prefix, children sequential", dict(share_prefix=True, n_batch_seqs=1)),
        ("shared prefix, children batched", dict(share_prefix=True, n_batch_seqs=16)),
    ]
    rows = []
    for name, kw in modes:
        policy = LlamaCppPolicy(args.model_path, n_ctx=8192, n_threads=args.threads, seed=0, **kw)
        asyncio.run(policy.generate(Context("warm up", "warm up"), 1, SamplingParams(max_tokens=2)))
        policy.engine.prompt_tokens_computed = 0
        policy.engine.decode_calls = 0
        rows.append((name, asyncio.run(workload(policy, qs, args.k, args.depth, params))))
        policy.close()

    print(f"workload: {args.problems} GSM8K problems, k={args.k} children per node, depth {args.depth}, "
          f"{args.max_tokens} tokens per step, {args.threads or default_threads()} llama.cpp thread(s), "
          f"{os.cpu_count()} cores")
    print(f"{'mode':40s} {'time s':>8s} {'gen tok':>8s} {'prompt tok computed':>20s} {'decode calls':>13s} "
          f"{'gen tok/s':>10s}")
    for name, r in rows:
        print(f"{name:40s} {r['time']:8.2f} {r['generated']:8d} {r['computed']:20d} {r['decode_calls']:13d} "
              f"{r['tok_s']:10.1f}")
    base = rows[0][1]["tok_s"]
    for name, r in rows[1:]:
        print(f"ratio {name} / no sharing: {r['tok_s'] / base:.2f}x tokens/s, "
              f"{rows[0][1]['computed'] / max(1, r['computed']):.1f}x fewer prompt tokens computed")
    return 0


if __name__ == "__main__":
    from results import recorded  # bench/ is on the path of a bench run as a script

    with recorded():
        raise SystemExit(main())
