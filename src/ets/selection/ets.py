"""ETS (``softmax_costmodel``): an integer program picks which candidates to keep,
trading expected outcome against KV-cache cost and rewarding semantic diversity;
the kept ones share the width by softmax allocation (docs/algorithm.md#the-ets-program).

The program, with ``x_i`` keep candidate ``i``, ``y_j`` ancestor ``j`` still
needed and ``z_k`` cluster ``k`` covered::

    max  sum_i O_i x_i + c (sum_j y_j + sum_i x_i) + b sum_k z_k
    s.t. y_j <= sum_{i below j} x_i,  y_j >= x_i (i below j),  z_k <= sum_{i in k} x_i,  sum_i x_i >= 1

with ``c = -lambdac / (M + N)`` and ``b = lambdas / K``. The constraints make
``y_j`` = "some candidate below j is kept", so the program is a choice of a
subtree: solved exactly by dynamic programming over the tree, with a branch
and bound over the clusters that hold several candidates (``ilp_solver:
highs``, the default; HiGHS takes over if the branching grows large). The
same program goes to HiGHS as a MILP (``highs-milp``) or, as the reference
does, to CBC through PuLP (``cbc``).
"""

from __future__ import annotations

import math
from typing import Any
from dataclasses import dataclass

import numpy as np

from ets.selection.common import SelectionParams, softmax_allocation, softmax_walk
from ets.tree import Tree

# Embeddings closer than this cosine distance (average linkage) are one cluster.
CLUSTER_DISTANCE = 0.05
# The reference's guard for lambdac == 0: a tiny *positive* weight on the cost terms.
ZERO_LAMBDAC_WEIGHT = 1e-4
# Values this close to zero are ties (sums of shares like 2/8 and costs like 1/8 can cancel exactly).
TIE_TOLERANCE = 1e-12
# Dynamic programs the branch and bound may run before handing the program to HiGHS
# (each costs ~50 us on a width-16 tree; past this, the MILP is the quicker road).
BRANCH_BUDGET = 24


@dataclass
class KeepProblem:
    """The ETS keep-program of one selection call."""

    outcome: np.ndarray  # O_i, the candidates' softmax shares of the width
    node_weight: float  # c: the weight of keeping any node (a candidate or an ancestor)
    cluster_weight: float  # b: the bonus of covering a cluster (0 without the diversity term)
    labels: np.ndarray | None  # cluster of each candidate, or None
    children: dict[int, list]  # ancestor tree id -> children: ancestor ids or ("c", index) for candidates
    bottom_up: list[int]  # ancestors, deepest first
    root: int | None  # None: the candidates have no ancestor (they are the root)

    @property
    def num_candidates(self) -> int:
        return len(self.outcome)

    @property
    def num_clusters(self) -> int:
        return int(self.labels.max()) + 1 if self.labels is not None else 0

    def below(self) -> dict[int, list[int]]:
        """The candidates below each ancestor."""
        out: dict[int, list[int]] = {}
        for ancestor in self.bottom_up:
            out[ancestor] = [i for child in self.children[ancestor]
                             for i in ([child[1]] if isinstance(child, tuple) else out[child])]
        return out

    def value(self, keep: np.ndarray, below: dict[int, list[int]]) -> float:
        """The objective of a keep-vector."""
        used = sum(1 for members in below.values() if keep[members].any())
        covered = len(set(self.labels[keep].tolist())) if self.labels is not None else 0
        return float(self.outcome[keep].sum() + self.node_weight * (int(keep.sum()) + used) + self.cluster_weight * covered)


def newest_steps(tree: Tree, candidates: list[int]) -> list[str]:
    return [tree[c].step for c in candidates]


