"""Selection methods with no golden case (dvts, best_of_n) and edge cases of the others."""

import math

import pytest

from ets import Tree
from ets.selection import allocate
from ets.selection.common import softmax_walk


def build(depth_scores):
    """A tree from {parent_id: [child scores]} given in creation order; the root is 0."""
    nodes = [{"id": 0, "parent_id": None, "text": "Q", "score": 1.0, "depth": 0, "num_step_tokens": 5}]
    for parent, scores in depth_scores:
        for s in scores:
            node_id = len(nodes)
            nodes.append({"id": node_id, "parent_id": parent, "text": f"{nodes[parent]['text']} s{node_id}",
                          "score": s, "depth": nodes[parent]["depth"] + 1, "num_step_tokens": 2})
    return Tree.from_nodes(nodes)


def test_softmax_walk_shares_sum_to_width_and_favour_the_best():
    order, counts = softmax_walk([0.9 / 0.2, 0.5 / 0.2, 0.1 / 0.2], 10)
    assert order == [0, 1, 2]
    # w = e^4.5, e^2.5, e^0.5: 10*0.8668 -> 9, then 1*0.881 -> 1, then 0
    assert counts == [9, 1, 0]


def test_softmax_ties_break_as_the_reference_sorts():
    """sorted() then reverse(): among equal scores the later candidate comes first."""
    tree = build([(0, [0.5, 0.5, 0.5])])
    alloc = allocate("softmax", tree, [1, 2, 3], 4, {"softmax_temperature": 1.0})
    assert list(alloc) == [3, 2, 1]
    assert list(alloc.values()) == [2, 1, 1]


def test_dropped_candidates_get_nothing():
    order, counts = softmax_walk([1.0, -math.inf, 2.0], 5)
    assert order == [2, 0, 1] and counts == [4, 1, 0]


def test_beam_search_root_gets_the_whole_width_then_top_beams_share():
    tree = build([(0, [0.1, 0.9, 0.5, 0.7])])
    assert allocate("beam_search", tree, [0], 9, {}) == {0: 9}
    alloc = allocate("beam_search", tree, [1, 2, 3, 4], 9, {"fixedwidth": -1})
    assert alloc == {2: 3, 4: 3, 3: 3, 1: 0}  # ceil(sqrt 9) = 3 beams of ceil(9/3)
    assert allocate("beam_search", tree, [1, 2, 3, 4], 9, {"fixedwidth": 2}) == {2: 5, 4: 5, 3: 0, 1: 0}


def test_best_of_n_expands_root_to_width_then_one_child_each():
    tree = build([(0, [0.1, 0.9, 0.5])])
    assert allocate("best_of_n", tree, [0], 3, {}) == {0: 3}
    assert allocate("best_of_n", tree, [1, 2, 3], 3, {}) == {1: 1, 2: 1, 3: 1}


def test_dvts_groups_depth_one_and_keeps_each_groups_best():
    # width 9 -> 3 subtrees of width 3; nine depth-1 candidates in three contiguous groups
    scores = [0.1, 0.8, 0.3, 0.9, 0.2, 0.4, 0.5, 0.5, 0.6]
    tree = build([(0, scores)])
    params = {"width": 9}
    assert allocate("dvts", tree, [0], 9, params) == {0: 9}
    alloc = allocate("dvts", tree, list(range(1, 10)), 9, params)
    assert {k: v for k, v in alloc.items() if v} == {2: 3, 4: 3, 9: 3}


def test_dvts_deeper_keeps_best_child_per_parent_with_subtree_width_left():
    scores = [0.1, 0.8, 0.3, 0.9]  # width 4 -> 2 subtrees of 2: groups [1,2] and [3,4]
    tree = build([(0, scores), (2, [0.3, 0.7]), (4, [0.6, 0.2])])
    params = {"width": 4}
    alloc = allocate("dvts", tree, [5, 6, 7, 8], 4, params)
    assert alloc == {5: 0, 6: 2, 7: 2, 8: 0}


def test_dvts_retired_node_shrinks_its_subtree_only():
    scores = [0.1, 0.8, 0.3, 0.9]
    nodes_tree = build([(0, scores), (2, [0.3, 0.7]), (4, [0.6, 0.2])])
    rows = nodes_tree.to_dicts()
    rows[5]["leaf"] = True  # node 5 (subtree 0, child of 2) finished
    tree = Tree.from_nodes(rows)
    alloc = allocate("dvts", tree, [6, 7, 8], 3, {"width": 4})
    assert alloc == {6: 1, 7: 2, 8: 0}


