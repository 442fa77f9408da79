"""The default solver of the ETS keep-program: exact, and its tie rule (docs/ets-solver.md).

Its optimum is checked against CBC (the reference's solver) on search-shaped trees and the
golden cases, against every keep-set on small trees (where the tie rule is checked too), and
its parts (the clustering, the parameter check) against what they replace. Its effort: the
covering program's pruning drops no optimum, also where the Lagrangian bound does not close,
and past its cap the program goes to HiGHS with the same optimum."""

import json
from pathlib import Path

import numpy as np
import pytest

from ets import Tree
from ets.selection import allocate
from ets.selection.common import SelectionParams
from ets.selection.ets import build_problem, cluster_labels, solve_by_dynamic_program, solve_cbc, solve_highs_milp
from ets.selection import keep_solver
from ets.selection.keep_solver import DIRECT_COVER, KeepSolver

from data import search_trees  # tests/data, on sys.path through pyproject's pythonpath

DATA = Path(__file__).parent / "data"

DIVERSITY = SelectionParams(lambdac=1.0, lambdas=1.45)


def every_keep_set(problem):
    """All non-empty keep-sets (rows) and the program's value of each."""
    n = problem.num_candidates
    keep = ((np.arange(1, 2**n)[:, None] >> np.arange(n)) & 1).astype(bool)
    ancestor, below = problem.ancestors_below()
    under = np.zeros((n, problem.num_ancestors))
    under[below, ancestor] = 1
    value = keep @ problem.outcome + problem.node_weight * (keep.sum(1) + ((keep @ under) > 0).sum(1))
    if problem.labels is not None:
        member = np.zeros((n, problem.num_clusters))
        member[np.arange(n), problem.labels] = 1
        value += problem.cluster_weight * ((keep @ member) > 0).sum(1)
    return keep, value


def largest_optimum(problem):
    """The tie rule by enumeration: of the keep-sets of the highest value, the one that keeps
    the better-ranked candidate where two first differ."""
    keep, value = every_keep_set(problem)
    optima = keep[value >= value.max() - 1e-12]
    in_rank_order = optima[:, np.argsort(problem.rank)]
    return optima[np.lexsort(in_rank_order.T[::-1])[-1]], len(optima)


def small_tree(rng):
    """A random tree of depth 1-3, its deepest nodes the candidates; scores from a few values
    (equal scores and equal outcome shares make ties common)."""
    nodes = [{"id": 0, "parent_id": None, "text": "Q", "score": 1.0, "depth": 0, "num_step_tokens": 5}]
    frontier = [0]
    for depth in range(1, int(rng.integers(1, 4)) + 1):
        grown = []
        for parent in frontier:
            for _ in range(int(rng.integers(1, 4))):
                nodes.append({"id": len(nodes), "parent_id": parent, "text": f"{nodes[parent]['text']} s{len(nodes)}",
                              "score": float(rng.choice([0.2, 0.5, 0.5, 0.8, 0.9])), "depth": depth,
                              "num_step_tokens": 2})
                grown.append(len(nodes) - 1)
        frontier = grown
    return Tree.from_nodes(nodes), frontier


def keep_solver_of(problem):
    return KeepSolver(problem.shape, problem.outcome + problem.node_weight, problem.labels, problem.cluster_weight)


class GroupEmbedder:
    def __init__(self, vectors):
        self.vectors = vectors

    def encode(self, sentences):
        return np.array([self.vectors[s] for s in sentences])


