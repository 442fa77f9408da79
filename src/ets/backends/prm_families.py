"""The PRM families ets can read, one definition each: the text a PRM of the family reads, and
the tokens whose probabilities make its score. The in-process llama.cpp PRM
(:class:`ets.backends.llamacpp.TokenLogitPRM`) and the HTTP adapters
(:mod:`ets.backends.http.reward`) both render through these.

* ``step_tag`` -- math-shepherd / Llemma PRMs: the policy's own text, ending with the step tag
  (``ки``; a step cut off before its tag gets one); ``+`` against ``-`` read at the tag.
* ``rlhflow`` -- RLHFlow PRMs (model card of RLHFlow/Llama3.1-8B-PRM-Deepseek-Data): Llama-3
  chat, one user turn per step (the first with the question), each earlier step answered ``+``;
  ``+`` against ``-`` where the newest step's judgement goes.
* ``judge`` -- an instruct model judging a step (the policy model, on the CPU): the question,
  the earlier steps and the newest one, then "Is the newest step correct? Answer Yes or No.";
  ``Yes`` against ``No``.
* ``qwen`` -- Qwen2.5-Math-PRM (model card of Qwen/Qwen2.5-Math-PRM-7B): the chat with the steps
  joined by ``<extra_0>`` and one after the last; a classification head, no tokens read.

A renderer takes the context and the prompt format the policy wrote it in (``None`` when not
known): the format says the step tag and the step delimiters to drop from a step's content.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ets.backends.base import Context
from ets.formats import QWEN_SYSTEM_PROMPT, PromptFormat

DEFAULT_STEP_TAG = "ки"  # math-shepherd's

JUDGE_TEMPLATE = (
    "<|im_start|>system\nYou are a careful math teacher who checks a student's work.<|im_end|>\n"
    "<|im_start|>user\nProblem: {question}\n\nThe student's solution so far:\n{previous}"
    "\nThe student's newest step:\n{step}\n\n"
    "Is the newest step correct? Answer Yes or No.<|im_end|>\n<|im_start|>assistant\n"
)

RLHFLOW_USER = "<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>"
RLHFLOW_ASSISTANT = "<|start_header_id|>assistant<|end_header_id|>\n\n"


def strip_stops(step: str, stops: Sequence[str]) -> str:
    """A step's content: without surrounding whitespace, nor the (visible) delimiter it ends with."""
    s = step
    for d in stops:
        if d and d.strip() and s.rstrip().endswith(d.strip()):
            s = s.rstrip()[: -len(d.strip())]
    return s.strip()


def _stops(fmt: PromptFormat | None) -> tuple[str, ...]:
    return fmt.stop if fmt is not None else ()


def step_tag_text(context: Context, fmt: PromptFormat | None = None) -> str:
    """The policy's text as it is, ending with the step tag (a step cut off before its tag gets one)."""
    tag = (fmt.step_tag if fmt is not None else "") or DEFAULT_STEP_TAG
    text = context.text.rstrip()
    return text if text.endswith(tag) else text + " " + tag


def rlhflow_text(context: Context, fmt: PromptFormat | None = None) -> str:
    """One user turn per step (the first with the question), each earlier one answered ``+``;
    the text ends where the newest step's judgement token goes."""
    steps = context.steps
    parts = ["<|begin_of_text|>"]
    for i, step in enumerate(steps):
        content = strip_stops(step, _stops(fmt))
        if i == 0:
            content = context.question.strip() + " " + content
        parts.append(RLHFLOW_USER.format(content=content))
        parts.append(RLHFLOW_ASSISTANT)
        if i < len(steps) - 1:
            parts.append("+<|eot_id|>")
    return "".join(parts)


def judge_text(context: Context, fmt: PromptFormat | None = None, template: str = JUDGE_TEMPLATE) -> str:
    """The question, the earlier steps a line each, and the newest step, in ``template``."""
    stops = _stops(fmt)
    previous = "".join(strip_stops(s, stops) + "\n" for s in context.steps[:-1]) or "(nothing yet)\n"
    return template.format(question=context.question.strip(), previous=previous,
                           step=strip_stops(context.steps[-1], stops))


def qwen_prm_text(context: Context, fmt: PromptFormat | None = None) -> str:
    """The chat as Qwen2.5-Math-PRM's template renders it: the steps joined by ``<extra_0>``, one after the last."""
    answer = "".join(strip_stops(s, _stops(fmt)) + "<extra_0>" for s in context.steps)
    return (f"<|im_start|>system\n{QWEN_SYSTEM_PROMPT}<|im_end|>\n"
            f"<|im_start|>user\n{context.question}<|im_end|>\n"
            f"<|im_start|>assistant\n{answer}<|im_end|>\n")


@dataclass(frozen=True)
class PRMFamily:
    """How a PRM of one family is asked (see the module docstring)."""

    name: str
    render: Callable[[Context, PromptFormat | None], str]
    # token-logit PRMs: the score is p(good) / (p(good) + p(bad)) of the token after the text
    good: tuple[str, ...] = ()
    bad: tuple[str, ...] = ()

    @property
    def reads_tokens(self) -> bool:
        return bool(self.good)


STEP_TAG = PRMFamily("step_tag", step_tag_text, good=("+",), bad=("-",))
RLHFLOW = PRMFamily("rlhflow", rlhflow_text, good=("+",), bad=("-",))
JUDGE = PRMFamily("judge", judge_text, good=("Yes", "yes", " Yes"), bad=("No", "no", " No"))
QWEN = PRMFamily("qwen", qwen_prm_text)

FAMILIES: dict[str, PRMFamily] = {f.name: f for f in (STEP_TAG, RLHFLOW, JUDGE, QWEN)}

# a model's name (``reward_model_type``, and the prompt format of that model) -> its PRM's family
FAMILY_OF_MODEL: dict[str, PRMFamily] = {"mistral": STEP_TAG, "llemma": STEP_TAG, "llama": RLHFLOW, "qwen": QWEN}


def token_logit_family(fmt: PromptFormat) -> PRMFamily:
    """The family an in-process token-logit PRM reads by default for a prompt format: a step-tag PRM
    for a format with a step tag, the format's own model's PRM when it reads tokens, else a judge."""
    if fmt.step_tag:
        return STEP_TAG
    family = FAMILY_OF_MODEL.get(fmt.name)
    return family if family is not None and family.reads_tokens else JUDGE


def vllm_classifier_overrides(family: PRMFamily) -> dict:
    """vLLM's ``--hf-overrides`` that serve a causal LM (with ``--convert classify``) as a classifier of the
    family's first bad and good tokens: each class's weights are the LM head's row of that token, and the
    classifier's softmax over the two is p(good) / (p(good) + p(bad)), the score this family reads; ``/pooling``
    answers [p(bad), p(good)] for the text's last token."""
    if not family.reads_tokens:
        raise ValueError(f"the {family.name} PRM family reads no tokens: its model has a head of its own")
    return {"classifier_from_token": [family.bad[0], family.good[0]], "method": "no_post_processing"}
