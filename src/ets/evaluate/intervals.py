"""Confidence intervals for accuracies (one run's, and the difference of two runs on the same problems)
and for the ratio of two runs' costs on the same problems.

An accuracy over a few dozen problems moves by several points from luck alone, and a cost total by as
much as its few costliest problems; these say how much.
"""

from __future__ import annotations

import math
from typing import Sequence

Z95 = 1.959963984540054  # the two-sided 95 % quantile of the normal distribution


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``correct / total`` (sound near 0 and 1, unlike the normal one)."""
    if total <= 0:
        return (0.0, 1.0)
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_difference(a: Sequence[bool], b: Sequence[bool], z: float = Z95) -> tuple[float, float, float]:
    """Accuracy of ``a`` minus that of ``b`` on the same problems, with a 95 % interval.

    Only the problems where the two disagree carry information (the paired design of McNemar's test);
    the interval is Newcombe's for paired proportions built from Wilson intervals (method 10 of
    Newcombe 1998), which stays inside [-1, 1] and behaves with few disagreements."""
    if len(a) != len(b):
        raise ValueError(f"paired runs need the same problems: {len(a)} against {len(b)}")
    n = len(a)
    if n == 0:
        return (0.0, -1.0, 1.0)
    both = sum(1 for x, y in zip(a, b) if x and y)
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    neither = n - both - only_a - only_b
    pa, pb = (both + only_a) / n, (both + only_b) / n
    la, ua = wilson_interval(both + only_a, n, z)
    lb, ub = wilson_interval(both + only_b, n, z)
    diff = pa - pb
    # the correlation term of Newcombe's method 10 (phi, set to 0 when a margin is empty)
    denominator = (both + only_a) * (neither + only_b) * (both + only_b) * (neither + only_a)
    phi = (both * neither - only_a * only_b) / math.sqrt(denominator) if denominator > 0 else 0.0
    lower = diff - math.sqrt(max(0.0, (pa - la) ** 2 - 2 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2))
    upper = diff + math.sqrt(max(0.0, (ua - pa) ** 2 - 2 * phi * (ua - pa) * (pb - lb) + (pb - lb) ** 2))
    return (diff, max(-1.0, lower), min(1.0, upper))


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float],
                   z: float = Z95) -> tuple[float, float, float]:
    """``sum(numerators) / sum(denominators)`` over the same problems, with a 95 % interval.

    The delta method for a ratio of paired means: the standard error is that of the per-problem
    residuals ``x - R * y`` (whose mean is 0 by construction), over the mean denominator. A search's
    cost varies far more from problem to problem than between two methods on one problem, so pairing
    the problems is what makes a ratio on a few dozen of them tell."""
    if len(numerators) != len(denominators):
        raise ValueError(f"paired runs need the same problems: {len(numerators)} against {len(denominators)}")
    n, total = len(numerators), sum(denominators)
    if n == 0 or total <= 0:
        raise ValueError("a ratio needs problems with a positive total cost in the denominator")
    ratio = sum(numerators) / total
    if n == 1:
        return (ratio, -math.inf, math.inf)
    residual_variance = sum((x - ratio * y) ** 2 for x, y in zip(numerators, denominators)) / (n - 1)
    half = z * math.sqrt(residual_variance / n) / (total / n)
    return (ratio, ratio - half, ratio + half)
