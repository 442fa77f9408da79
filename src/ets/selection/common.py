"""What the selection methods share: their parameters and the softmax allocation walk."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ets.config import SearchConfig

# How close W * w_i / S must be to an integer to count as that integer: the
# reference's float32 ceilings sometimes land a hair above one (docs/algorithm.md#rebase-softmax-allocation).
CEIL_TOLERANCE = 1e-9


@dataclass(frozen=True)
class SelectionParams:
    """The one parameter type of every selection method: the keys of a
    :class:`~ets.config.SearchConfig` that selection reads. A search builds it once from its
    config (:meth:`from_config`); a plain mapping of those keys, as a config file writes them,
    goes through :meth:`from_mapping`, which checks it as a config file is checked."""

    softmax_temperature: float = 0.2
    lambdac: float = 1.0
    lambdas: float = 0.0
    fixedwidth: int = -1
    width: int | None = None  # the configured width (dvts sizes its subtrees from it); None: the remaining width
    max_tokens: float = math.inf  # dvts: which nodes of a subtree have retired
    retire_empty_steps: bool = False  # dvts: likewise
    ilp_solver: str = "highs"
    pf_temperature: float = 1.0  # particle_filtering: temperature of the resampling weights
    seed: int | None = None  # particle_filtering: its draws are keyed by (seed, problem_id, depth)
    problem_id: Any = None  # not a config key: the search of one problem sets it (from_config)

    @classmethod
    def from_config(cls, config: SearchConfig, problem_id: Any = None) -> "SelectionParams":
        """A config's selection keys (the config checked them when it was made), for the search of
        problem ``problem_id``."""
        keys = {name: getattr(config, name) for name in cls.__dataclass_fields__ if name != "problem_id"}
        return cls(problem_id=problem_id, **keys)

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any]) -> "SelectionParams":
        """The keys of ``params`` that selection reads, after the checks of a config file (a
        misspelled key is an error, not a default). A mapping already checked is remembered."""
        if not isinstance(params, Mapping):
            raise TypeError(f"selection params: expected SelectionParams or a mapping of its keys, got "
                            f"{type(params).__name__} (for a SearchConfig: SelectionParams.from_config)")
        try:
            key = frozenset((k, type(v), v) for k, v in params.items())
        except TypeError:  # an unhashable value: no memo (the check below refuses it anyway)
            key = None
        if key in _CHECKED:
            return _CHECKED[key]
        SearchConfig.from_dict({k: v for k, v in params.items() if v is not None}, source="selection params")
        known = cls.__dataclass_fields__
        checked = cls(**{k: v for k, v in params.items() if k in known and v is not None})
        if key is not None and len(_CHECKED) < _CHECKED_MAX:
            _CHECKED[key] = checked
        return checked


# Parameter mappings already checked (a SearchConfig per call costs as much as solving a small program).
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


def softmax_walk(log_weights: Sequence[float], remaining: int, later_first: bool = True) -> tuple[list[int], list[int]]:
    """REBASE's allocation of the ``remaining`` width over candidates with weights ``exp(log_weights)``.

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
    left = remaining
    for position, weight in enumerate(mass):
        if left <= 0 or weight <= 0:
            break  # the rest get nothing: no width left, or no weight (sorted, so neither have the rest)
        n = min(ceil_snapped(left * weight / suffix[position]), left)
        counts[position] = n
        left -= n
    return order, counts


def softmax_allocation(scores: Sequence[float], remaining: int, temperature: float,
                       later_first: bool = True) -> tuple[list[int], list[int]]:
    return softmax_walk([s / temperature for s in scores], remaining, later_first)