@pytest.mark.parametrize("direct_cover", [keep_solver.DIRECT_COVER, 0])
def test_tie_rule_and_optimum_against_every_keep_set(direct_cover, monkeypatch):
    """On small trees the solver's keep-set is the tie rule's pick among all optimal keep-sets
    (enumerated), through each of its paths: the first relaxation, the covering program, and
    (with ``DIRECT_COVER`` 0, as when many clusters are offending) the multipliers first."""
    monkeypatch.setattr(keep_solver, "DIRECT_COVER", direct_cover)
    rng = np.random.default_rng(7)
    checked = tied = covering = designated = 0
    while checked < 300:
        tree, candidates = small_tree(rng)
        if not 2 <= len(candidates) <= 10:
            continue
        groups = int(rng.integers(1, len(candidates) + 1))
        vectors = {tree[c].step: np.eye(groups)[int(rng.integers(groups))] + 1e-4 * rng.random(groups) for c in candidates}
        params = SelectionParams(softmax_temperature=float(rng.choice([0.2, 0.5, 1.0])),
                                 lambdac=float(rng.choice([0.0, 0.5, 1.0, 2.0])),
                                 lambdas=float(rng.choice([0.0, 1.0, 1.45, 3.0])))
        remaining = int(rng.choice([len(candidates), 4, 8, 16, 64]))
        problem = build_problem(tree, candidates, remaining, params, GroupEmbedder(vectors))
        expected, optima = largest_optimum(problem)
        assert solve_by_dynamic_program(problem).tolist() == expected.tolist()
        if problem.labels is not None:
            solver = keep_solver_of(problem)
            first = solver.evaluate(np.zeros(solver.count), widest=True)
            assert solver.solve().tolist() == expected.tolist()
            covering += solver.contested > 0
            designated += solver.contested == 0 and not first.certified
        checked += 1
        tied += optima > 1
    # the rule and each way of solving were put to work
    assert tied >= 20 and covering >= 5 and (designated >= 10 if direct_cover == 0 else covering >= 20)


@pytest.mark.parametrize("width", [16, 64, 256])
def test_objective_equals_cbcs_on_search_trees(width):
    """Every selection call of scripted searches, both embedding regimes, diversity on: the
    default's objective is CBC's to 1e-9 (its keep-set may differ only where optima tie)."""
    calls = [call for regime in search_trees.REGIMES for call in search_trees.search_calls(width, regime)]
    covering = settling = 0
    for call in calls:
        problem = build_problem(call.tree, call.candidates, call.remaining, DIVERSITY, call.embedder)
        ours = solve_by_dynamic_program(problem)
        assert problem.value(ours) == pytest.approx(problem.value(solve_cbc(problem)), abs=1e-9)
        if problem.labels is not None and problem.num_clusters < problem.num_candidates:
            solver = keep_solver_of(problem)
            assert solver.solve().tolist() == ours.tolist()
            covering += solver.contested > 0
            settling += solver.evaluate(np.zeros(solver.count), widest=True).slack.sum() > DIRECT_COVER
    assert len(calls) >= 10
    if width > 16:
        assert covering and settling  # some calls needed the covering program, some the multipliers first


def test_objective_equals_cbcs_on_golden_cases():
    cases = [c for c in json.loads((DATA / "selection_public.json").read_text()) if c["method"] == "softmax_costmodel"]
    for case in cases:
        embedder = GroupEmbedder({k: np.array(v) for k, v in case["embeddings"].items()}) if case["embeddings"] else None
        problem = build_problem(Tree.from_nodes(case["nodes"]), case["candidates"], case["width"],
                                SelectionParams.from_mapping(case["params"]), embedder)
        assert problem.value(solve_by_dynamic_program(problem)) == pytest.approx(problem.value(solve_cbc(problem)), abs=1e-9)


