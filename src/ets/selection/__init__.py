"""Selection methods: which candidates to expand, and into how many children.

Every method is a pure function behind one signature::

    allocate(method, tree, candidate_ids, remaining, params, embedder=None) -> {node_id: n_children}

``remaining`` is the remaining width (finished trajectories still wanted;
``params.width`` is the configured one), ``params`` a :class:`SelectionParams`
(a search makes one from its config: ``SelectionParams.from_config``) or a
plain mapping of its keys, checked as a config file is.
The returned dict lists every candidate, in the order the reference expands
them (the order matters for node ids, hence for parity of whole searches).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from ets.backends.base import Embedder
from ets.selection import beam, best_of_n, dvts, ets, particle_filtering, softmax
from ets.selection.common import SelectionParams
from ets.tree import Tree

# (tree, candidates, remaining, params, embedder) -> {candidate: children}
Allocator = Callable[[Tree, list[int], int, SelectionParams, "Embedder | None"], dict[int, int]]

METHODS: dict[str, Allocator] = {
    "softmax_costmodel": ets.allocate,
    "softmax": softmax.allocate,
    "beam_search": beam.allocate,
    "dvts": dvts.allocate,
    "best_of_n": best_of_n.allocate,
    "particle_filtering": particle_filtering.allocate,
}


def allocate(
    method: str,
    tree: Tree,
    candidate_ids: Iterable[int],
    remaining: int,
    params: SelectionParams | Mapping[str, Any],
    embedder: Embedder | None = None,
) -> dict[int, int]:
    if method not in METHODS:
        raise ValueError(f"select_method: {method!r} is not one of {', '.join(METHODS)}")
    candidates = list(candidate_ids)
    if not candidates:
        return {}
    if not isinstance(params, SelectionParams):
        params = SelectionParams.from_mapping(params)
    return METHODS[method](tree, candidates, int(remaining), params, embedder)


__all__ = ["allocate", "SelectionParams"]
