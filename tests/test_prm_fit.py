"""bench/prm_quality.py's fit of the arithmetic PRM: with one intercept per problem (--within) the
weights rank the paths of one problem, and a feature that only marks hard problems loses its sign."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "prm_quality.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_prm_quality", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def rows_for(question, paths):
    """(question, steps, correct, is_last) for the last step of each (steps, correct) path."""
    return [(question, steps, correct, True) for steps, correct in paths]


def data():
    """Easy problems (one sum) are mostly right; hard ones (three sums) mostly wrong. Within each problem
    the right path states one equation more than the wrong one, which stops a sum short."""
    rows = []
    for a in range(3, 9):
        easy = f"Tom has {a} apples and 4 pears. How many fruits does he have?"
        right = [f"{a} + 4 = {a + 4}", f"Therefore, the final answer is: {a + 4}."]
        wrong = [f"Therefore, the final answer is: {a + 4}."]  # the right number, guessed: no work
        rows += rows_for(easy, [(right, True)] * 6 + [(wrong, False)] * 2)
        hard = f"Ann has {a} red, 5 blue, 6 green and 7 white beads. How many beads?"
        total = a + 18
        right = [f"{a} + 5 = {a + 5}", f"{a + 5} + 6 = {a + 11}", f"{a + 11} + 7 = {total}",
                 f"Therefore, the final answer is: {total}."]
        short = [f"{a} + 5 = {a + 5}", f"{a + 5} + 6 = {a + 11}", f"Therefore, the final answer is: {a + 11}."]
        rows += rows_for(hard, [(right, True)] * 2 + [(short, False)] * 6)
    return rows


def test_the_within_fit_ranks_paths_of_one_problem(bench):
    rows = data()
    across = bench.fit(rows, l2=1.0)
    within = bench.fit(rows, l2=1.0, within=True)
    # across problems, more equations means a harder problem, so a worse one; within a problem, the right path
    assert across["true_equations"] < 0 < within["true_equations"]
    scores = {w: [bench.logistic(bench.path_features(q, s), weights) for q, s, _, _ in rows]
              for w, weights in (("across", across), ("within", within))}
    last = lambda w: [(q, score, c) for (q, _, c, _), score in zip(rows, scores[w])]
    assert bench.within_auroc(last("within")) == 1.0  # every problem: its right paths above its wrong ones
    assert bench.within_auroc(last("across")) < 1.0


def test_within_auroc_leaves_out_problems_that_all_agree(bench):
    last = [("q1", 0.9, True), ("q1", 0.2, False), ("q1", 0.5, True),  # 1.0
            ("q2", 0.1, True), ("q2", 0.3, False),  # 0.0
            ("q3", 0.7, True), ("q3", 0.1, True)]  # all right: no ranking to judge
    assert bench.within_auroc(last) == pytest.approx(0.5)
