"""Trajectory scores and answer selection, with the reference's tie rules
(docs/algorithm.md#tie-rules).

* A trajectory's score aggregates its step scores by ``min``, ``prod``,
  ``mean`` or ``last``; an empty list scores 0; ``min`` and ``prod`` start
  from 1 (so ``min`` of scores all above 1 is 1). ``None`` entries are
  skipped (``last`` of a trailing ``None`` is 0), as the reference does for
  ``min`` and ``last``; it fails on them for ``mean`` and ``prod``.
* Best-of-N keeps the first trajectory, in file order, with the highest
  score (strict ``>``; the running best starts at -999.999 as in the
  reference, so a problem whose scores all lie below it picks nothing).
* Majority vote scans trajectories in file order; each adds its weight to
  every existing class whose representative its answer is equivalent to (in
  class order), or else founds a new class. The winner is the answer whose
  addition last raised some class's total strictly above the best total so
  far, which starts at 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

AGG_NAMES = ("min", "prod", "mean", "last")
SELECT_NAMES = AGG_NAMES + ("majority_vote",)

# the reference's starting value of the running best in best-of-N
BEST_OF_N_START = -999.999


def agg_min(scores: Sequence[float | None]) -> float:
    if not scores:
        return 0
    lowest = 1
    for s in scores:
        if s is not None and s < lowest:
            lowest = s
    return lowest


def agg_prod(scores: Sequence[float | None]) -> float:
    if not scores:
        return 0
    prod = 1.0
    for s in scores:
        if s is not None:
            prod *= s
    return prod


def agg_mean(scores: Sequence[float | None]) -> float:
    if not scores:
        return 0
    values = [s for s in scores if s is not None]
    return sum(values) / len(values) if values else 0


def agg_last(scores: Sequence[float | None]) -> float:
    if not scores or scores[-1] is None:
        return 0
    return scores[-1]


AGG_FUNCS: dict[str, Callable[[Sequence[float | None]], float]] = {
    "min": agg_min,
    "prod": agg_prod,
    "mean": agg_mean,
    "last": agg_last,
}


def get_agg(name: str) -> Callable[[Sequence[float | None]], float]:
    try:
        return AGG_FUNCS[name]
    except KeyError:
        raise ValueError(f"unknown aggregation {name!r}; known: {', '.join(AGG_NAMES)}") from None


@dataclass(frozen=True)
class Setting:
    """One way of picking an answer: best-of-N by an aggregate, or a
    (weighted) majority vote."""

    agg_func: str  # min, prod, mean, last (best-of-N) or majority_vote
    weighted: bool = False
    weight_agg: str | None = None

    def __post_init__(self):
        if self.agg_func not in SELECT_NAMES:
            raise ValueError(f"unknown agg_func {self.agg_func!r}; known: {', '.join(SELECT_NAMES)}")
        if self.is_vote and self.weighted and self.weight_agg not in AGG_NAMES:
            raise ValueError(
                f"a weighted majority vote needs weight_agg in {', '.join(AGG_NAMES)}, got {self.weight_agg!r}")

    @property
    def is_vote(self) -> bool:
        return self.agg_func == "majority_vote"

    @property
    def name(self) -> str:
        """``best_of_n/last``, ``majority_vote/unweighted``, ``majority_vote/weighted/last``."""
        if not self.is_vote:
            return f"best_of_n/{self.agg_func}"
        if not self.weighted:
            return "majority_vote/unweighted"
        return f"majority_vote/weighted/{self.weight_agg}"

    @classmethod
    def from_name(cls, name: str) -> "Setting":
        parts = name.split("/")
        if len(parts) == 2 and parts[0] == "best_of_n":
            return cls(parts[1])
        if parts == ["majority_vote", "unweighted"]:
            return cls("majority_vote")
        if len(parts) == 3 and parts[:2] == ["majority_vote", "weighted"]:
            return cls("majority_vote", True, parts[2])
        raise ValueError(f"unknown setting {name!r}; known: {', '.join(s.name for s in ALL_SETTINGS)}")


ALL_SETTINGS: tuple[Setting, ...] = (
    *(Setting(a) for a in AGG_NAMES),
    Setting("majority_vote"),
    *(Setting("majority_vote", True, a) for a in AGG_NAMES),
)


def best_of_n(scores: Sequence[float]) -> int | None:
    """Index of the first highest score (strict ``>``, from -999.999)."""
    best, index = BEST_OF_N_START, None
    for i, s in enumerate(scores):
        if s > best:
            best, index = s, i
    return index


def vote_classes(answers: Sequence[str], equivalent: Callable[[str, str], bool]) -> tuple[list[str], list[list[int]]]:
    """The class structure of a majority vote, independent of the weights.

    Returns the class representatives and, per trajectory, the indices of
    the classes its weight goes to, in the order the reference adds them
    (every earlier class it is equivalent to; else the one new class it
    founds). ``equivalent(answer, representative)``.

    Each distinct answer string is compared with each class once.
    """
    reps: list[str] = []
    matches: dict[str, list[int]] = {}  # classes a string matched so far
    checked: dict[str, int] = {}  # classes [0, checked) were compared with it
    routes: list[list[int]] = []
    for answer in answers:
        found = matches.setdefault(answer, [])
        for i in range(checked.get(answer, 0), len(reps)):
            if equivalent(answer, reps[i]):
                found.append(i)
        # a string founding a class stays unchecked against it: a later copy
        # compares with it as the reference does
        checked[answer] = len(reps)
        if found:
            routes.append(list(found))
        else:
            routes.append([len(reps)])
            reps.append(answer)
    return reps, routes


def majority_vote(
    weights: Sequence[float],
    routes: Sequence[Sequence[int]],
    n_classes: int,
) -> tuple[int | None, list[float]]:
    """Replay a vote over a class structure from :func:`vote_classes`.

    Returns the index of the trajectory whose answer wins (None when no
    class total ever rises above 0) and the class totals.
    """
    totals = [0.0] * n_classes  # founding a class: 0.0 + weight == weight
    best, winner = 0, None
    for t, (route, weight) in enumerate(zip(routes, weights)):
        for c in route:
            totals[c] += weight
            if totals[c] > best:
                best, winner = totals[c], t
    return winner, totals
