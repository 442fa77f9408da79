"""How well the CPU reward models' scores track correctness, and the arithmetic PRM's fit.

1. Sample trajectories of the CPU policy (best-of-N, independent samples) on a tuning split and a
   held-out split of ASDiv: `ets run` writes them as run directories.
2. Label every node of every trajectory with the correctness of the trajectory's final answer.
3. `--fit`: fit the arithmetic PRM's logistic weights on the tuning split (L2-regularised Newton).
4. Report, on each split, the AUROC of each PRM's last-step score against final correctness (over
   all trajectories, and within problems: what a search compares; and, for the arithmetic PRM, of
   every step's score against its trajectory's correctness), plus best-of-N and weighted-vote
   accuracy picked by each PRM against a random pick.

    python bench/prm_quality.py                       # sample (once; cached in runs/prm_quality) and report
    python bench/prm_quality.py --fit                 # ... and print fitted weights for WEIGHTS
    python bench/prm_quality.py --fit --within --tuning_run DIR --held_out_run DIR   # one intercept per problem (POLICY_WEIGHTS)
    python bench/prm_quality.py --judge               # ... and score the held-out last steps with the LLM judge
    python bench/prm_quality.py --held_out_run runs/methods/best_of_n_w8   # held-out trajectories already sampled

Any run of independent samples (`best_of_n`) serves as a split's trajectories: `--tuning_run DIR` /
`--held_out_run DIR` read one instead of sampling.

The splits are slices of the built-in ASDiv set (`ets run --input_path 'asdiv[START::STEP]'`):
tuning `asdiv[0::20]`, held-out `asdiv[10::20]` by default, disjoint by construction.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ets.backends.arithmetic import (  # noqa: E402
    FEATURES, WEIGHTS, ArithmeticPRM, answer_value, equations_in, logistic, numbers_in, path_features, question_numbers,
)
from ets.backends.base import Context  # noqa: E402
from ets.backends.llamacpp import build_llamacpp_judge  # noqa: E402
from ets.evaluate import evaluate_settings, extract_answer, extract_ground_truth  # noqa: E402
from ets.evaluate.grade import default_grader  # noqa: E402
from ets.formats import get_format  # noqa: E402

TUNE = "asdiv[0::20]"
BEST, VOTE = "best_of_n/last", "majority_vote/weighted/last"
HELD_OUT = "asdiv[10::20]"


def sample(dataset: str, out: Path, problems: int, width: int, temperature: float) -> Path:
    """Independent trajectories of the CPU policy (cached: `ets run` resumes a finished run)."""
    cmd = [sys.executable, "-m", "ets", "run", "--input_path", dataset, "--num_samples", str(problems),
           "--config", str(ROOT / "configs/cpu_ets.yaml"), "--select_method", "best_of_n", "--width", str(width),
           "--set", f"temperature={temperature}", "--set", "lambdas=0", "--quiet", "--output_path", str(out / "answers.json")]
    subprocess.run(cmd, check=True)
    return out


def labelled_paths(run_dir: Path):
    """(question, steps, correct, is_last) for every node of every trajectory, and per problem its
    answers.json entry with each trajectory's correctness."""
    grader = default_grader()
    # each tree file holds its problem's answers.json entry (so a partial run can be read too)
    answers = [json.loads(f.read_text())["answer"] for f in sorted((run_dir / "trees").glob("q*.json"))]
    rows, problems = [], []
    for problem in answers:
        truth = extract_ground_truth(problem["ground_truth_answer"])
        verdicts = []
        for trajectory in problem["model_answer"]:
            correct = grader.is_correct(extract_answer(trajectory["text"], "small_instruct"), truth)
            steps = trajectory["steps"]
            verdicts.append(correct)
            for depth in range(1, len(steps) + 1):
                rows.append((problem["question"], steps[:depth], correct, depth == len(steps)))
        problems.append((problem, verdicts))
    return rows, problems


