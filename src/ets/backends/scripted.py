"""Scripted backends: deterministic stand-ins for a policy and a PRM.

For tests where the model is not the thing under test, and for a demo run
with no model at all (:func:`toy_world`).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Callable, Sequence

import numpy as np

from ets.backends.base import Context, Policy, Reward, SamplingParams, Step


class ScriptedPolicy(Policy):
    """``step_fn(question, steps, k) -> str`` is sample ``k`` of the step after ``steps``;
    ``token_fn(text) -> int`` counts tokens; each call waits ``delay`` seconds, as a slow model would."""

    def __init__(self, step_fn: Callable[[str, list[str], int], str], token_fn: Callable[[str], int] | None = None,
                 delay: float = 0.0):
        self.step_fn = step_fn
        self.token_fn = token_fn or (lambda text: len(text.split()))
        self.delay = delay
        self.requests = 0

    async def generate(self, context: Context, n: int, params: SamplingParams) -> list[Step]:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        out = []
        for k in range(n):
            text = self.step_fn(context.question, list(context.steps), k)
            out.append(Step(text=text, num_tokens=self.token_fn(text)))
        return out

    async def count_tokens(self, text: str) -> int:
        return self.token_fn(text)


class ScriptedReward(Reward):
    """``score_fn(question, steps) -> float`` scores the newest of ``steps``."""

    def __init__(self, score_fn: Callable[[str, list[str]], float | None]):
        self.score_fn = score_fn

    async def score(self, contexts: Sequence[Context]) -> list[float | None]:
        return [self.score_fn(c.question, list(c.steps)) for c in contexts]


def _unit(*parts: str) -> float:
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def toy_world(answer_depth: int = 3, delay: float = 0.0) -> tuple[ScriptedPolicy, ScriptedReward]:
    """A made-up policy and PRM that need no model: steps are arithmetic-sounding
    sentences, a trajectory answers after about ``answer_depth`` steps, and the
    PRM's score is a hash of the path. Only for demos and tests of the machinery.
    ``delay``: seconds each policy call waits."""
    words = ["add", "the", "two", "numbers", "then", "multiply", "by", "three", "so", "we", "get", "x"]

    def step_fn(question: str, steps: list[str], k: int) -> str:
        key = (question, *steps, str(k))
        body = " ".join(words[int(_unit("w", *key, str(i)) * len(words))] for i in range(3 + int(_unit("n", *key) * 8)))
        if len(steps) + 1 >= answer_depth and _unit("a", *key) < 0.5:
            return f"{body}. The answer is: {int(_unit('v', *key) * 10)}\n"
        return f"{body}.\n"

    def score_fn(question: str, steps: list[str]) -> float:
        return round(_unit("s", question, *steps), 6)

    return ScriptedPolicy(step_fn, delay=delay), ScriptedReward(score_fn)


class HashingEmbedder:
    """Bag-of-words embeddings by feature hashing: a model-free embedder for the
    toy world and tests (identical word multisets embed identically)."""

    def __init__(self, dim: int = 64):
        self.dim = dim

    def encode(self, sentences: list[str], **_: object):
        out = np.zeros((len(sentences), self.dim))
        for row, sentence in enumerate(sentences):
            for word in sentence.lower().split():
                out[row, int(_unit("e", word) * self.dim)] += 1.0
            out[row, 0] += 1e-6  # never an all-zero vector (cosine distance needs a norm)
        return out
