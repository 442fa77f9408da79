"""A model-free process reward model for arithmetic word problems: the CPU default PRM.

A small policy (SmolLM2-135M on ASDiv, SVAMP, MAWPS, GSM8K) writes its work as
equations, one step per line: ``After selling, he has 12 - 5 = 7 rolls.`` What
such a step states can be checked. This PRM reads each step of a path and
scores the newest one with a logistic model over what it finds:

* the equations (``a op b ... = c``), evaluated with exact rational arithmetic:
  a false equation is a wrong step, and every later step inherits the error;
* whether the numbers an equation works with come from somewhere: the
  question, or a result or number of an earlier step (a number from nowhere is
  a guess);
* at the answer line, whether the answer is a result the work computed, and
  whether it merely repeats a number of the question.

The weights were fitted on trajectories of the CPU policy on an ASDiv tuning
split and checked on held-out problems (``bench/prm_quality.py`` refits and
measures them; ``docs/cpu-models.md`` has the figures). The score is the
model's estimate that the path so far leads to a correct final answer, so the
last step's score ranks whole trajectories and a wrong turn lowers the scores
of everything below it.

It reads text only: no model, no tokenizer, microseconds a step.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from ets.backends.base import Context, Reward

# --- numbers -------------------------------------------------------------------

# 1,200 / 12 / 3.5 / .5 (a comma only as a thousands separator)
_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_NUMBER_RE = re.compile(rf"(?<![\w.])(?:{_NUMBER})(?![\w])")
_WORD_NUMBERS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
    "thousand": 1000, "dozen": 12, "twice": 2, "double": 2, "triple": 3, "half": Fraction(1, 2),
    "quarter": Fraction(1, 4), "pair": 2, "week": 7,
}
_WORD_RE = re.compile(r"\b(" + "|".join(_WORD_NUMBERS) + r")s?\b", re.IGNORECASE)
# numbers any solution may bring in without the question saying so
_FREE_NUMBERS = frozenset(Fraction(n) for n in (0, 1, 2, 10, 100))


def parse_number(text: str) -> Fraction:
    return Fraction(text.replace(",", ""))


def numbers_in(text: str) -> list[Fraction]:
    """Every number written in digits, in order."""
    return [parse_number(m.group(0)) for m in _NUMBER_RE.finditer(text)]


def question_numbers(question: str) -> set[Fraction]:
    """The numbers a question gives, in digits or in words (``three``, ``a dozen``, ``half``)."""
    found = set(numbers_in(question))
    found.update(Fraction(_WORD_NUMBERS[m.group(1).lower()]) for m in _WORD_RE.finditer(question))
    return found


# --- equations -----------------------------------------------------------------

_TOKEN_RE = re.compile(rf"\s*(?:(?P<num>{_NUMBER})|(?P<op>[-+*/×÷xX·()=])|(?P<skip>[$%])|(?P<word>[A-Za-z']+)|(?P<other>\S))")
_OPS = {"+": "+", "-": "-", "*": "*", "×": "*", "x": "*", "X": "*", "·": "*", "/": "/", "÷": "/"}


@dataclass(frozen=True)
class Equation:
    """``lhs = rhs`` as a step wrote it: the operands of the left side, both values, and whether they agree."""

    operands: tuple[Fraction, ...]
    lhs: Fraction
    rhs: Fraction
    rhs_text: str
    rhs_span: tuple[int, int]  # where the written result stands in the step (for the calculator)

    @property
    def holds(self) -> bool:
        if self.lhs == self.rhs:
            return True
        # a rounded result (10 / 3 = 3.33) holds at the precision written
        decimals = len(self.rhs_text.split(".")[1]) if "." in self.rhs_text else 0
        return abs(self.lhs - self.rhs) <= Fraction(1, 2 * 10 ** decimals) and decimals > 0


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, value, end offset of the token in ``text``) for each token."""
    out: list[tuple[str, str, int]] = []
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "skip":
            continue
        if kind == "op" and value in "xX":
            # 'x' multiplies only between numbers: "3 x 4", not "x = 5"
            if not (out and out[-1][0] in ("num", ")")):
                kind = "word"
        if kind == "op":
            kind = value if value in "()=" else "op"
            value = _OPS.get(value, value)
        out.append((kind, value, m.end()))
    return out


