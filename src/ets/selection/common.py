"""What the selection methods share: their parameters and the softmax allocation walk."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

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
            params = params.to_dict()
        else:
            from ets.config import SearchConfig

            # the same keys and checks as a config file (a misspelled key is an error, not a default)
            SearchConfig.from_dict({k: v for k, v in params.items() if v is not None}, source="selection params")
        known = cls.__dataclass_fields__
        values = {k: v for k, v in params.items() if k in known and v is not None}
        return cls(**values)


def ceil_snapped(x: float) -> int:
    nearest = round(x)
    if abs(x - nearest) < CEIL_TOLERANCE:
        return int(nearest)
    return math.ceil(x)


def descending_order(weights: Sequence[float], later_first: bool = True) -> list[int]:
    """Indices by weight, highest first. Ties: in reverse input order (``later_first``),
    as the reference's ``sorted(...)`` followed by ``.reverse()`` leaves them, or in
    input order, as its ``sorted(..., reverse=True)`` does (ETS's outcome shares)."""
    if later_first:
        return sorted(range(len(weights)), key=lambda i: (weights[i], i), reverse=True)
    return sorted(range(len(weights)), key=lambda i: -weights[i])


def softmax_walk(log_weights: Sequence[float], width: int, later_first: bool = True) -> tuple[list[int], list[int]]:
    """REBASE's allocation of ``width`` over candidates with weights ``exp(log_weights)``.

    Walks the candidates from the heaviest: ``n_i = ceil(W * w_i / S)``, then
    ``W -= n_i`` and ``S -= w_i``. Returns (order, counts in that order).
    Computed in float64 with the remaining mass summed afresh at each step
    (no drift from repeated subtraction); weights of ``-inf`` get nothing.
    ``later_first`` breaks ties as :func:`descending_order` does.
    """
    order = descending_order(log_weights, later_first)
    finite = [log_weights[i] for i in order if log_weights[i] != -math.inf]
    top = max(finite) if finite else 0.0
    # shifting by the maximum leaves every ratio w_i / S unchanged and avoids overflow
    mass = [math.exp(log_weights[i] - top) if log_weights[i] != -math.inf else 0.0 for i in order]
    suffix = [0.0] * (len(mass) + 1)
    for position in range(len(mass) - 1, -1, -1):
        suffix[position] = suffix[position + 1] + mass[position]
    counts = []
    remaining = width
    for position, weight in enumerate(mass):
        total = suffix[position]
        n = ceil_snapped(remaining * weight / total) if total > 0 and weight > 0 else 0
        n = min(n, remaining)
        counts.append(n)
        remaining -= n
    return order, counts


def softmax_allocation(scores: Sequence[float], width: int, temperature: float,
                       later_first: bool = True) -> tuple[list[int], list[int]]:
    return softmax_walk([s / temperature for s in scores], width, later_first)
