"""Prompt formats: how a question becomes the root prompt, where a step ends,
and how the final answer is written.

The search loop only needs :meth:`PromptFormat.prompt` and
:attr:`PromptFormat.stop`; the evaluator uses :attr:`PromptFormat.answer_style`
to know where to read the answer. Reward backends that need the format of
their own model (the step tag of a math-shepherd PRM, say) read
:attr:`PromptFormat.step_tag`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

LLAMA3_SYSTEM_PROMPT = (
    "Cutting Knowledge Date: December 2023\nToday Date: 05 Jan 2025\n\n"
    "Solve the following math problem efficiently and clearly:\n\n"
    "- For simple problems (2 steps or fewer):\nProvide a concise solution with minimal explanation.\n\n"
    "- For complex problems (3 steps or more):\nUse this step-by-step format:\n\n"
    "## Step 1: [Concise description]\n[Brief explanation and calculations]\n\n"
    "## Step 2: [Concise description]\n[Brief explanation and calculations]\n\n...\n\n"
    "Regardless of the approach, always conclude with:\n\n"
    "Therefore, the final answer is: $\\boxed{answer}$. I hope it is correct.\n\n"
    "Where [answer] is just the final number or expression that solves the problem."
)

# Qwen2.5-Math's system prompt: the qwen policy format and the Qwen PRM's input both open with it
QWEN_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class PromptFormat:
    name: str
    template: str  # str.format template with {question}
    stop: tuple[str, ...]  # step delimiters; a sampled step ends with one of them
    answer_style: str  # "answer_is" (The answer is: X) or "boxed" (\boxed{X})
    step_tag: str = ""  # the tag a token-logit PRM reads its score at, when the format has one
    description: str = ""

    def prompt(self, question: str) -> str:
        return self.template.format(question=question)


FORMATS: dict[str, PromptFormat] = {}


def _literal(text: str) -> str:
    """``text`` inside a ``str.format`` template, its braces kept as they are."""
    return text.replace("{", "{{").replace("}", "}}")


def register(fmt: PromptFormat) -> PromptFormat:
    FORMATS[fmt.name] = fmt
    return fmt


register(PromptFormat(
    name="raw",
    template="{question}",
    stop=("\n",),
    answer_style="answer_is",
    description="the root prompt is the question unchanged; a step is one line",
))
LLEMMA = register(PromptFormat(
    name="llemma",
    template="{question}\n",
    stop=("ки",),
    answer_style="answer_is",
    step_tag="ки",
    description="math-shepherd style: steps end with the tag 'ки', the answer line is 'The answer is: X ки'",
))
register(replace(LLEMMA, name="mistral",
                 description="math-shepherd style, as llemma (Mistral-7B math-shepherd policy and PRM)"))
register(PromptFormat(
    name="llama",
    template=(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + _literal(LLAMA3_SYSTEM_PROMPT)
        + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{question}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    stop=("\n\n",),
    answer_style="boxed",
    description="Llama-3 instruct with the reference's system prompt: '## Step N:' steps split on blank lines, "
                "'Therefore, the final answer is: $\\boxed{X}$'",
))
register(PromptFormat(
    name="qwen",
    template=(
        "<|im_start|>system\n" + _literal(QWEN_SYSTEM_PROMPT) + "<|im_end|>\n"
        "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    ),
    stop=("\n\n",),
    answer_style="boxed",
    description="Qwen2.5-Math instruct chat: steps split on blank lines, answer in \\boxed{}",
))


def get_format(name: str) -> PromptFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown prompt_format {name!r}; known: {', '.join(sorted(FORMATS))}") from None



# Small instruct models (SmolLM2-135M-Instruct, the CPU default) on GSM8K-style problems: ChatML,
# one step per line, the answer as "Therefore, the final answer is: N", taught by five worked
# examples (a 135M model follows an example far better than an instruction): the two-step
# problems first, then one of each short kind ASDiv asks most (what is left, an equal share, how
# many more). On the tuning split, greedy decoding solved 25 % with these five against 10 % with the
# first two alone (docs/cpu-models.md#the-models).
# The leaf test looks for "The answer is" / "The final answer is:" in the whole text, prompt
# included, but for "Therefore, the final answer is" in the newest step only. So the prompt may
# show the last one verbatim (it is never a newest step) and must not contain the first two --
# case matters: "the final answer is: 15" after "Therefore, " is not "The final answer is:".
# The evaluator's lenient "answer is" rule reads the number after it.
SMALL_INSTRUCT_SYSTEM = (
    "You are a helpful math tutor. Solve the problem step by step. "
    "Write each step on its own line, with its calculation. "
    "End with the line: Therefore, the final answer is: N."
)


def _chatml_turn(question: str, solution: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{solution}<|im_end|>\n"


SMALL_INSTRUCT_EXAMPLES = "".join(_chatml_turn(question, solution) for question, solution in (
    ("A baker has 12 rolls. He sells 5 rolls and then bakes 8 more. How many rolls does he have now?",
     "After selling, the baker has 12 - 5 = 7 rolls.\nAfter baking, he has 7 + 8 = 15 rolls.\n"
     "Therefore, the final answer is: 15."),
    ("A book costs $4 and a pen costs $2. How much do 3 books and 2 pens cost?",
     "The books cost 3 * 4 = 12 dollars.\nThe pens cost 2 * 2 = 4 dollars.\nTogether they cost 12 + 4 = 16 dollars.\n"
     "Therefore, the final answer is: 16."),
    ("Tom had 25 stickers. He gave 9 stickers to his sister. How many stickers does Tom have left?",
     "Tom has 25 - 9 = 16 stickers left.\nTherefore, the final answer is: 16."),
    ("36 apples are shared equally among 4 baskets. How many apples are in each basket?",
     "Each basket has 36 / 4 = 9 apples.\nTherefore, the final answer is: 9."),
    ("Sara has 14 shells and Ben has 23 shells. How many more shells does Ben have than Sara?",
     "Ben has 23 - 14 = 9 more shells than Sara.\nTherefore, the final answer is: 9."),
))
register(PromptFormat(
    name="small_instruct",
    template=(
        "<|im_start|>system\n" + SMALL_INSTRUCT_SYSTEM + "<|im_end|>\n" + SMALL_INSTRUCT_EXAMPLES
        + "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    ),
    stop=("\n",),
    answer_style="answer_is",
    description="ChatML for small instruct models (SmolLM2, the CPU default), five worked examples: "
                "one step per line, 'Therefore, the final answer is: N'",
))