def auroc(scores, labels) -> float:
    """Probability that a correct item outscores a wrong one (ties count half)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(values):  # average ranks of ties
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def fit(rows, l2: float, features=FEATURES, extra: bool = False, within: bool = False) -> dict[str, float]:
    """L2-regularised logistic regression over FEATURES (Newton's method), the classes weighted
    equally: right trajectories are rare (a few %), and a score fitted to that base rate would sit
    near 0 for every step, where a softmax over scores cannot tell steps apart. Balanced, the score
    is the evidence for a right trajectory against a wrong one, centred on 0.5; the ranking
    (AUROC) is that of the plain fit.

    ``within``: one intercept per problem (problems whose trajectories all agree carry no ranking and
    are left out), so the weights rank steps of the same problem, as the search compares them; a
    feature that marks hard problems (long solutions, more equations) gets no weight for that alone.
    The bias returned is the median problem's intercept."""
    if within:
        outcomes: dict[str, set] = {}
        for q, _, c, _ in rows:
            outcomes.setdefault(q, set()).add(bool(c))
        rows = [r for r in rows if len(outcomes[r[0]]) == 2]
    # an intercept per group of rows: one group (the bias), or one per problem
    group_of = (lambda q: q) if within else (lambda q: None)
    column = {g: i for i, g in enumerate(sorted({group_of(q) for q, _, _, _ in rows}, key=str))}
    intercepts = np.zeros((len(rows), len(column)))
    intercepts[np.arange(len(rows)), [column[group_of(q)] for q, _, _, _ in rows]] = 1.0
    values = [{**path_features(q, s), **(extra_features(q, s) if extra else {})} for q, s, _, _ in rows]
    slopes = np.array([[v[f] for f in features] for v in values])
    x = np.hstack([intercepts, slopes])
    y = np.array([float(c) for _, _, c, _ in rows])
    positives = max(1.0, y.sum())
    sample = np.where(y > 0, len(y) / (2 * positives), len(y) / (2 * max(1.0, len(y) - positives)))
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], l2)
    penalty[:len(column)] = 0.0  # the bias (or the problems' intercepts) is not shrunk
    for _ in range(50):
        p = 1 / (1 + np.exp(-(x @ w)))
        grad = x.T @ (sample * (p - y)) + penalty * w
        hess = (x * (sample * p * (1 - p))[:, None]).T @ x + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    bias = float(np.median(w[:len(column)]))
    return {"bias": round(bias, 2), **{f: round(float(v), 2) for f, v in zip(features, w[len(column):])}}


# measured on the tuning split and left out of the PRM (docs/cpu-models.md)
CANDIDATES = ("coverage", "repeats", "answer_is_last_result", "answer_unreadable",
              "negative_result", "reused_given", "unasked_product")
_PRODUCT_RE = re.compile(r"\d\s*[*×x/÷]\s*\$?\d")
_PRODUCT_CUES = re.compile(r"\b(each|every|per|times|twice|double|triple|half|average|split|divide|equal|share|groups?|rows?)\b",
                           re.IGNORECASE)


def extra_features(question: str, steps) -> dict[str, float]:
    """The candidate features that `--cv` tries beside the PRM's own."""
    given = question_numbers(question)
    used = {x for step in steps for x in numbers_in(step) if x in given}
    equations = [eq for step in steps for eq in equations_in(step)]
    newest = steps[-1] if steps else ""
    results = [eq.rhs for eq in equations if eq.holds]
    value = answer_value(newest)  # None for a step with no answer line
    operand_uses = Counter(x for eq in equations for x in set(eq.operands) if x in given)
    return {
        "coverage": len(used) / len(given) if given else 1.0,
        "repeats": float(bool(newest.strip()) and newest.strip() in [s.strip() for s in steps[:-1]]),
        "answer_is_last_result": float(value is not None and bool(results) and value == results[-1]),
        "answer_unreadable": float(path_features(question, steps)["is_answer"] and value is None),
        "negative_result": float(any(eq.rhs < 0 for eq in equations)),
        "reused_given": float(any(n > 1 for n in operand_uses.values())),
        "unasked_product": float(not _PRODUCT_CUES.search(question) and any(_PRODUCT_RE.search(s) for s in steps)),
    }


