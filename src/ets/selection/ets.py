"""ETS (``softmax_costmodel``): an integer program picks which candidates to keep,
trading expected outcome against KV-cache cost and rewarding semantic diversity;
the kept ones share the width by softmax allocation (docs/algorithm.md#the-ets-program).

The program, with ``x_i`` keep candidate ``i``, ``y_j`` ancestor ``j`` still
needed and ``z_k`` cluster ``k`` covered::

    max  sum_i O_i x_i + c (sum_j y_j + sum_i x_i) + b sum_k z_k
    s.t. y_j <= sum_{i below j} x_i,  y_j >= x_i (i below j),  z_k <= sum_{i in k} x_i,  sum_i x_i >= 1

with ``c = -lambdac / (M + N)`` and ``b = lambdas / K``. The constraints make
``y_j`` = "some candidate below j is kept", so the program is a choice of a
subtree plus a bonus per cluster covered. The default (``ilp_solver: highs``)
solves it exactly in-process (:mod:`ets.selection.keep_solver`: a dynamic
program over the tree, Lagrangian bounds for the clusters, a second dynamic
program over the clusters they leave open, pruned by those bounds; HiGHS past
a cap on its effort) and breaks ties between optimal keep-sets by a stated
rule (docs/ets-solver.md). The same program goes to HiGHS as a MILP
(``highs-milp``) or, as the reference does, to CBC through PuLP (``cbc``).
"""

from __future__ import annotations

import functools
import math
import os
import sys
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ets.selection.common import SelectionParams, softmax_allocation, softmax_walk
from ets.selection.keep_solver import KeepSolver, OverBudget, TreeShape, best_subtree
from ets.tree import Tree

# Embeddings closer than this cosine distance (average linkage) are one cluster.
CLUSTER_DISTANCE = 0.05
# The reference's guard for lambdac == 0: a tiny *positive* weight on the cost terms.
ZERO_LAMBDAC_WEIGHT = 1e-4


