"""DVTS (``dvts``): ``b`` independent subtrees, each a greedy beam of one.

The root is expanded into the whole configured width. At depth 1 the
candidates are split, in order, into ``b`` contiguous groups (cycled when
there are fewer than ``b``); each group is a subtree and keeps its best
candidate. Deeper, each parent keeps its best child. A kept node gets its
subtree's remaining width: ``width // b`` less the trajectories that subtree
has already finished (docs/algorithm.md#dvts).

Everything is derived from the tree, so the function stays pure: the
subtree of a node is the group of its depth-1 ancestor. The reference
never decrements a subtree's width (retired nodes carry no subtree id there),
so its subtrees keep their full width until the global width runs out; ours
shrink (a difference named in the docs).
"""

from __future__ import annotations

import itertools
import math

from ets.selection.common import SelectionParams
from ets.tree import Tree


def num_subtrees(params: SelectionParams, remaining: int) -> int:
    if params.fixedwidth > 0:
        return params.fixedwidth
    return math.ceil(math.sqrt(params.width if params.width else remaining))


def depth_one_groups(candidates: list[int], subtrees: int) -> list[list[int]]:
    """Split the depth-1 candidates into ``subtrees`` contiguous groups (cycled if too few)."""
    if len(candidates) < subtrees:
        candidates = list(itertools.islice(itertools.cycle(candidates), subtrees))
    size, extra = divmod(len(candidates), subtrees)
    groups, start = [], 0
    for g in range(subtrees):
        end = start + size + (1 if g < extra else 0)
        groups.append(candidates[start:end])
        start = end
    return groups


def best(tree: Tree, ids: list[int]) -> int:
    """The highest score; the first one wins a tie."""
    chosen = ids[0]
    for node_id in ids[1:]:
        if tree[node_id].score > tree[chosen].score:
            chosen = node_id
    return chosen


def subtree_of_depth_one(tree: Tree, params: SelectionParams, subtrees: int) -> dict[int, int]:
    """Subtree index of each depth-1 node that was a candidate (the last group wins for a cycled node)."""
    depth_one = [n.id for n in tree.at_depth(1)
                 if not tree.is_retired(n.id, params.max_tokens, params.retire_empty_steps)]
    owner: dict[int, int] = {}
    if depth_one:
        for g, group in enumerate(depth_one_groups(depth_one, subtrees)):
            for node_id in group:
                owner[node_id] = g
    return owner


def allocate(tree: Tree, candidates: list[int], remaining: int, params: SelectionParams, embedder=None) -> dict[int, int]:
    configured = params.width if params.width else remaining
    subtrees = num_subtrees(params, remaining)
    subtree_width = configured // subtrees
    depth = tree[candidates[0]].depth
    if depth == 0:
        return {candidates[0]: configured}

    if depth == 1:
        alloc = {c: 0 for c in candidates}
        for group in depth_one_groups(candidates, subtrees):
            alloc[best(tree, group)] += subtree_width
        return alloc

    owner = subtree_of_depth_one(tree, params, subtrees)
    subtree_left = [subtree_width] * subtrees  # each subtree's width less the trajectories it finished
    for node in tree.nodes:
        if 2 <= node.depth <= depth and tree.is_retired(node.id, params.max_tokens, params.retire_empty_steps):
            group = owner.get(tree.ancestor_at_depth(node.id, 1))
            if group is not None:
                subtree_left[group] -= 1

    by_parent: dict[int, list[int]] = {}
    for c in candidates:
        by_parent.setdefault(tree[c].parent_id, []).append(c)
    kept = {best(tree, siblings) for siblings in by_parent.values()}
    alloc = {}
    for c in candidates:
        group = owner.get(tree.ancestor_at_depth(c, 1))
        alloc[c] = max(subtree_left[group], 0) if c in kept and group is not None else 0
    return alloc
