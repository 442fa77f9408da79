"""ETS (``softmax_costmodel``): an integer program picks which candidates to keep,
trading expected outcome against KV-cache cost and rewarding semantic diversity;
the kept ones share the width by softmax allocation (SPEC section 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ets.selection.common import SelectionParams, softmax_allocation, softmax_walk
from ets.tree import Tree

# Embeddings closer than this cosine distance (average linkage) are one cluster.
CLUSTER_DISTANCE = 0.05
# The reference's guard for lambdac == 0: a tiny *positive* weight on the cost terms.
ZERO_LAMBDAC_WEIGHT = 1e-4


@dataclass
class KeepProblem:
    """The ETS integer program in solver-neutral form.

    Variables, all binary, in this order: ``x_i`` keep candidate ``i`` (N),
    ``y_j`` ancestor ``j`` still needed (M), ``z_k`` cluster ``k`` covered (K).
    Maximise ``objective @ v`` subject to ``lower <= rows @ v <= upper``.
    """

    num_candidates: int
    objective: np.ndarray
    rows: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def newest_steps(tree: Tree, candidates: list[int]) -> list[str]:
    return [tree[c].step for c in candidates]


def cluster_labels(embeddings: np.ndarray) -> np.ndarray:
    """Average-linkage clusters on cosine distance, cut at CLUSTER_DISTANCE (0-based labels)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    links = linkage(np.asarray(embeddings, dtype=np.float64), method="average", metric="cosine")
    return fcluster(links, CLUSTER_DISTANCE, criterion="distance") - 1


def build_problem(tree: Tree, candidates: list[int], width: int, params: SelectionParams, embedder=None) -> KeepProblem:
    n = len(candidates)
    # ancestors in first-seen order, each with the candidates below it
    below: dict[int, list[int]] = {}
    for i, c in enumerate(candidates):
        for a in tree.ancestors(c):
            below.setdefault(a, []).append(i)
    m = len(below)
    cost = 1.0 / (m + n)
    weight_c = ZERO_LAMBDAC_WEIGHT if params.lambdac == 0 else -params.lambdac

    # outcome: each candidate's share of a softmax allocation over all candidates
    order, counts = softmax_allocation([tree[c].score for c in candidates], width, params.softmax_temperature)
    shares = np.zeros(n)
    shares[order] = counts
    outcome = shares / shares.sum()

    steps = newest_steps(tree, candidates)
    labels = None
    if params.lambdas > 0 and n > 1 and len(set(steps)) > 1:
        if embedder is None:
            raise ValueError("lambdas > 0 needs an embedder for the ETS diversity term (or set lambdas: 0)")
        labels = cluster_labels(np.asarray(embedder.encode(steps)))
    k = int(labels.max()) + 1 if labels is not None else 0

    objective = np.concatenate([
        outcome + weight_c * cost,
        np.full(m, weight_c * cost),
        np.full(k, params.lambdas / k) if k else np.zeros(0),
    ])
    rows, lower, upper = [], [], []

    def row(entries: dict[int, float], lo: float, hi: float) -> None:
        r = np.zeros(n + m + k)
        for index, value in entries.items():
            r[index] += value
        rows.append(r)
        lower.append(lo)
        upper.append(hi)

    for j, kids in enumerate(below.values()):
        y = n + j
        row({y: 1.0, **{i: -1.0 for i in kids}}, -np.inf, 0.0)  # y_j <= sum of x below it
        for i in kids:
            row({y: 1.0, i: -1.0}, 0.0, np.inf)  # y_j >= x_i
    for cluster in range(k):
        members = np.flatnonzero(labels == cluster)
        row({n + m + cluster: 1.0, **{int(i): -1.0 for i in members}}, -np.inf, 0.0)  # z_k <= sum of x in k
    row({i: 1.0 for i in range(n)}, 1.0, np.inf)  # keep at least one candidate
    return KeepProblem(n, objective, np.array(rows), np.array(lower), np.array(upper))


def solve_highs(problem: KeepProblem) -> np.ndarray:
    from scipy.optimize import Bounds, LinearConstraint, milp

    size = len(problem.objective)
    result = milp(
        -problem.objective,
        constraints=LinearConstraint(problem.rows, problem.lower, problem.upper),
        integrality=np.ones(size),
        bounds=Bounds(0, 1),
        # an exact optimum: the default relative gap (1e-4) may stop short of it
        options={"mip_rel_gap": 0.0},
    )
    if result.x is None:
        raise RuntimeError(f"ETS integer program not solved by HiGHS: {result.message}")
    return np.round(result.x[: problem.num_candidates]).astype(bool)


def solve_cbc(problem: KeepProblem) -> np.ndarray:
    """The reference's way: PuLP with a CBC solver process."""
    try:
        import pulp
    except ImportError:
        raise RuntimeError("ilp_solver: cbc needs PuLP: pip install 'ets[cbc]'") from None
    lp = pulp.LpProblem("ets_keep", pulp.LpMaximize)
    v = [pulp.LpVariable(f"v{i}", cat="Binary") for i in range(len(problem.objective))]
    lp += pulp.lpSum(float(c) * var for c, var in zip(problem.objective, v) if c != 0)
    for r, lo, hi in zip(problem.rows, problem.lower, problem.upper):
        expr = pulp.lpSum(float(c) * v[i] for i, c in enumerate(r) if c != 0)
        if lo > -np.inf:
            lp += expr >= float(lo)
        if hi < np.inf:
            lp += expr <= float(hi)
    lp.solve(pulp.PULP_CBC_CMD(msg=0))
    return np.array([round(var.value() or 0) == 1 for var in v[: problem.num_candidates]])


SOLVERS = {"highs": solve_highs, "cbc": solve_cbc}


def allocate(tree: Tree, candidates: list[int], width: int, params: SelectionParams, embedder=None) -> dict[int, int]:
    problem = build_problem(tree, candidates, width, params, embedder)
    keep = SOLVERS[params.ilp_solver](problem)
    weights = [tree[c].score / params.softmax_temperature if kept else -math.inf for c, kept in zip(candidates, keep)]
    order, counts = softmax_walk(weights, width)
    return {candidates[i]: n for i, n in zip(order, counts)}
