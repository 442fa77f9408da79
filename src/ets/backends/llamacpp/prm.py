"""The llama.cpp token-logit PRM: a reward read off next-token logits, ``p(good) / (p(good) + p(bad))``.

What the PRM reads, and which tokens, is its family's (:mod:`ets.backends.prm_families`): the
same texts the HTTP adapters send to a server. Siblings share their prompt up to the newest
step, so the engine's slots find most of each prompt in the cache.
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Sequence

import numpy as np

from ets.backends.base import BackendError, Context, Reward
from ets.backends.llamacpp.engine import SlotEngine
from ets.backends.llamacpp.loading import DEFAULT_FORMAT, load_model
from ets.backends.prm_families import FAMILIES, JUDGE, JUDGE_TEMPLATE, judge_text, token_logit_family
from ets.formats import PromptFormat, get_format


class TokenLogitPRM(Reward):
    """A reward model read off next-token logits: ``p(good) / (p(good) + p(bad))``.

    Modes (the PRM families of :mod:`ets.backends.prm_families` that read tokens):

    * ``"judge"`` — self-evaluation by an instruct model (the CPU default):
      the question, the earlier steps and the newest step, then "Is the newest
      step correct? Answer Yes or No."; ``Yes`` against ``No``.
    * ``"step_tag"`` — math-shepherd / llemma PRMs: the node's text, ending
      with the format's step tag (``ки``); ``+`` against ``-`` read at the tag.
    * ``"rlhflow"`` — RLHFlow PRMs: Llama-3 chat, one user turn per step (the
      first with the question), each earlier step answered ``+``; ``+``
      against ``-`` at the newest step's assistant turn.

    The default mode follows the prompt format: a format with a step tag →
    ``step_tag``; ``llama`` → ``rlhflow``; otherwise ``judge``.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, *, format: str | PromptFormat = DEFAULT_FORMAT,
                 mode: str | None = None, good: Sequence[str] | None = None, bad: Sequence[str] | None = None,
                 n_ctx: int = 4096, n_threads: int | None = None, n_slots: int = 8,
                 judge_template: str = JUDGE_TEMPLATE):
        self.format = format if isinstance(format, PromptFormat) else get_format(format)
        family = token_logit_family(self.format) if mode is None else FAMILIES.get(mode)
        if family is None or not family.reads_tokens:
            raise ValueError(f"unknown TokenLogitPRM mode {mode!r}")
        self.mode = family.name
        self._render = functools.partial(judge_text, template=judge_template) if family is JUDGE else family.render
        good = family.good if good is None else good
        bad = family.bad if bad is None else bad
        self.model = load_model(model_path)
        self.model_path = self.model.path_model
        self.engine = SlotEngine(self.model, n_ctx=n_ctx, n_slots=n_slots, n_threads=n_threads)
        self.good_ids = self._token_ids(good)
        self.bad_ids = self._token_ids(bad)
        if not self.good_ids or not self.bad_ids or set(self.good_ids) & set(self.bad_ids):
            raise BackendError(f"cannot tell the good tokens {good!r} from the bad ones {bad!r}",
                               where=self.model_path)

    def close(self) -> None:
        self.engine.close()

    def _token_ids(self, words: Sequence[str]) -> list[int]:
        ids: list[int] = []
        for w in words:
            toks = self.engine.tokenize(w, add_bos=False)
            if toks and toks[0] not in ids:
                ids.append(toks[0])
        return ids

    def render(self, context: Context) -> str:
        """The text the PRM reads for the newest step of ``context``."""
        if not context.steps:
            raise ValueError("a PRM scores the newest step: the context has none")
        return self._render(context, self.format)

    # -- protocol --

    async def score(self, contexts: Sequence[Context]) -> list[float | None]:
        if not contexts:
            return []
        return await asyncio.to_thread(self._score_locked, list(contexts))

    def _score_locked(self, contexts: list[Context]) -> list[float | None]:
        with self.engine.lock:
            return [self._score_one(c) for c in contexts]

    def _score_one(self, context: Context) -> float | None:
        if not context.steps:
            return None
        tokens = self.engine.tokenize(self.render(context))
        _, _, _, logits = self.engine.prepare(tokens)
        x = logits.astype(np.float64)
        g = x[self.good_ids]
        b = x[self.bad_ids]
        m = max(g.max(), b.max())
        pg, pb = np.exp(g - m).sum(), np.exp(b - m).sum()
        p = float(pg / (pg + pb))
        return min(1.0, max(0.0, p))


def build_llamacpp_judge(model_path: str | os.PathLike | None = None, **kwargs) -> TokenLogitPRM:
    """The CPU self-evaluation judge: ``Yes`` against ``No`` on the small instruct model."""
    kwargs.setdefault("mode", "judge")
    return TokenLogitPRM(model_path, **kwargs)
