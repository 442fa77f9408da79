"""What the selection methods share: their parameters and the softmax allocation walk."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

# How close W * w_i / S must be to an integer to count as that integer: the
# reference's float32 ceilings sometimes land a hair above one (docs/algorithm.md#rebase-softmax-allocation).
CEIL_TOLERANCE = 1e-9


@dataclass(frozen=True)
class SelectionParams:
    softmax_temperature: float = 0.2
    lambdac: float = 1.0
    lambdas: float = 0.0
    fixedwidth: int = -1
    width: int | None = None  # the configured width (dvts sizes its subtrees from it)
    max_tokens: float = math.inf  # dvts: which nodes of a subtree have retired
    ilp_solver: str = "highs"

    @classmethod
    def of(cls, params: Any) -> "SelectionParams":
        if isinstance(params, SelectionParams):
            return params
        if not isinstance(params, Mapping):  # a SearchConfig: already checked
            return cls._known(params.to_dict())
        try:
            key = frozenset((k, type(v), v) for k, v in params.items())
        except TypeError:  # an unhashable value: no memo (the check below refuses it anyway)
            key = None
        if key in _CHECKED:
            return _CHECKED[key]
        from ets.config import SearchConfig

        # the same keys and checks as a config file (a misspelled key is an error, not a default)
        SearchConfig.from_dict({k: v for k, v in params.items() if v is not None}, source="selection params")
        checked = cls._known(params)
        if key is not None and len(_CHECKED) < _CHECKED_MAX:
            _CHECKED[key] = checked
        return checked

    @classmethod
    def _known(cls, params: Mapping) -> "SelectionParams":
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in params.items() if k in known and v is not None})


# Parameter dicts already checked (a SearchConfig per call costs as much as solving a small program).
_CHECKED: dict[frozenset, SelectionParams] = {}
_CHECKED_MAX = 256


def ceil_snapped(x: float) -> int:
    nearest = round(x)
    if abs(x - nearest) < CEIL_TOLERANCE:
        return int(nearest)
    return math.ceil(x)


def descending_order(weights: Sequence[float], later_first: bool = True) -> list[int]:
    """Indices by weight, highest first. Ties: in reverse input order (``later_first``),
    as the reference's ``sorted(...)`` followed by ``.reverse()`` leaves them, or in
    input order, as its ``sorted(..., reverse=True)`` does (ETS's outcome shares)."""
    negated = -np.asarray(weights, dtype=np.float64)
    if later_first:
        return np.lexsort((-np.arange(len(negated)), negated)).tolist()
    return np.argsort(negated, kind="stable").tolist()


def softmax_walk(log_weights: Sequence[float], width: int, later_first: bool = True) -> tuple[list[int], list[int]]:
    """REBASE's allocation of ``width`` over candidates with weights ``exp(log_weights)``.

    Walks the candidates from the heaviest: ``n_i = ceil(W * w_i / S)``, then
    ``W -= n_i`` and ``S -= w_i``. Returns (order, counts in that order).
    Computed in float64 with the remaining mass summed afresh at each step
    (no drift from repeated subtraction); weights of ``-inf`` get nothing.
    ``later_first`` breaks ties as :func:`descending_order` does.
    """
    order = descending_order(log_weights, later_first)
    ordered = [log_weights[i] for i in order]
    # shifting by the maximum (the first, unless all are -inf) leaves every ratio w_i / S unchanged and avoids overflow
    top = ordered[0] if ordered and ordered[0] != -math.inf else 0.0
    mass = [math.exp(w - top) if w != -math.inf else 0.0 for w in ordered]
    suffix = list(itertools.accumulate(reversed(mass)))[::-1]
    counts = [0] * len(mass)
    remaining = width
    for position, weight in enumerate(mass):
        if remaining <= 0 or weight <= 0:
            break  # the rest get nothing: no width left, or no weight (sorted, so neither have the rest)
        n = min(ceil_snapped(remaining * weight / suffix[position]), remaining)
        counts[position] = n
        remaining -= n
    return order, counts


def softmax_allocation(scores: Sequence[float], width: int, temperature: float,
                       later_first: bool = True) -> tuple[list[int], list[int]]:
    return softmax_walk([s / temperature for s in scores], width, later_first)