def test_objective_equals_the_milps_on_larger_random_programs():
    """Trees of up to ~30 candidates with clusters of several members: the default's objective is HiGHS's."""
    rng = np.random.default_rng(11)
    for _ in range(40):
        tree, candidates = small_tree(rng)
        groups = int(rng.integers(1, max(2, len(candidates) // 3)))
        vectors = {tree[c].step: np.eye(groups)[int(rng.integers(groups))] + 1e-4 * rng.random(groups) for c in candidates}
        problem = build_problem(tree, candidates, int(rng.choice([8, 64, 256])),
                                SelectionParams(lambdac=float(rng.choice([0.5, 1.0, 2.0])), lambdas=1.45),
                                GroupEmbedder(vectors))
        assert problem.value(solve_by_dynamic_program(problem)) == pytest.approx(problem.value(solve_highs_milp(problem)), abs=1e-9)


def test_tie_between_two_equal_candidates_keeps_the_earlier():
    """Two candidates with equal scores under different parents, a cost that allows one: keeping
    either is optimal; the rule keeps the earlier candidate, and so it gets the whole width."""
    nodes = [{"id": 0, "parent_id": None, "text": "Q", "score": 1.0, "depth": 0, "num_step_tokens": 5},
             {"id": 1, "parent_id": 0, "text": "Q a", "score": 0.5, "depth": 1, "num_step_tokens": 2},
             {"id": 2, "parent_id": 0, "text": "Q b", "score": 0.5, "depth": 1, "num_step_tokens": 2},
             {"id": 3, "parent_id": 1, "text": "Q a c", "score": 0.7, "depth": 2, "num_step_tokens": 2},
             {"id": 4, "parent_id": 2, "text": "Q b d", "score": 0.7, "depth": 2, "num_step_tokens": 2}]
    tree = Tree.from_nodes(nodes)
    params = {"softmax_temperature": 1.0, "lambdac": 2.0, "lambdas": 0.0}
    problem = build_problem(tree, [3, 4], 2, SelectionParams.from_mapping(params), None)
    _, value = every_keep_set(problem)
    assert value[0] == pytest.approx(value[1]) and value[0] > value[2]  # {3} and {4} tie, both beat {3, 4}
    assert allocate("softmax_costmodel", tree, [3, 4], 2, params) == {3: 2, 4: 0}
    assert allocate("softmax_costmodel", tree, [4, 3], 2, params) == {4: 2, 3: 0}


def test_cluster_labels_are_scipys_partition():
    """The clustering (linkage only within groups joined by close pairs) gives the partition of
    scipy's average linkage on all embeddings, cut at the same distance."""
    from scipy.cluster.hierarchy import fcluster, linkage

    rng = np.random.default_rng(3)
    for trial in range(120):
        n, dim = int(rng.integers(2, 40)), int(rng.choice([3, 8, 32]))
        if trial % 3 == 0:
            vectors = rng.standard_normal((n, dim))
        elif trial % 3 == 1:  # blobs: groups of near-duplicates
            centres = rng.standard_normal((int(rng.integers(1, 6)), dim))
            vectors = centres[rng.integers(len(centres), size=n)] + rng.normal(0, 0.15, size=(n, dim))
        else:  # a chain: close neighbours, far ends, so the linkage must split groups
            along = np.linspace(0, 1, n)[:, None] * rng.uniform(0.2, 1.0)
            vectors = np.hstack([np.ones((n, 1)), along, 0.01 * rng.standard_normal((n, dim))])
        expected = fcluster(linkage(vectors, method="average", metric="cosine"), 0.05, criterion="distance")
        got = cluster_labels(vectors)
        assert len(set(zip(expected, got))) == len(set(expected)) == len(set(got))


def test_parameter_dicts_are_checked_once_and_still_refused():
    params = {"lambdac": 1.0, "lambdas": 1.45, "softmax_temperature": 0.2}
    assert SelectionParams.from_mapping(params) is SelectionParams.from_mapping(dict(params))
    assert SelectionParams.from_mapping({**params, "lambdac": 2.0}).lambdac == 2.0
    for _ in range(2):
        with pytest.raises(ValueError, match="unknown key 'lambdaz'"):
            SelectionParams.from_mapping({"lambdaz": 1.0})
    with pytest.raises(ValueError, match="lambdac"):
        SelectionParams.from_mapping({"lambdac": True})  # equal to 1 as a dict key, but not a number


def small_problems(rng, count):
    """Random small programs with clusters of several members (as in the tie-rule test)."""
    out = []
    while len(out) < count:
        tree, candidates = small_tree(rng)
        if not 3 <= len(candidates) <= 10:
            continue
        groups = int(rng.integers(1, max(2, len(candidates) // 2)))
        vectors = {tree[c].step: np.eye(groups)[int(rng.integers(groups))] + 1e-4 * rng.random(groups) for c in candidates}
        params = SelectionParams(softmax_temperature=float(rng.choice([0.2, 0.5, 1.0])),
                                 lambdac=float(rng.choice([0.5, 1.0, 2.0])), lambdas=float(rng.choice([1.0, 1.45, 3.0])))
        problem = build_problem(tree, candidates, int(rng.choice([4, 8, 16, 64])), params, GroupEmbedder(vectors))
        if problem.labels is not None and problem.num_clusters < problem.num_candidates:
            out.append(problem)
    return out


def test_optimum_where_the_bound_does_not_close(monkeypatch):
    """Where no multipliers close the Lagrangian bound (the settled bound stays above the optimum),
    the covering program still returns the tie rule's pick among the optima (enumerated): it
    prunes against a keep-set met on the way, not against the bound. DIRECT_COVER 0 sends every
    such call through the multipliers first, UNBOUNDED_COVER 0 has the covering program prune
    however few clusters are contested."""
    monkeypatch.setattr(keep_solver, "DIRECT_COVER", 0)
    monkeypatch.setattr(keep_solver, "UNBOUNDED_COVER", 0)
    rng = np.random.default_rng(5)
    gaps = 0
    for problem in small_problems(rng, 1000):
        expected, _ = largest_optimum(problem)
        solver = keep_solver_of(problem)
        first = solver.evaluate(np.zeros(solver.count), widest=True)
        if first.certified or solver.settle(first).bound <= problem.value(expected) + 1e-9:
            continue
        solver = keep_solver_of(problem)
        assert solver.solve().tolist() == expected.tolist()
        gaps += solver.contested > 0
    assert gaps >= 10


def test_covering_program_bound_drops_no_optimum(monkeypatch):
    """The covering program drops states that cannot reach its floor; with nothing dropped
    (PRUNE_MARGIN infinite) it gives the same keep-sets, ties included, on search-shaped calls
    (UNBOUNDED_COVER 0: pruning however few clusters are contested)."""
    monkeypatch.setattr(keep_solver, "UNBOUNDED_COVER", 0)
    calls = [call for regime in search_trees.REGIMES for call in search_trees.search_calls(64, regime)]
    compared = fewer = 0
    for call in calls:
        problem = build_problem(call.tree, call.candidates, call.remaining, DIVERSITY, call.embedder)
        if problem.labels is None:
            continue
        pruned = keep_solver_of(problem)
        keep = pruned.solve()
        if not pruned.contested:
            continue
        with monkeypatch.context() as patched:
            patched.setattr(keep_solver, "PRUNE_MARGIN", np.inf)
            full = keep_solver_of(problem)
            assert full.solve().tolist() == keep.tolist()
        compared += 1
        fewer += pruned.combinations < full.combinations
    assert compared >= 5 and fewer >= 1


def test_effort_cap_hands_the_program_to_highs(monkeypatch):
    """Past COMBINATIONS_PER_NODE the program goes to HiGHS (ets.solve_highs_milp) and the
    answer does not change: the same optimum, and where the optimum is unique (enumerated) the
    same keep-set; search-shaped calls keep their objective."""
    from ets.selection import ets as ets_module

    handed = []
    milp = ets_module.solve_highs_milp
    monkeypatch.setattr(ets_module, "solve_highs_milp", lambda problem: handed.append(1) or milp(problem))
    problems = small_problems(np.random.default_rng(9), 400)
    problems += [build_problem(call.tree, call.candidates, call.remaining, DIVERSITY, call.embedder)
                 for call in search_trees.search_calls(64, "clusters")]
    uncapped = [solve_by_dynamic_program(problem) for problem in problems]
    assert not handed
    monkeypatch.setattr(keep_solver, "COMBINATIONS_PER_NODE", 0)
    unique = searched = 0
    for problem, before in zip(problems, uncapped):
        calls_before = len(handed)
        keep = solve_by_dynamic_program(problem)
        assert problem.value(keep) == pytest.approx(problem.value(before), abs=1e-9)
        if problem.num_candidates > 10:
            searched += len(handed) > calls_before
        elif largest_optimum(problem)[1] == 1:
            assert keep.tolist() == before.tolist()
            unique += len(handed) > calls_before
    assert len(handed) >= 20 and unique >= 10 and searched >= 2
