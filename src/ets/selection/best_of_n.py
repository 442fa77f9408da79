"""Best-of-N (``best_of_n``): ``remaining`` independent samples, each run to its end.

The root is expanded into the whole width; after that every unfinished
trajectory gets exactly one child, so nothing is pruned and every sample
finishes (or runs out of tokens) on its own.
"""

from __future__ import annotations

from ets.selection.common import SelectionParams
from ets.tree import Tree


def allocate(tree: Tree, candidates: list[int], remaining: int, params: SelectionParams, embedder=None) -> dict[int, int]:
    if tree[candidates[0]].depth == 0:
        return {candidates[0]: remaining}
    return {c: 1 for c in candidates}
