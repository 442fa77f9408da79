"""Grading throughput: comparisons per second with and without the cache.

A synthetic width-256 run (default: 100 problems x 256 trajectories, answers
drawn per problem from the right answer, other renderings of it and wrong
ones, as a policy produces them) is evaluated under all nine settings with
the cached grader; an uncached grader (math-verify parse and verify on every
comparison, as a plain port of the reference would) is timed on a sample of
the same comparisons.

    .venv/bin/python bench/grading.py [--problems 100] [--width 256] [--sample 300]
"""

from __future__ import annotations

import argparse
import random
import time

from ets.evaluate import ALL_SETTINGS, Grader, evaluate_settings

TAG = " \u043a\u0438"

GROUND_TRUTHS = [
    "-1", "49", "\\frac{20000}{\\pi}", "(-\\infty, 2) \\cup (3, \\infty)", "18+2\\pi", "10080", "\\frac{3}{2}",
    "\\begin{pmatrix} -18 \\\\ -49 \\\\ 96 \\end{pmatrix}", "\\frac{\\sqrt{3}}{3}", "3 \\sqrt{5}", "x=5",
    "\\text{ellipse}", "0", "240", "\\frac{2}{1005}", "(-2,1)", "1", "64",
]
RENDERINGS = {  # other ways a policy writes the same answer
    "-1": ["-1.0"], "49": ["49.0", "049"], "\\frac{3}{2}": ["1.5", "3/2", "\\dfrac{3}{2}"],
    "\\frac{\\sqrt{3}}{3}": ["\\frac{1}{\\sqrt{3}}", "\\dfrac{\\sqrt{3}}{3}"], "3 \\sqrt{5}": ["3\\sqrt{5}", "\\sqrt{45}"],
    "x=5": ["5"], "\\frac{2}{1005}": ["2/1005"], "240": ["240.0"], "1": ["1.0"],
}
WRONG = ["2", "3", "12", "-2", "0.5", "\\frac{1}{2}", "\\sqrt{2}", "2\\pi", "(1,2)", "7.25", "x=3", "100", "\\frac{5}{7}"]


def synthetic_run(problems: int, width: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for pid in range(problems):
        gt = GROUND_TRUTHS[pid % len(GROUND_TRUTHS)]
        pool = [gt] * 6 + RENDERINGS.get(gt, []) * 2 + rng.sample(WRONG, 6) + [str(rng.randint(0, 999)) for _ in range(8)]
        cands = []
        for _ in range(width):
            answer = rng.choice(pool)
            scores = [round(rng.random(), 4) for _ in range(rng.randint(1, 6))]
            cands.append({"text": f"Q\nStep 1: x.{TAG}\nThe answer is: {answer}{TAG}", "step_scores": scores})
        out.append({"id": pid, "question": "Q", "model_answer": cands, "ground_truth_answer": gt})
    return out


class UncachedGrader(Grader):
    """math-verify on every comparison: no parse cache, no verdict cache, no fast path."""

    def equivalent(self, given, reference):
        from math_verify import parse, verify

        self.counts["comparisons"] += 1
        if given is None or reference is None:
            return False
        if given.strip() == reference.strip():
            return True
        return bool(verify(parse("\\boxed{" + reference + "}"), parse("\\boxed{" + given + "}")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=100)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--sample", type=int, default=300, help="comparisons timed without the cache")
    args = ap.parse_args()

    problems = synthetic_run(args.problems, args.width)
    import math_verify  # noqa: F401  (imported first: import time is not grading time)

    grader = Grader()
    t0 = time.perf_counter()
    results = evaluate_settings(problems, ALL_SETTINGS, "llemma", grader)
    cached_s = time.perf_counter() - t0
    n = grader.counts["comparisons"]
    print(f"{args.problems} problems x width {args.width}, 9 settings: {cached_s:.2f} s")
    print(f"  cached:   {n} comparisons, {n / cached_s:,.0f} comparisons/s "
          f"({grader.counts['parses']} parses, {grader.counts['verify_calls']} math-verify calls, "
          f"{grader.counts['cache_hits']} cache hits)")
    print("  accuracy: " + ", ".join(f"{k} {r.accuracy:.3f}" for k, r in results.items()))

    # the same kind of comparisons, uncached, on a sample (all of them would take too long)
    rng = random.Random(1)
    pairs = []
    for p in rng.sample(problems, min(len(problems), 20)):
        answers = [c["text"].split("The answer is: ")[1][: -len(TAG)] for c in p["model_answer"]]
        pairs += [(rng.choice(answers), rng.choice(answers)) for _ in range(args.sample // 20 + 1)]
    pairs = pairs[: args.sample]
    slow = UncachedGrader()
    t0 = time.perf_counter()
    for given, ref in pairs:
        slow.equivalent(given, ref)
    slow_s = time.perf_counter() - t0
    rate = len(pairs) / slow_s
    print(f"  uncached: {len(pairs)} comparisons in {slow_s:.2f} s, {rate:,.0f} comparisons/s "
          f"(the {n} comparisons above would take ~{n / rate:,.0f} s)")


if __name__ == "__main__":
    from results import recorded  # bench/ is on the path of a bench run as a script

    with recorded():
        main()