def cluster_labels(embeddings: np.ndarray) -> np.ndarray:
    """Average-linkage clusters on cosine distance, cut at CLUSTER_DISTANCE (0-based labels)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    links = linkage(np.asarray(embeddings, dtype=np.float64), method="average", metric="cosine")
    return fcluster(links, CLUSTER_DISTANCE, criterion="distance") - 1


def build_problem(tree: Tree, candidates: list[int], width: int, params: SelectionParams, embedder=None) -> KeepProblem:
    n = len(candidates)
    children: dict[int, list] = {}  # ancestors in first-seen order, as the reference numbers them
    for i, c in enumerate(candidates):
        child: object = ("c", i)
        for a in tree.ancestors(c):
            first_visit = a not in children
            children.setdefault(a, []).append(child)
            if not first_visit:
                break  # the rest of the path is already linked
            child = a
    m = len(children)
    cost = 1.0 / (m + n)
    node_weight = (ZERO_LAMBDAC_WEIGHT if params.lambdac == 0 else -params.lambdac) * cost

    # outcome: each candidate's share of a softmax allocation over all candidates
    # the reference sorts these with sorted(..., reverse=True): equal scores keep their order
    order, counts = softmax_allocation([tree[c].score for c in candidates], width, params.softmax_temperature,
                                       later_first=False)
    shares = np.zeros(n)
    shares[order] = counts
    outcome = shares / shares.sum()

    steps = newest_steps(tree, candidates)
    labels = None
    if params.lambdas > 0 and n > 1 and len(set(steps)) > 1:
        if embedder is None:
            raise ValueError("lambdas > 0 needs an embedder for the ETS diversity term (or set lambdas: 0)")
        labels = cluster_labels(np.asarray(embedder.encode(steps)))
    cluster_weight = params.lambdas / (int(labels.max()) + 1) if labels is not None else 0.0
    if not children:  # the candidate is the root itself (depth 0): nothing to choose
        children = {None: [("c", i) for i in range(n)]}
    bottom_up = sorted(children, key=lambda a: -1 if a is None else tree[a].depth, reverse=True)
    return KeepProblem(outcome, node_weight, cluster_weight, labels, children, bottom_up, root=bottom_up[-1])


# --- exact solve by dynamic programming over the tree ---

def best_subtree(problem: KeepProblem, bonus: np.ndarray) -> tuple[float, np.ndarray]:
    """Max of ``sum_i (O_i + c + bonus_i) x_i + c * (ancestors used)`` over non-empty keep sets.

    An ancestor is used iff something below it is kept, so its best value is
    its own weight plus every child subtree worth keeping (or, if none is, the
    least bad one: a used ancestor keeps at least one candidate)."""
    leaf_value = problem.outcome + problem.node_weight + bonus
    value: dict[int, float] = {}
    take: dict[int, list] = {}

    def child_value(child) -> float:
        return leaf_value[child[1]] if isinstance(child, tuple) else value[child]

    for ancestor in problem.bottom_up:
        kids = problem.children[ancestor]
        # a subtree worth exactly nothing is kept: on such ties CBC and HiGHS keep it too
        worth = [k for k in kids if child_value(k) >= -TIE_TOLERANCE]
        if not worth:
            worth = [max(kids, key=child_value)]
        take[ancestor] = worth
        value[ancestor] = problem.node_weight + sum(child_value(k) for k in worth)
    keep = np.zeros(problem.num_candidates, dtype=bool)
    stack = [problem.root]
    while stack:
        for child in take[stack.pop()]:
            if isinstance(child, tuple):
                keep[child[1]] = True
            else:
                stack.append(child)
    return value[problem.root], keep


def solve_tree(problem: KeepProblem) -> np.ndarray | None:
    """The exact optimum, or None if the branching exceeds BRANCH_BUDGET.

    A cluster's bonus ``b * [some member kept]`` equals ``max_j b * x_j`` over its
    members, so the optimum is the best, over every choice of one "designated"
    member per cluster, of a tree program. Best-first branch and bound:
    undecided clusters give the bonus to every member (an upper bound; where
    that keeps several members of a cluster, counting its bonus once whatever
    is kept bounds it too, and the lower of the two bounds is used); a solution
    keeping at most one member of each undecided cluster is exact; otherwise
    branch on the designated member of a cluster with several kept."""
    import heapq

    n = problem.num_candidates
    if problem.labels is None:
        return best_subtree(problem, np.zeros(n))[1]
    groups = [np.flatnonzero(problem.labels == k) for k in range(problem.num_clusters)]
    below = problem.below()
    best_value, best_keep = -math.inf, None
    frontier: list = []
    budget = BRANCH_BUDGET

    def visit(designated: dict[int, int]) -> None:
        nonlocal best_value, best_keep, budget
        budget -= 1
        bonus = np.zeros(n)
        for k, members in enumerate(groups):
            bonus[[designated[k]] if k in designated else members] += problem.cluster_weight
        bound, keep = best_subtree(problem, bonus)
        crowded = [k for k, members in enumerate(groups) if k not in designated and keep[members].sum() > 1]
        candidates = [keep]
        if crowded:
            # a second bound: a crowded cluster's bonus counted once, whatever is kept (b >= b * [covered])
            for k in crowded:
                bonus[groups[k]] -= problem.cluster_weight
            value, flat_keep = best_subtree(problem, bonus)
            bound = min(bound, value + problem.cluster_weight * len(crowded))
            candidates.append(flat_keep)
        for option in candidates:
            actual = problem.value(option, below)
            if actual > best_value:
                best_value, best_keep = actual, option
        if crowded and bound > best_value:
            heapq.heappush(frontier, (-bound, budget, designated, crowded[0], keep))

    visit({})
    while frontier:
        negative_bound, _, designated, crowded, keep = heapq.heappop(frontier)
        if -negative_bound <= best_value:
            break  # no open branch can beat the incumbent
        if budget <= 0:
            return None
        # the kept members first: they are where the optimum most likely is
        for j in sorted(groups[crowded], key=lambda j: not keep[j]):
            visit({**designated, crowded: int(j)})
    return best_keep


# --- the same program as a MILP, for HiGHS and CBC ---

@dataclass
class Milp:
    """Variables, all binary: x (N), y (M), z (K). Maximise ``objective @ v``
    subject to ``lower <= rows @ v <= upper`` (``rows`` sparse, by row)."""

    num_candidates: int
    objective: np.ndarray
    rows: Any  # scipy.sparse.csr_matrix
    lower: np.ndarray
    upper: np.ndarray


def to_milp(problem: KeepProblem) -> Milp:
    from scipy.sparse import csr_matrix

    n, m, k = problem.num_candidates, len(problem.children), problem.num_clusters
    y_of = {a: n + j for j, a in enumerate(problem.children)}
    objective = np.concatenate([
        problem.outcome + problem.node_weight, np.full(m, problem.node_weight), np.full(k, problem.cluster_weight)])
    row_ids, col_ids, values, lower, upper = [], [], [], [], []

    def row(entries: dict[int, float], lo: float, hi: float) -> None:
        for column, value in entries.items():
            row_ids.append(len(lower))
            col_ids.append(column)
            values.append(value)
        lower.append(lo)
        upper.append(hi)

    for ancestor, below in problem.below().items():
        y = y_of[ancestor]
        row({y: 1.0, **{i: -1.0 for i in below}}, -np.inf, 0.0)  # y_j <= sum of x below it
        for i in below:
            row({y: 1.0, i: -1.0}, 0.0, np.inf)  # y_j >= x_i
    for cluster in range(k):
        members = np.flatnonzero(problem.labels == cluster)
        row({n + m + cluster: 1.0, **{int(i): -1.0 for i in members}}, -np.inf, 0.0)  # z_k <= sum of x in k
    row({i: 1.0 for i in range(n)}, 1.0, np.inf)  # keep at least one candidate
    rows = csr_matrix((values, (row_ids, col_ids)), shape=(len(lower), n + m + k))
    return Milp(n, objective, rows, np.array(lower), np.array(upper))


_HIGHS_GREETED = False


def new_highs():
    """A HiGHS instance. The library prints a banner on stdout when the first one is made in a
    process; that one is made with stdout pointed away, so runs and benches print only their own."""
    import highspy

    global _HIGHS_GREETED
    if _HIGHS_GREETED:
        return highspy.Highs()
    import os
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            solver = highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    _HIGHS_GREETED = True
    return solver


def solve_highs_milp(problem: KeepProblem) -> np.ndarray:
    """HiGHS in-process, one thread (its thread pool costs more than these small programs)."""
    import highspy

    problem = to_milp(problem)

    size = len(problem.objective)
    columns = problem.rows.tocsc()
    lp = highspy.HighsLp()
    lp.num_col_ = size
    lp.num_row_ = columns.shape[0]
    lp.col_cost_ = -problem.objective  # HiGHS minimises
    lp.col_lower_ = np.zeros(size)
    lp.col_upper_ = np.ones(size)
    lp.row_lower_ = np.where(np.isinf(problem.lower), -highspy.kHighsInf, problem.lower)
    lp.row_upper_ = np.where(np.isinf(problem.upper), highspy.kHighsInf, problem.upper)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = columns.indptr
    lp.a_matrix_.index_ = columns.indices
    lp.a_matrix_.value_ = columns.data
    lp.integrality_ = [highspy.HighsVarType.kInteger] * size
    solver = new_highs()
    solver.setOptionValue("output_flag", False)
    solver.setOptionValue("threads", 1)
    # an exact optimum: the default gaps (1e-4 relative, 1e-6 absolute) may stop short of it
    solver.setOptionValue("mip_rel_gap", 0.0)
    solver.setOptionValue("mip_abs_gap", 0.0)
    solver.passModel(lp)
    solver.run()
    if solver.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"ETS integer program not solved by HiGHS: {solver.modelStatusToString(solver.getModelStatus())}")
    return np.round(np.asarray(solver.getSolution().col_value[: problem.num_candidates])) == 1


def solve_cbc(problem: KeepProblem) -> np.ndarray:
    """The reference's way: PuLP with a CBC solver process."""
    problem = to_milp(problem)
    try:
        import pulp
    except ImportError:
        raise RuntimeError("ilp_solver: cbc needs PuLP: pip install 'ets[cbc]'") from None
    lp = pulp.LpProblem("ets_keep", pulp.LpMaximize)
    v = [pulp.LpVariable(f"v{i}", cat="Binary") for i in range(len(problem.objective))]
    lp += pulp.lpSum(float(c) * var for c, var in zip(problem.objective, v) if c != 0)
    rows = problem.rows
    for r, (lo, hi) in enumerate(zip(problem.lower, problem.upper)):
        span = slice(rows.indptr[r], rows.indptr[r + 1])
        expr = pulp.lpSum(float(c) * v[i] for i, c in zip(rows.indices[span], rows.data[span]))
        if lo > -np.inf:
            lp += expr >= float(lo)
        if hi < np.inf:
            lp += expr <= float(hi)
    status = lp.solve(pulp.PULP_CBC_CMD(msg=0))
    if pulp.LpStatus[status] != "Optimal":
        raise RuntimeError(f"ETS integer program not solved by CBC: {pulp.LpStatus[status]}")
    return np.array([round(var.value() or 0) == 1 for var in v[: problem.num_candidates]])


def solve_highs(problem: KeepProblem) -> np.ndarray:
    keep = solve_tree(problem)
    return keep if keep is not None else solve_highs_milp(problem)


SOLVERS = {"highs": solve_highs, "highs-milp": solve_highs_milp, "cbc": solve_cbc}


def allocate(tree: Tree, candidates: list[int], width: int, params: SelectionParams, embedder=None) -> dict[int, int]:
    problem = build_problem(tree, candidates, width, params, embedder)
    keep = SOLVERS[params.ilp_solver](problem)
    weights = [tree[c].score / params.softmax_temperature if kept else -math.inf for c, kept in zip(candidates, keep)]
    order, counts = softmax_walk(weights, width)
    return {candidates[i]: n for i, n in zip(order, counts)}
