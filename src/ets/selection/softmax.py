"""REBASE (``softmax``): every candidate gets a softmax share of the width."""

from __future__ import annotations

from ets.selection.common import SelectionParams, softmax_allocation
from ets.tree import Tree


def allocate(tree: Tree, candidates: list[int], remaining: int, params: SelectionParams, embedder=None) -> dict[int, int]:
    scores = [tree[c].score for c in candidates]
    order, counts = softmax_allocation(scores, remaining, params.softmax_temperature)
    return {candidates[i]: n for i, n in zip(order, counts)}