def _drop_units(tokens: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """Drop unit words inside arithmetic: ``5 apples + 3 apples = 8`` reads as ``5 + 3 = 8``."""
    out: list[tuple[str, str, int]] = []
    i = 0
    while i < len(tokens):
        kind = tokens[i][0]
        if kind == "word" and out and out[-1][0] in ("num", ")"):
            j = i
            while j < len(tokens) and tokens[j][0] == "word" and j - i < 2:
                j += 1
            if j < len(tokens) and tokens[j][0] in ("op", "=", ")"):
                i = j
                continue
        out.append(tokens[i])
        i += 1
    return out


class _Parser:
    """Recursive descent over one expression: + - * / and parentheses, exact fractions."""

    def __init__(self, tokens: list[tuple[str, str, int]], start: int):
        self.tokens, self.i = tokens, start
        self.operands: list[Fraction] = []

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def expr(self) -> Fraction:
        value = self.term()
        while (t := self.peek()) and t[0] == "op" and t[1] in "+-":
            self.i += 1
            right = self.term()
            value = value + right if t[1] == "+" else value - right
        return value

    def term(self) -> Fraction:
        value = self.atom()
        while (t := self.peek()) and t[0] == "op" and t[1] in "*/":
            self.i += 1
            right = self.atom()
            if t[1] == "*":
                value *= right
            elif right == 0:
                raise ValueError("division by zero")
            else:
                value /= right
        return value

    def atom(self) -> Fraction:
        t = self.peek()
        if t is None:
            raise ValueError("end of expression")
        if t[0] == "num":
            self.i += 1
            value = parse_number(t[1])
            self.operands.append(value)
            return value
        if t[0] == "(":
            self.i += 1
            value = self.expr()
            if (close := self.peek()) is None or close[0] != ")":
                raise ValueError("unclosed parenthesis")
            self.i += 1
            return value
        if t[0] == "op" and t[1] == "-":
            self.i += 1
            return -self.atom()
        raise ValueError(f"unexpected {t[1]!r}")


def equations_in(step: str) -> list[Equation]:
    """The equations a step states, left to right; ``a = b = c`` gives ``a = b`` and ``b = c``.

    Only equations with an operator on the left count (``x = 5`` and ``5 = 5``
    state no arithmetic)."""
    tokens = _drop_units(_tokens(step))
    found: list[Equation] = []
    i = 0
    while i < len(tokens):
        if tokens[i][0] not in ("num", "(", "op"):
            i += 1
            continue
        sides: list[tuple[Fraction, tuple[Fraction, ...], str, int, int]] = []
        j = i
        while True:
            parser = _Parser(tokens, j)
            try:
                value = parser.expr()
            except (ValueError, ZeroDivisionError):
                break
            text = tokens[j][1] if parser.i == j + 1 and tokens[j][0] == "num" else ""
            sides.append((value, tuple(parser.operands), text, parser.i - j, tokens[j][2]))
            j = parser.i
            if j < len(tokens) and tokens[j][0] == "=":
                j += 1
                continue
            break
        for (lhs, operands, _, width, _), (rhs, _, rhs_text, _, rhs_end) in zip(sides, sides[1:]):
            if width > 1 and rhs_text:  # an expression equal to a written number
                found.append(Equation(operands, lhs, rhs, rhs_text, (rhs_end - len(rhs_text), rhs_end)))
        i = max(j, i + 1)
    return found


# --- the calculator ------------------------------------------------------------


def format_number(value: Fraction) -> str:
    """A result as a calculator shows it: whole numbers plainly, others to at most 4 decimals."""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.4f}".rstrip("0").rstrip(".")


def correct_arithmetic(step: str) -> str:
    """``step`` with the result of each false equation replaced by its true value (``39 - 18 = 12``
    becomes ``39 - 18 = 21``), left to right, so a later equation reads the corrected result; the
    ``calculator`` option applies it to every step the policy writes (docs/cpu-models.md#the-calculator)."""
    for _ in range(16):  # one equation fixed a pass; a step states a handful at most
        wrong = next((eq for eq in equations_in(step) if not eq.holds), None)
        if wrong is None:
            break
        start, end = wrong.rhs_span
        step = step[:start] + format_number(wrong.lhs) + step[end:]
    return step


# --- the answer line ---------------------------------------------------------------

_ANSWER_LINE_RE = re.compile(r"answer is\s*:?([^\n]*)", re.IGNORECASE)
_SIGNED_NUMBER_RE = re.compile(rf"-?(?:{_NUMBER})")


def answer_value(step: str) -> Fraction | None:
    """The number an answer line gives, read as the evaluator grades it: after ``answer is``, and
    after the last ``=`` when the line is an equation (``answer is 14 + 14 = 28`` gives 28)."""
    m = _ANSWER_LINE_RE.search(step)
    if not m:
        return None
    found = _SIGNED_NUMBER_RE.search(m.group(1).rsplit("=", 1)[-1])
    return parse_number(found.group(0)) if found else None


# --- features and the score --------------------------------------------------------

FEATURES = (
    "false_equations",  # false equations on the path (capped at 3)
    "newest_false",  # the newest step states a false equation
    "ungrounded",  # equation operands from nowhere (capped at 3)
    "is_answer",  # the newest step gives the final answer
    "answer_computed",  # ... and it is a result a true equation computed
    "answer_copied",  # ... and it is a number of the question, computed nowhere
    "no_work",  # the path so far states no equation at all
    "true_equations",  # true equations on the path (capped at 4): right solutions here are short
)
# Measured and left out (bench/prm_quality.py --cv lists them): the share of the question's numbers
# used, a repeated step, whether the answer is the last result, an unreadable answer, a negative
# result, a question number used twice, a product the question gives no cue for. None raised the
# cross-validated AUROC on the tuning split by more than its noise.