def cv_auroc(rows, extra_rows, l2: float, features, folds: int = 5) -> float:
    """5-fold cross-validated AUROC of the last step's score with ``features`` (folds by problem;
    ``extra_rows`` always in training)."""
    questions = sorted({r[0] for r in rows})
    parts = [set(questions[i::folds]) for i in range(folds)]
    extra = any(f not in FEATURES for f in features)
    scores, labels = [], []
    for part in parts:
        train = [r for r in rows if r[0] not in part] + list(extra_rows)
        weights = fit(train, l2, features, extra=extra)
        for q, s, c, is_last in rows:
            if q in part and is_last:
                values = {**path_features(q, s), **(extra_features(q, s) if extra else {})}
                scores.append(logistic({f: values[f] for f in features}, weights))
                labels.append(c)
    return auroc(scores, labels)


def cross_validate(rows, extra_rows, l2: float) -> dict[str, float]:
    """CV AUROC of the PRM's features, of them with each candidate added alone, and with all candidates."""
    table = {"PRM features": cv_auroc(rows, extra_rows, l2, FEATURES)}
    for name in CANDIDATES:
        table[f"+ {name}"] = cv_auroc(rows, extra_rows, l2, FEATURES + (name,))
    table["+ every candidate"] = cv_auroc(rows, extra_rows, l2, FEATURES + CANDIDATES)
    return table


def within_auroc(last) -> float:
    """The mean over problems (those with right and wrong trajectories) of the AUROC of the last
    step's score among that problem's trajectories: how well the score ranks what a search compares."""
    by_problem: dict[str, list] = {}
    for q, score, correct in last:
        by_problem.setdefault(q, []).append((score, correct))
    values = [auroc(*zip(*pairs)) for pairs in by_problem.values() if 0 < sum(c for _, c in pairs) < len(pairs)]
    return float(np.mean(values)) if values else float("nan")


def picks(problems, score_fn) -> dict[str, float]:
    """Accuracy when each problem's answer is picked, from trajectories rescored by ``score_fn``, by
    best-of-N (last step score) and by the weighted majority vote (last), as `ets evaluate` picks;
    and at random (the mean over trajectories)."""
    rescored = [{**entry, "model_answer": [
        {**t, "step_scores": [score_fn(entry["question"], t["steps"][:d]) for d in range(1, len(t["steps"]) + 1)]}
        for t in entry["model_answer"]]} for entry, _ in problems]
    results = evaluate_settings(rescored, [BEST, VOTE], "small_instruct")
    chance = sum(np.mean(verdicts) for _, verdicts in problems if verdicts)
    return {"best_of_n": results[BEST].accuracy, "weighted_vote": results[VOTE].accuracy,
            "random_pick": chance / len(problems)}