def test_dvts_ended_trajectory_shrinks_its_subtree_with_retire_empty_steps():
    rows = build([(0, [0.1, 0.8, 0.3, 0.9]), (2, [0.3, 0.7]), (4, [0.6, 0.2])]).to_dicts()
    rows[5].update(text=rows[2]["text"], step="")  # node 5 (subtree 0, child of 2) ended its turn
    tree = Tree.from_nodes(rows)
    # retired, it leaves subtree 0 one unit of width (node 6) and subtree 1 its two (node 7)
    assert allocate("dvts", tree, [6, 7, 8], 3, {"width": 4, "retire_empty_steps": True}) == {6: 1, 7: 2, 8: 0}
    # not retired, it is still a candidate of subtree 0
    assert allocate("dvts", tree, [5, 6, 7, 8], 4, {"width": 4}) == {5: 0, 6: 2, 7: 2, 8: 0}


def test_dvts_cycles_when_fewer_candidates_than_subtrees():
    tree = build([(0, [0.4, 0.6])])
    alloc = allocate("dvts", tree, [1, 2], 9, {"width": 9})  # 3 subtrees, groups [1], [2], [1]
    assert alloc == {1: 6, 2: 3}


def test_ets_keeps_fewer_branches_when_cost_weighs_more():
    # two branches: a strong one with 3 children and a weak one with 3
    tree = build([(0, [0.5, 0.5]), (1, [0.9, 0.85, 0.8]), (2, [0.3, 0.25, 0.2])])
    cheap = allocate("softmax_costmodel", tree, [3, 4, 5, 6, 7, 8], 6,
                     {"softmax_temperature": 0.2, "lambdac": 0.0, "lambdas": 0.0})
    costly = allocate("softmax_costmodel", tree, [3, 4, 5, 6, 7, 8], 6,
                      {"softmax_temperature": 0.2, "lambdac": 5.0, "lambdas": 0.0})
    assert sum(1 for v in cheap.values() if v) > sum(1 for v in costly.values() if v)
    assert sum(cheap.values()) == sum(costly.values()) == 6
    assert costly[3] == 6  # only the best survives a heavy cost


@pytest.mark.parametrize("solver", ["highs", "cbc"])
@pytest.mark.parametrize("lambdac, expected", [
    (0.0, {3: 3, 6: 2, 4: 2, 5: 1, 7: 0}),  # the reference's +1e-4 guard: keep everything
    (3.0, {3: 8, 7: 0, 6: 0, 5: 0, 4: 0}),  # heavy cost: one branch, one candidate
])
def test_ets_solvers_agree(solver, lambdac, expected):
    # (lambdac = 1 would tie here: dropping node 6 saves exactly its outcome share 2/8 = 2 nodes * 1/8)
    tree = build([(0, [0.5, 0.4]), (1, [0.9, 0.7, 0.6]), (2, [0.8, 0.3])])
    alloc = allocate("softmax_costmodel", tree, [3, 4, 5, 6, 7], 8,
                     {"softmax_temperature": 0.5, "lambdac": lambdac, "lambdas": 0.0, "ilp_solver": solver})
    assert alloc == expected


def test_ets_diversity_needs_an_embedder():
    tree = build([(0, [0.5, 0.4])])
    with pytest.raises(ValueError, match="lambdas > 0 needs an embedder"):
        allocate("softmax_costmodel", tree, [1, 2], 4, {"lambdas": 1.0})


def test_unknown_method_is_refused():
    tree = build([(0, [0.5])])
    with pytest.raises(ValueError, match="select_method: 'greedy'"):
        allocate("greedy", tree, [1], 4, {})


def test_ets_outcome_shares_keep_equal_scores_in_order():
    """The reference computes the outcome shares with sorted(..., reverse=True), which keeps
    equal scores in candidate order (unlike REBASE's sort-then-reverse): the earlier of two
    tied candidates gets the larger share, so it is the one a heavy cost keeps."""
    tree = build([(0, [0.5, 0.5]), (1, [0.5]), (2, [0.5])])
    alloc = allocate("softmax_costmodel", tree, [3, 4], 3, {"softmax_temperature": 0.2, "lambdac": 3.0, "lambdas": 0.0})
    assert alloc == {3: 3, 4: 0}