@dataclass
class KeepProblem:
    """The ETS keep-program of one selection call. Nodes ``0..N-1`` are the candidates,
    ``N..N+M-1`` their ancestors (in the order the reference numbers them), ``N+M`` stands
    above the root."""

    outcome: np.ndarray  # O_i, the candidates' softmax shares of the remaining width
    node_weight: float  # c: the weight of keeping any node (a candidate or an ancestor)
    cluster_weight: float  # b: the bonus of covering a cluster (0 without the diversity term)
    labels: np.ndarray | None  # cluster of each candidate, or None
    parent: np.ndarray  # each node's parent
    depth: np.ndarray  # each node's depth in the tree
    rank: np.ndarray  # each candidate's place in the tie rule's order (PRM score, then candidate order)

    @property
    def num_candidates(self) -> int:
        return len(self.outcome)

    @property
    def num_ancestors(self) -> int:
        return len(self.parent) - self.num_candidates

    @property
    def num_clusters(self) -> int:
        return int(self.labels.max()) + 1 if self.labels is not None else 0

    @cached_property
    def shape(self) -> TreeShape:
        return TreeShape.build(self.parent, self.depth, self.num_candidates, self.node_weight, self.rank)

    def ancestors_below(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (ancestor, candidate below it) pair, as two index arrays (ancestors 0-based)."""
        n, top = self.num_candidates, len(self.parent)
        above = self.shape.path[:n, 1:]
        pairs = above < top
        return above[pairs] - n, np.nonzero(pairs)[0]

    def value(self, keep: np.ndarray) -> float:
        """The program's objective at a keep-vector (y and z as the constraints force them)."""
        used = self.shape.ancestors_used(keep)
        covered = len(np.unique(self.labels[keep])) if self.labels is not None else 0
        return float(self.outcome[keep].sum() + self.node_weight * (int(keep.sum()) + used) + self.cluster_weight * covered)


def newest_steps(tree: Tree, candidates: list[int]) -> list[str]:
    return [tree[c].step for c in candidates]


def cluster_labels(embeddings: np.ndarray) -> np.ndarray:
    """Average-linkage clusters on cosine distance, cut at CLUSTER_DISTANCE (0-based labels).

    The distances are scipy's, as its linkage computes them. Two candidates end in one
    cluster only if a chain of pairs within the cut joins them, so the linkage runs within
    each such group alone, and not at all in a group whose pairs are all within the cut
    (one cluster, whatever the merge order)."""
    # scipy's clustering loads only when the diversity term is on (lambdas > 0)
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    n = len(embeddings)
    distance = pdist(np.asarray(embeddings, dtype=np.float64), "cosine")
    close = np.flatnonzero(distance <= CLUSTER_DISTANCE)
    if not len(close):
        return np.arange(n)
    first, second = condensed_pairs(n)
    first, second = first[close], second[close]
    groups = joined(n, first, second)
    sizes = np.bincount(groups)
    close_pairs = np.bincount(groups[first], minlength=len(sizes))
    labels = groups.copy()
    for group in np.flatnonzero(close_pairs < sizes * (sizes - 1) // 2):  # some pair of the group is beyond the cut
        members = np.flatnonzero(groups == group)
        a, b = np.triu_indices(len(members), 1)
        a, b = members[a], members[b]
        split = fcluster(linkage(distance[n * a - a * (a + 1) // 2 + b - a - 1], method="average"),
                         CLUSTER_DISTANCE, criterion="distance")
        labels[members[split > 1]] = len(sizes) + split[split > 1] - 2
        sizes = np.append(sizes, np.zeros(int(split.max()) - 1, dtype=sizes.dtype))
    return labels


@functools.lru_cache(maxsize=8)
def condensed_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The (i, j) of each entry of a condensed distance matrix of n points."""
    return np.triu_indices(n, 1)


def joined(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Connected groups of n points joined by the pairs (first, second), numbered 0.. in order of
    their first point: each point takes the lowest number among its partners until none changes."""
    group = np.arange(n)
    while True:
        low = np.minimum(group[first], group[second])
        lowered = group.copy()
        np.minimum.at(lowered, first, low)
        np.minimum.at(lowered, second, low)
        lowered = lowered[lowered]
        if (lowered == group).all():
            return np.unique(group, return_inverse=True)[1]
        group = lowered


def build_problem(tree: Tree, candidates: list[int], remaining: int, params: SelectionParams, embedder=None) -> KeepProblem:
    n = len(candidates)
    nodes = tree.nodes
    index: dict[int, int] = {}  # ancestor tree id -> node number, in first-seen order as the reference numbers them
    for c in candidates:
        a = nodes[c].parent_id
        while a is not None and a not in index:
            index[a] = n + len(index)
            a = nodes[a].parent_id
    top = n + len(index)
    parent = np.array([index.get(nodes[t].parent_id, top) for t in [*candidates, *index]], dtype=np.int64)
    depth = np.array([nodes[t].depth for t in [*candidates, *index]], dtype=np.int64)
    cost = 1.0 / top
    node_weight = (ZERO_LAMBDAC_WEIGHT if params.lambdac == 0 else -params.lambdac) * cost

    # outcome: each candidate's share of a softmax allocation over all candidates
    # the reference sorts these with sorted(..., reverse=True): equal scores keep their order
    scores = [nodes[c].score for c in candidates]
    order, counts = softmax_allocation(scores, remaining, params.softmax_temperature, later_first=False)
    shares = np.zeros(n)
    shares[order] = counts
    outcome = shares / shares.sum()
    rank = np.empty(n, dtype=np.int64)
    rank[np.lexsort((np.arange(n), -np.asarray(scores)))] = np.arange(n)

    labels = None
    if params.lambdas > 0 and n > 1:
        steps = newest_steps(tree, candidates)
        if len(set(steps)) > 1:
            if embedder is None:
                raise ValueError("lambdas > 0 needs an embedder for the ETS diversity term (or set lambdas: 0)")
            labels = cluster_labels(np.asarray(embedder.encode(steps)))
    cluster_weight = params.lambdas / (int(labels.max()) + 1) if labels is not None else 0.0
    return KeepProblem(outcome, node_weight, cluster_weight, labels, parent, depth, rank)


# --- the default (``ilp_solver: highs``): exact, in-process ---

def solve_by_dynamic_program(problem: KeepProblem) -> np.ndarray:
    """The keep-set by the dynamic programs of :mod:`ets.selection.keep_solver`; HiGHS as a MILP
    only where the clusters contested grow past that module's limits. The MILP starts cold: a
    start from the best keep-set found made HiGHS no faster (it spends its time proving)."""
    base = problem.outcome + problem.node_weight
    if problem.labels is None:
        return best_subtree(problem.shape, base).keep
    try:
        return KeepSolver(problem.shape, base, problem.labels, problem.cluster_weight).solve()
    except OverBudget:
        return solve_highs_milp(problem)


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
    from scipy.sparse import csr_matrix  # loaded only by the MILP solvers, not by the default

    n, m, k = problem.num_candidates, problem.num_ancestors, problem.num_clusters
    objective = np.concatenate([
        problem.outcome + problem.node_weight, np.full(m, problem.node_weight), np.full(k, problem.cluster_weight)])
    ancestor, below = problem.ancestors_below()
    pairs = len(ancestor)
    labels = problem.labels if problem.labels is not None else np.zeros(0, dtype=np.int64)
    # rows: y_j <= sum of x below it (m), y_j >= x_i for each pair, z_k <= sum of x in k (k), sum x >= 1
    pair_rows = m + np.arange(pairs)
    cluster_rows = m + pairs + np.arange(k)
    last = m + pairs + k
    row_ids = np.concatenate([np.arange(m), ancestor, pair_rows, pair_rows, cluster_rows, m + pairs + labels,
                              np.full(n, last)])
    col_ids = np.concatenate([n + np.arange(m), below, n + ancestor, below, n + m + np.arange(k), np.arange(len(labels)),
                              np.arange(n)])
    values = np.concatenate([np.ones(m), -np.ones(pairs), np.ones(pairs), -np.ones(pairs), np.ones(k),
                             -np.ones(len(labels)), np.ones(n)])
    lower = np.concatenate([np.full(m, -np.inf), np.zeros(pairs), np.full(k, -np.inf), [1.0]])
    upper = np.concatenate([np.zeros(m), np.full(pairs, np.inf), np.zeros(k), [np.inf]])
    rows = csr_matrix((values, (row_ids, col_ids)), shape=(last + 1, n + m + k))
    return Milp(n, objective, rows, lower, upper)


_HIGHS_GREETED = False


def new_highs():
    """A HiGHS instance. The library prints a banner on stdout when the first one is made in a
    process; that one is made with stdout pointed away, so runs and benches print only their own."""
    import highspy  # the fallback and highs-milp only: the default rarely needs it

    global _HIGHS_GREETED
    if _HIGHS_GREETED:
        return highspy.Highs()
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
    import highspy  # as in new_highs: loaded only when a MILP is solved

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


# ilp_solver -> solver; the default keeps the name users write ("highs"), though HiGHS is only its fallback
SOLVERS = {"highs": solve_by_dynamic_program, "highs-milp": solve_highs_milp, "cbc": solve_cbc}


def allocate(tree: Tree, candidates: list[int], remaining: int, params: SelectionParams, embedder=None) -> dict[int, int]:
    problem = build_problem(tree, candidates, remaining, params, embedder)
    keep = SOLVERS[params.ilp_solver](problem)
    weights = [tree[c].score / params.softmax_temperature if kept else -math.inf for c, kept in zip(candidates, keep)]
    order, counts = softmax_walk(weights, remaining)
    return {candidates[i]: n for i, n in zip(order, counts)}
