"""Selection methods: which candidates to expand, and into how many children.

Every method is a pure function behind one signature::

    allocate(method, tree, candidate_ids, width, params, embedder=None) -> {node_id: n_children}

``width`` is the remaining width (finished trajectories still wanted),
``params`` a :class:`~ets.config.SearchConfig` or a mapping with its keys.
The returned dict lists every candidate, in the order the reference expands
them (the order matters for node ids, hence for parity of whole searches).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from ets.backends.base import Embedder
from ets.selection.common import SelectionParams
from ets.tree import Tree

Allocator = Callable[[Tree, list[int], int, SelectionParams, "Embedder | None"], dict[int, int]]


def _methods() -> dict[str, Allocator]:
    from ets.selection import beam, best_of_n, dvts, ets, softmax

    return {
        "softmax_costmodel": ets.allocate,
        "softmax": softmax.allocate,
        "beam_search": beam.allocate,
        "dvts": dvts.allocate,
        "best_of_n": best_of_n.allocate,
    }


def allocate(
    method: str,
    tree: Tree,
    candidate_ids: Iterable[int],
    width: int,
    params: Any,
    embedder: Embedder | None = None,
) -> dict[int, int]:
    methods = _methods()
    if method not in methods:
        raise ValueError(f"select_method: {method!r} is not one of {', '.join(methods)}")
    candidates = list(candidate_ids)
    if not candidates:
        return {}
    return methods[method](tree, candidates, int(width), SelectionParams.of(params), embedder)


__all__ = ["allocate", "SelectionParams"]