def judge_scores(rows) -> list[float]:
    judge = build_llamacpp_judge(format="small_instruct")
    prompt = get_format("small_instruct").prompt
    contexts = [Context(q, prompt(q), tuple(s)) for q, s, _, _ in rows]
    try:
        return asyncio.run(judge.score(contexts))
    finally:
        judge.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tune", default=TUNE)
    ap.add_argument("--held_out", default=HELD_OUT)
    ap.add_argument("--problems", type=int, default=60, help="problems per split")
    ap.add_argument("--width", type=int, default=8, help="trajectories per problem")
    ap.add_argument("--temperature", type=float, default=0.4, help="the CPU config's sampling temperature")
    ap.add_argument("--out", default=str(ROOT / "runs/prm_quality"))
    ap.add_argument("--tuning_run", nargs="+", help="best_of_n run directories to read instead of sampling the tuning split")
    ap.add_argument("--held_out_run", nargs="+", help="best_of_n run directories to read instead of sampling the held-out split")
    ap.add_argument("--l2", type=float, default=3.0, help="L2 penalty of the fit (chosen by 5-fold CV on the tuning split)")
    ap.add_argument("--fit", action="store_true", help="fit the weights on the tuning split and report with them")
    ap.add_argument("--within", action="store_true",
                    help="fit with one intercept per problem: the weights rank steps within a problem (see fit)")
    ap.add_argument("--cv", action="store_true",
                    help="5-fold CV AUROC on the first tuning run (the others always train): the PRM features, each candidate added alone, all candidates")
    ap.add_argument("--judge", action="store_true", help="also score held-out last steps with the LLM self-judge")
    args = ap.parse_args()

    splits = {"tuning": args.tune, "held-out": args.held_out}
    given = {"tuning": args.tuning_run, "held-out": args.held_out_run}
    data = {}
    for name, dataset in splits.items():
        run_dirs = [Path(d) for d in given[name]] if given[name] else [
            sample(dataset, Path(args.out) / name.replace("-", "_"), args.problems, args.width, args.temperature)]
        if given[name]:
            splits[name] = " + ".join(given[name])
        read = [labelled_paths(d) for d in run_dirs]
        data[name] = ([r for rows, _ in read for r in rows], [p for _, problems in read for p in problems])
    if args.cv:
        first, *others = given["tuning"] or [str(Path(args.out) / "tuning")]
        extra_rows = [r for d in others for r in labelled_paths(Path(d))[0]]
        for name, value in cross_validate(labelled_paths(Path(first))[0], extra_rows, args.l2).items():
            print(f"5-fold CV AUROC of the last step on {first}, {name}: {value:.3f}")
    weights = fit(data["tuning"][0], args.l2, within=args.within) if args.fit else WEIGHTS
    if args.fit:
        print("fitted weights (tuning split):", json.dumps(weights))
    prm = ArithmeticPRM(weights)
    for name, (rows, problems) in data.items():
        last = [(q, s, c) for q, s, c, is_last in rows if is_last]
        n_traj = len(last)
        rate = sum(c for _, _, c in last) / max(1, n_traj)
        step_auc = auroc([prm.score_steps(q, s) for q, s, _, _ in rows], [c for _, _, c, _ in rows])
        last_scores = [prm.score_steps(q, s) for q, s, _ in last]
        last_auc = auroc(last_scores, [c for _, _, c in last])
        problem_auc = within_auroc([(q, score, c) for (q, _, c), score in zip(last, last_scores)])
        acc = picks(problems, prm.score_steps)
        print(f"{name} ({splits[name]}, {len(problems)} problems, {n_traj} trajectories, {rate:.1%} correct):")
        with_false = [path_features(q, s)["false_equations"] > 0 for q, s, _ in last]
        right = [c for _, _, c in last]
        print(f"  trajectories stating a false equation: {sum(f and not c for f, c in zip(with_false, right))} of "
              f"{right.count(False)} wrong ones, {sum(f and c for f, c in zip(with_false, right))} of {right.count(True)} right ones")
        print(f"  arithmetic PRM: AUROC last step {last_auc:.3f} (within problems {problem_auc:.3f}), every step {step_auc:.3f}; "
              f"pick by best-of-N {acc['best_of_n']:.1%}, weighted vote {acc['weighted_vote']:.1%}, "
              f"random pick {acc['random_pick']:.1%}")
        if args.judge and name == "held-out":
            lasts = [r for r in rows if r[3]]
            scores = judge_scores(lasts)
            print(f"  LLM self-judge: AUROC last step {auroc(scores, [r[2] for r in lasts]):.3f}")


if __name__ == "__main__":
    from results import recorded  # bench/ is on the path of a bench run as a script

    with recorded():
        main()
