r"""Answer equivalence with math-verify, cached.

:meth:`Grader.equivalent` plays the part of the reference's
``grade_answer(given, ground_truth)``: identical strings are equivalent
(so ``[invalid]`` matches ``[invalid]`` when voting, as in the reference);
otherwise both strings are parsed by math-verify (each distinct string once)
and compared with :func:`math_verify.verify` (each distinct ordered pair
once). Fast paths give math-verify's verdict without calling it:

* two plain decimal numbers (``12``, ``-0.5``; at most 15 significant
  digits) are equivalent when equal in value, and not when they differ by
  1e-5 or more (math-verify rounds floats to 6 places);
* two answers that denote exact rationals (integers, or parsed to a sympy
  ``Rational``, as ``\frac{1}{3}``) are equivalent exactly when equal, as
  math-verify compares them;
* two answers that denote numbers (no variables, sets, tuples, matrices,
  relations or percentages: ``2\pi``, ``3\sqrt{5}``, ``0.25``) whose values
  differ by 1e-5 or more (and by more than 1e-9 relatively) are not
  equivalent: every comparison math-verify makes of two such expressions
  (structural, rounded to 6 places, ``(a-b).evalf() == 0``, ``simplify(a-b)
  == 0``) fails for them. Each answer's value is computed once.

Anything closer, or not a number, goes to ``verify``.

math-verify bounds parsing and comparison with ``signal.alarm``, which only
works in the main thread; elsewhere the timeouts are switched off, as its
documentation asks.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from fractions import Fraction

from ets.evaluate.extract import INVALID

# math_verify and sympy (about 0.3 s to import) are imported where used: plain numbers are
# decided without them, so many gradings never load them.

_NUMBER_RE = re.compile(r"-?(?:\d+\.?\d*|\.\d+)")
_SURELY_APART = Fraction(1, 10**5)

# seconds math-verify may spend on one parse / one comparison (main thread only)
DEFAULT_TIMEOUT = 5


def _timeout(seconds: int | None) -> int | None:
    if threading.current_thread() is threading.main_thread():
        return seconds
    return None


class Grader:
    """Equivalence of answer strings; keeps every parse and verdict it computes.

    One grader may serve many runs: the same problems' answers recur across
    widths and aggregation settings, and each pair is compared once.
    """

    def __init__(self, timeout: int | None = DEFAULT_TIMEOUT):
        self.timeout = timeout
        self._parsed: dict[str, list] = {}
        self._values: dict[str, tuple[Fraction, bool] | None] = {}  # str -> (value, is_decimal)
        self._approx: dict[str, complex | None] = {}  # str -> numeric value of a number-valued answer
        self._verdicts: dict[tuple[str, str], bool] = {}
        self.counts: Counter = Counter()  # comparisons, cache_hits, parses, verify_calls

    # -- parsing ---------------------------------------------------------------
    def parse(self, answer: str) -> list:
        r"""math-verify's parse of a bare answer (wrapped in ``\boxed{}`` so that
        bare LaTeX such as ``\frac{1}{3}`` is read whole)."""
        parsed = self._parsed.get(answer)
        if parsed is None:
            from math_verify import parse

            self.counts["parses"] += 1
            parsed = parse("\\boxed{" + answer + "}", parsing_timeout=_timeout(self.timeout))
            self._parsed[answer] = parsed
        return parsed

    def value(self, answer: str) -> tuple[Fraction, bool] | None:
        """The exact number an answer denotes, when it is a plain decimal
        (``(value, True)``; an integer counts as exact, ``False``) or parses to
        a sympy Rational (``(value, False)``); else None."""
        if answer in self._values:
            return self._values[answer]
        value = None
        if _NUMBER_RE.fullmatch(answer):
            digits = answer.lstrip("-").replace(".", "").lstrip("0")
            if len(digits) <= 15:
                value = (Fraction(answer), "." in answer)
        else:
            value = _as_rational(self.parse(answer))
        self._values[answer] = value
        return value

    def approx(self, answer: str) -> complex | None:
        """The numeric value of an answer that denotes a number (see the
        module notes), else None."""
        if answer in self._approx:
            return self._approx[answer]
        exact = self.value(answer)
        if exact is not None:
            approx = complex(float(exact[0]))
        else:
            approx = _numeric_value(self.parse(answer), _timeout(self.timeout))
        self._approx[answer] = approx
        return approx

    # -- comparison ------------------------------------------------------------
    def equivalent(self, given: str | None, reference: str | None) -> bool:
        """Is ``given`` equivalent to ``reference`` (the gold side for
        math-verify, which is not quite symmetric)?"""
        self.counts["comparisons"] += 1
        if given is None or reference is None:
            return False
        key = (reference, given)
        verdict = self._verdicts.get(key)
        if verdict is not None:
            self.counts["cache_hits"] += 1
            return verdict
        verdict = self._compare(given.strip(), reference.strip())
        self._verdicts[key] = verdict
        return verdict

    def _compare(self, given: str, reference: str) -> bool:
        if given == reference:
            return True
        if not given or not reference or given == INVALID or reference == INVALID:
            return False
        v_given, v_ref = self.value(given), self.value(reference)
        if v_given is not None and v_ref is not None:
            (x, x_decimal), (y, y_decimal) = v_given, v_ref
            if not x_decimal and not y_decimal:
                return x == y  # exact rationals
            if abs(x - y) >= _SURELY_APART:
                return False
            if x == y and _is_plain(given) and _is_plain(reference):
                return True  # equal plain numbers: sympy Floats (and Integers) compare equal
        a_given, a_ref = self.approx(given), self.approx(reference)
        if a_given is not None and a_ref is not None and _apart(a_given, a_ref):
            return False
        self.counts["verify_calls"] += 1
        from math_verify import verify

        return bool(verify(self.parse(reference), self.parse(given), timeout_seconds=_timeout(self.timeout)))

    def is_correct(self, answer: str | None, ground_truth: str | None) -> bool:
        """Grading against the ground truth: ``[invalid]`` and a missing answer
        are wrong."""
        if answer is None or answer == INVALID or ground_truth is None:
            return False
        return self.equivalent(answer, ground_truth)

    def cache_size(self) -> dict[str, int]:
        return {"parsed": len(self._parsed), "verdicts": len(self._verdicts)}


def _is_plain(answer: str) -> bool:
    return _NUMBER_RE.fullmatch(answer) is not None


def _apart(x: complex, y: complex) -> bool:
    d = abs(x - y)
    return d >= 1e-5 and d > 1e-9 * max(abs(x), abs(y))


def _numeric_value(parsed: list, timeout_seconds: int | None) -> complex | None:
    """The value of a parsed answer that is a plain number-valued expression."""
    if not parsed:
        return None
    from sympy import Expr, UnevaluatedExpr

    expr = parsed[0]
    if not isinstance(expr, Expr):  # sets, tuples, matrices, relations, strings
        return None
    from math_verify.errors import TimeoutException
    from math_verify.utils import timeout

    @timeout(timeout_seconds=timeout_seconds)
    def evaluate():
        if expr.free_symbols or expr.has(UnevaluatedExpr):  # variables; percentages (9% == 9 for math-verify)
            return None
        value = complex(expr.evalf(30))
        if value != value or abs(value) == float("inf"):
            return None
        return value

    try:
        return evaluate()
    except (Exception, TimeoutException):
        return None


def _as_rational(parsed: list) -> tuple[Fraction, bool] | None:
    """The exact rational a parse denotes, when its expression is a sympy Rational."""
    if not parsed:
        return None
    from sympy import Rational

    expr = parsed[0]
    if isinstance(expr, Rational):
        return Fraction(int(expr.p), int(expr.q)), False
    return None


_default: Grader | None = None


def default_grader() -> Grader:
    """A process-wide grader, so repeated evaluations share its cache."""
    global _default
    if _default is None:
        _default = Grader()
    return _default