# Fitted by `bench/prm_quality.py --fit` (logistic regression, classes weighted equally, L2 3) on
# the tuning split, sampled with and without the calculator; docs/cpu-models.md gives the data and
# the held-out quality.
WEIGHTS = {
    "bias": 1.27,
    "false_equations": -0.87,
    "newest_false": -1.56,
    "ungrounded": -2.63,
    "is_answer": -0.93,
    "answer_computed": 1.57,
    "answer_copied": -0.6,
    "no_work": -0.66,
    "true_equations": -0.66,
}


# The same features fitted to another policy's work: a PRM learns its policy's habits (Qwen2.5-Coder
# writes more equations on right paths; SmolLM2's right paths are short). Fitted by
# `bench/prm_quality.py --fit --within` (one intercept per problem: the weights rank steps of one
# problem, as the search compares them) on the built-in policy's samples of the tuning split, with the
# calculator on, so no false equation was seen: those two weights are SmolLM2's.
POLICY_WEIGHTS = {
    "qwen2.5-coder-0.5b": {
        "bias": -0.24,
        "false_equations": WEIGHTS["false_equations"],
        "newest_false": WEIGHTS["newest_false"],
        "ungrounded": -0.65,
        "is_answer": -0.33,
        "answer_computed": 0.16,
        "answer_copied": -0.07,
        "no_work": -0.53,
        "true_equations": 0.76,
    },
}


def path_features(question: str, steps: Sequence[str]) -> dict[str, float]:
    """What the PRM reads off a path (the question and its steps, newest last)."""
    given = question_numbers(question)
    known = set(given) | _FREE_NUMBERS  # what a step may work with
    results: list[Fraction] = []
    false_equations = ungrounded = 0
    newest_false = False
    for index, step in enumerate(steps):
        for eq in equations_in(step):
            ungrounded += sum(1 for x in eq.operands if x not in known)
            if eq.holds:
                results.append(eq.rhs)
            else:
                false_equations += 1
                newest_false = newest_false or index == len(steps) - 1
            known.add(eq.rhs)
        known.update(numbers_in(step))
    newest_step = steps[-1] if steps else ""
    is_answer = bool(_ANSWER_LINE_RE.search(newest_step))
    answer = answer_value(newest_step) if is_answer else None
    return {
        "false_equations": min(false_equations, 3),
        "newest_false": float(newest_false),
        "ungrounded": min(ungrounded, 3),
        "is_answer": float(is_answer),
        "answer_computed": float(answer is not None and answer in results),
        "answer_copied": float(answer is not None and answer in given and answer not in results),
        "no_work": float(not results and false_equations == 0),
        "true_equations": min(len(results), 4),
    }


def logistic(features: dict[str, float], weights: dict[str, float]) -> float:
    z = weights.get("bias", 0.0) + sum(weights.get(name, 0.0) * value for name, value in features.items())
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))


class ArithmeticPRM(Reward):
    """The model-free PRM above, as a :class:`~ets.backends.base.Reward` backend."""

    mode = "arithmetic"

    def __init__(self, weights: dict[str, float] | None = None):
        self.weights = dict(WEIGHTS if weights is None else weights)
        self.model_path = "built-in, no model" + ("" if weights is None else "; weights given")
        unknown = set(self.weights) - set(FEATURES) - {"bias"}
        if unknown:
            raise ValueError(f"unknown arithmetic PRM feature(s): {', '.join(sorted(unknown))}")

    def score_steps(self, question: str, steps: Sequence[str]) -> float | None:
        if not steps:
            return None
        if not steps[-1].strip():
            # the policy ended its turn without an answer (an empty step follows end-of-text): nothing
            # below this node can be right, and the search should spend its width elsewhere
            return 0.0
        return logistic(path_features(question, steps), self.weights)

    @classmethod
    def for_policy(cls, policy: str | None) -> "ArithmeticPRM":
        """The PRM with the weights fitted to ``policy``'s work (``POLICY_WEIGHTS``); SmolLM2's
        (``WEIGHTS``) for any other policy."""
        fitted_to = str(policy) if str(policy) in POLICY_WEIGHTS else "smollm2-135m"
        prm = cls(POLICY_WEIGHTS.get(fitted_to, WEIGHTS))
        prm.model_path = f"built-in, no model; weights fitted to {fitted_to}"
        return prm

    async def score(self, contexts: Sequence[Context]) -> list[float | None]:
        return [self.score_steps(c.question, c.steps) for c in contexts]
