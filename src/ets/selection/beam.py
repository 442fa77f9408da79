"""Beam search (``beam_search``): the top ``b`` candidates share the width evenly."""

from __future__ import annotations

import math

from ets.selection.common import SelectionParams, descending_order
from ets.tree import Tree


def allocate(tree: Tree, candidates: list[int], remaining: int, params: SelectionParams, embedder=None) -> dict[int, int]:
    beams = params.fixedwidth if params.fixedwidth > 0 else math.ceil(math.sqrt(remaining))
    depth = tree[candidates[0]].depth
    # the root alone is expanded straight to the whole remaining width
    per_beam = remaining if depth == 0 else math.ceil(remaining / beams)
    order = descending_order([tree[c].score for c in candidates])
    return {candidates[i]: (per_beam if rank < beams else 0) for rank, i in enumerate(order)}
