"""The contracts between the search loop and the models.

The loop never talks to a model directly: it hands a :class:`Context` (the
question, the formatted root prompt and the steps so far) to a policy, which
samples next steps, and to a reward model, which scores the newest step.
Every backend (scripted, in-process llama.cpp, HTTP servers) implements these
protocols, so the loop is the same whatever serves the models. A backend
subclasses :class:`Policy` or :class:`Reward` to inherit the no-op lifecycle
steps (:class:`Lifecycle`) it does not need.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Context:
    """One node of the search as the models see it."""

    question: str
    prompt: str  # the root text: the question after the prompt format
    steps: tuple[str, ...] = ()  # every step so far, oldest first; each ends with its delimiter

    @property
    def text(self) -> str:
        """The node's full text: the prompt followed by its steps."""
        return self.prompt + "".join(self.steps)

    def child(self, step: str) -> "Context":
        return Context(self.question, self.prompt, self.steps + (step,))


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one step: validated once, in the config."""

    temperature: float = 1.0
    max_tokens: int = 256  # per step (the reference's max_step_tokens)
    stop: tuple[str, ...] = ()  # the step delimiter(s) of the prompt format
    seed: int | None = None
    # the random stream of this one expansion (draw_stream: the node's place in the search), so two
    # nodes with the same text still sample independently; None (callers outside the search): the
    # backend's own key (the text in process, seed + i over HTTP)
    stream: int | None = None


def draw_stream(problem_id: Any, node_id: int) -> int:
    """The random stream of a node's expansion: a stable 64-bit hash of the problem and the node, never
    of the node's text (two trajectories that agree so far must still be able to part) nor of when the
    request arrives (a run's results do not depend on scheduling)."""
    return _hash64("stream", repr(problem_id), str(node_id))


def selection_stream(problem_id: Any, depth: int) -> int:
    """The random stream of a selection rule that draws (particle filtering's resampling) at one depth of a
    problem's search: keyed, as :func:`draw_stream`, by the place in the search, never by timing."""
    return _hash64("selection", repr(problem_id), str(depth))


def request_seed(seed: int, stream: int | None, index: int = 0) -> int:
    """The seed a server gets for sample ``index`` of an expansion: ``seed + index`` without a stream, else a
    31-bit hash of (seed, stream, index), which every server's seed field takes (llama.cpp's is 32-bit)."""
    if stream is None:
        return int(seed) + index
    return _hash64("seed", str(int(seed)), str(stream), str(index)) & 0x7FFFFFFF


def _hash64(*parts: str) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True)
class Step:
    """One sampled step.

    ``text`` includes the step delimiter when generation stopped on it, so the
    concatenation of a node's steps is exactly what the policy saw.
    ``prompt_tokens_computed`` / ``prompt_tokens_reused`` report the prefix
    work of the request that produced the step (a backend that evaluates the
    shared prefix once attributes it to the first sample of the batch).
    """

    text: str
    num_tokens: int
    finish_reason: str = "stop"  # "stop" (delimiter or end of text) or "length"
    prompt_tokens_computed: int = 0
    prompt_tokens_reused: int = 0


class Lifecycle(Protocol):
    """What a run does with a backend around its searches. Every step is a no-op unless the
    backend overrides it, so a backend that needs none of them inherits these."""

    async def start(self) -> None:
        """Before the first problem: fail fast when the model is not there (a model server that
        does not answer, or serves another model). A backend also starts on first use."""

    async def aclose(self) -> None:
        """Before the event loop ends: close what the backend holds in it (HTTP connections).
        The backend still works in a later loop; in-process models keep running."""

    def close(self) -> None:
        """Free the model (an in-process llama.cpp context); the backend is unusable afterwards."""


@runtime_checkable
class Policy(Lifecycle, Protocol):
    """Samples next steps for a node; all ``n`` samples share its prefix."""

    async def generate(self, context: Context, n: int, params: SamplingParams) -> list[Step]:
        """Return ``n`` samples of the step after ``context`` (in sample order)."""
        ...

    async def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as the policy's tokenizer counts them (the root prompt)."""
        ...


@runtime_checkable
class Reward(Lifecycle, Protocol):
    """Scores the newest step of each context (a process reward model)."""

    async def score(self, contexts: Sequence[Context]) -> list[float | None]:
        """One score per context, for its last step; ``None`` when the PRM gave none."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Sentence embeddings, as ``sentence_transformers.SentenceTransformer`` has them."""

    def encode(self, sentences: list[str]) -> np.ndarray: ...


@dataclass
class Backends:
    """What a run searches with: a policy, a reward model, and the embedder when ETS's diversity term needs one."""

    policy: Policy
    reward: Reward
    embedder: Embedder | None = None
    description: dict = field(default_factory=dict)  # what serves the models, for run.json

    async def start(self) -> None:
        """Start the policy and the reward: unreachable servers, or the wrong model, stop a run here."""
        for model in (self.policy, self.reward):
            await model.start()

    async def aclose(self) -> None:
        """Close the policy's and the reward's connections in the running event loop."""
        for model in (self.policy, self.reward):
            await model.aclose()

    def close(self) -> None:
        """Free the policy's and the reward's models."""
        for model in (self.policy, self.reward):
            model.close()


@dataclass
class BackendError(RuntimeError):
    """A model server or backend failed in a way the user must fix.

    ``where`` names the thing to look at (a URL, a model path)."""

    message: str
    where: str = ""
    details: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.message} ({self.where})" if self.where else self.message
