"""Answer extraction: where the final answer sits in a trajectory's text.

Three conventions are covered:

* math-shepherd / llemma / mistral: the answer line ``The answer is: X ки``.
  For these model types the reference's rule is kept exactly: the first
  match of ``The answer is:(.+) ки`` on one line, stripped, with every comma
  removed; no match gives ``[invalid]``.
* instruct models: ``\\boxed{X}`` (the last complete one; nested braces are
  kept intact).
* GSM8K ground truth: a worked solution ending in ``#### N``.

For other prompt formats the extractor is lenient: it tries the style the
format declares (:attr:`ets.formats.PromptFormat.answer_style`) and then the
other one.
"""

from __future__ import annotations

import re

from ets.formats import FORMATS

INVALID = "[invalid]"

# model types the reference evaluator knows; they get its exact rule
REFERENCE_SHEPHERD_TYPES = frozenset({"llemma", "mistral", "mistral_7b"})

# the reference's regex: greedy, one line, the answer must be followed by " ки"
_SHEPHERD_RE = re.compile(r"The answer is:(.+) \u043a\u0438")
# lenient: "The answer is X", "The final answer is: X", up to the end of the line
_ANSWER_IS_RE = re.compile(r"[Tt]he (?:final )?answer is\s*:?[ \t]*([^\n]*)")
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# ASDiv: a number followed by its unit in parentheses
_UNIT_GT_RE = re.compile(r"^\s*(-?[\d.,/]*\d)\s*\([^()]*\)\s*$")
_GSM8K_GT_RE = re.compile(r"####\s*(.+?)\s*$", re.S)


def extract_shepherd(text: str | None) -> str:
    """The reference's rule (math-shepherd format); ``[invalid]`` when absent."""
    if text is None:
        return INVALID
    match = _SHEPHERD_RE.search(text)
    if not match:
        return INVALID
    return match.group(1).strip().replace(",", "")


def _matching_brace(text: str, open_at: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_at``; escaped braces
    (``\\{``, ``\\}``) and ``\\\\`` do not count. None when unbalanced."""
    depth = 0
    i = open_at
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def extract_boxed(text: str | None) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (or ``\\fbox{...}``), nested
    braces intact; also ``\\boxed 5``. None when there is none."""
    if not text:
        return None
    for match in reversed(list(_BOXED_RE.finditer(text))):
        i = match.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            close = _matching_brace(text, i)
            if close is None:
                continue  # truncated; an earlier complete one may exist
            content = text[i + 1:close].strip()
        elif match.end() < i:  # "\boxed 5": one token after the space
            m = re.match(r"[^\s$]+", text[i:])
            if not m:
                continue
            content = m.group(0)
        else:
            continue
        if content:
            return content
    return None


def _clean(answer: str) -> str | None:
    answer = answer.strip()
    if answer.endswith("\u043a\u0438"):  # step tag of the math-shepherd format
        answer = answer[:-2].rstrip()
    answer = answer.rstrip(".").strip()
    if len(answer) >= 2 and answer[0] == "$" and answer[-1] == "$":
        answer = answer.strip("$").strip()
    boxed = extract_boxed(answer)
    if boxed is not None:
        answer = boxed
    answer = _THOUSANDS_RE.sub("", answer)
    return answer or None


def extract_answer_is(text: str | None) -> str | None:
    """Lenient ``The answer is: X``: the reference's rule when it matches, else
    the last ``The (final) answer is`` line (tag, final period, ``$``,
    ``\\boxed{}`` and thousands separators removed). None when absent."""
    if not text:
        return None
    answer = extract_shepherd(text)
    if answer != INVALID:
        return answer or None
    for match in reversed(list(_ANSWER_IS_RE.finditer(text))):
        answer = _clean(match.group(1))
        if answer:
            return answer
    return None


def answer_style(model_type: str) -> str:
    """``shepherd`` (the reference rule), ``answer_is``, ``boxed`` or ``auto``."""
    if model_type in REFERENCE_SHEPHERD_TYPES:
        return "shepherd"
    fmt = FORMATS.get(model_type)
    if fmt is None:
        return "auto"
    return fmt.answer_style if fmt.answer_style in ("answer_is", "boxed") else "auto"


def extract_answer(text: str | None, model_type: str = "llemma") -> str:
    """The answer of one trajectory as the evaluator reads it for ``model_type``
    (a prompt-format name); ``[invalid]`` when none can be found."""
    style = answer_style(model_type)
    if style == "shepherd":
        return extract_shepherd(text)
    if style == "boxed":
        answer = extract_boxed(text) or extract_answer_is(text)
    else:  # answer_is, auto
        answer = extract_answer_is(text) or extract_boxed(text)
    return answer if answer else INVALID


def extract_ground_truth(ground_truth) -> str | None:
    """The bare ground-truth answer: ``N`` from a GSM8K solution ending in
    ``#### N`` (commas removed), ``N`` from an ASDiv answer with its unit
    (``9 (apples)``), else the value itself as a stripped string."""
    if ground_truth is None:
        return None
    gt = str(ground_truth)
    if "####" in gt:
        match = _GSM8K_GT_RE.search(gt[gt.rfind("####"):])
        if match:
            return match.group(1).replace(",", "").strip()
    match = _UNIT_GT_RE.match(gt)
    if match:
        return match.group(1).replace(",", "")
    return gt.strip()
