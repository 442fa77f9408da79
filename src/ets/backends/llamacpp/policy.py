"""The llama.cpp policy: ``k`` samples of a node's next step, sharing the node's prefix, batched.

Prefix sharing, for real
------------------------
A request for a node's text

1. finds the engine slot whose tokens share the longest prefix with the node's
   tokens, and evaluates only the rest (the node's parent, or the node itself
   when it was generated in this context, is usually there already);
2. forks the ``k`` children from that prefix (cache cells are shared, not
   copied), samples each child's first token from the prefix's last logits, and
   decodes the children together, one token of each per ``llama_decode`` call (a
   batch of ``k`` sequences), so the prefix is evaluated once whatever ``k`` is
   and both cores work on every call;
3. decodes children that have sampled the same tokens so far as one sequence:
   they are in one state, so one batch row serves them all, and they part at
   the first token their samples differ in (``SlotEngine.decode_next``).

Every child draws from a random stream of its own, keyed by the run's seed,
its node's place in the search (``SamplingParams.stream``) and its index,
never by the text: two nodes with the same text get independent children.
Children share a batch row only while their own draws agree.

The children's slots keep their tokens afterwards, so expanding a child later
finds its whole text in the cache but for its newest step's last token.

``Step.prompt_tokens_computed`` / ``prompt_tokens_reused`` count this per
request, as the HTTP backends do: the first sample carries the node's prompt
tokens, split into those evaluated and those found in the cache; the other
samples carry 0 (they share the first one's evaluation). A backend
re-evaluating every child's prompt would compute ``k * len(prompt)`` tokens
per expansion; the engine's totals (``SlotEngine.prompt_tokens_*``) and
``bench/prefix_sharing.py`` show that difference.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import zlib
from dataclasses import dataclass, field

import numpy as np

from ets.backends.base import BackendError, Context, Policy, SamplingParams, Step
from ets.backends.llamacpp.engine import SlotEngine
from ets.backends.llamacpp.loading import load_model


MAX_SLOTS = 256  # llama.cpp's limit on sequences in a context (LLAMA_MAX_SEQ)
_SAMPLE_BLOCK = 1024  # vocabulary entries a block of the two-level inverse CDF


def _sample(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """One token from ``softmax(logits / temperature)`` by the inverse CDF of one uniform draw; greedy at 0.

    Two levels, so a 150k-token vocabulary costs one vectorised float32 exponential: a block's total
    mass first, then the running sum inside the one block the draw falls in. ``bench/sampling.py``:
    2.8x faster than one float64 running sum over the whole vocabulary (0.3 ms a token against 0.8 on
    Qwen's vocabulary, where a token of batched decoding costs about 15 ms), the same token for the same
    draw unless the draw falls within float32 rounding of a boundary between two tokens."""
    if temperature <= 0:
        return int(np.argmax(logits))
    x = logits / np.float32(temperature)
    # floored at e^-80: below float32's normal range (e^-87) arithmetic turns ~10x slower; the floor
    # gives the unlikeliest tokens at most 10^-29 of mass between them
    p = np.exp(np.maximum(x - x.max(), np.float32(-80.0)))
    block_mass = np.cumsum(np.add.reduceat(p, np.arange(0, len(p), _SAMPLE_BLOCK)), dtype=np.float64)
    u = rng.random() * block_mass[-1]
    b = min(int(np.searchsorted(block_mass, u, side="right")), len(block_mass) - 1)
    start = b * _SAMPLE_BLOCK
    inside = np.cumsum(p[start:start + _SAMPLE_BLOCK], dtype=np.float64)
    u -= block_mass[b - 1] if b else 0.0
    return start + min(int(np.searchsorted(inside, u, side="right")), len(inside) - 1)


@dataclass
class _Child:
    slot: int
    token: int  # sampled, not yet evaluated
    generated: list[int] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    text: str = ""
    finish: str | None = None


class _Request:
    """One ``generate`` call inside the scheduler."""

    def __init__(self, text: str, tokens: list[int], n: int, params: SamplingParams, seed: int):
        self.tokens = tokens
        self.n = n
        self.params = params
        self.stops = tuple(s for s in params.stop if s)
        self.max_tokens = max(1, params.max_tokens)
        # the node's own stream (SamplingParams.stream): keyed by the text, two nodes on one path would
        # draw the same children; the text only for callers outside the search, which give no stream
        stream = zlib.crc32(text.encode("utf-8")) if params.stream is None else params.stream
        self.key = [seed & 0xFFFFFFFF, stream]
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.base: int | None = None
        self.logits: np.ndarray | None = None
        self.computed = self.reused = 0
        self.started = 0  # children forked so far
        self.results: list[Step | None] = [None] * n

    def rng(self, index: int) -> np.random.Generator:
        # one generator per child: its samples depend on its node and index, not on how children were
        # scheduled nor on which other requests share its batch rows
        return np.random.default_rng(self.key + [index])


@dataclass
class _Active:
    request: _Request
    index: int
    child: _Child
    rng: np.random.Generator


class LlamaCppPolicy(Policy):
    """The policy, in process: ``k`` samples of the next step sharing the node's prefix.

    A scheduler thread owns the llama.cpp context. It evaluates each request's
    prompt once (what the cache does not already hold), forks its children
    from it, and decodes every running child of every request together, one
    token each per ``llama_decode`` call: up to ``n_batch_seqs`` rows a batch,
    children in one state sharing a row (continuous batching; the search
    expands all nodes of a depth at once). ``n_slots`` sequence slots keep
    recent prefixes cached and hold the running children; ``n_ctx`` is the
    size of the one KV cache all slots share.

    ``share_prefix=False``: :meth:`generate` runs :meth:`generate_unshared`, the baseline
    of ``bench/prefix_sharing.py``; ``share_rows=False``: a batch row for every child, as
    ``bench/search_throughput.py``'s baselines decode.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, *, n_ctx: int = 8192,
                 n_threads: int | None = None, seed: int = 0, n_batch_seqs: int = 32,
                 n_slots: int | None = None, share_prefix: bool = True, share_rows: bool = True):
        self.model = load_model(model_path)
        self.model_path = self.model.path_model
        self.n_batch_seqs = max(1, int(n_batch_seqs))
        self.share_prefix = share_prefix
        # children in one state share a batch row, so more children than rows run at once
        n_slots = n_slots or min(MAX_SLOTS, (4 if share_rows else 2) * self.n_batch_seqs + 4)
        if n_slots < 2:
            raise ValueError("n_slots must be at least 2 (a prompt and a child)")
        self.engine = SlotEngine(self.model, n_ctx=n_ctx, n_slots=n_slots, n_threads=n_threads,
                                 share_rows=share_rows)
        self.seed = seed
        self._cv = threading.Condition()
        self._pending: list[_Request] = []
        self._held: list[_Request] = []  # generate's requests of this event-loop iteration (_release)
        self._thread: threading.Thread | None = None
        self._closed = False

    def close(self) -> None:
        with self._cv:
            self._closed = True
            for req in self._held:
                req.future.set_exception(BackendError("the llama.cpp policy was closed", where=self.model_path))
            self._held.clear()
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self.engine.lock:
            self.engine.close()

    # -- protocol --

    async def count_tokens(self, text: str) -> int:
        return len(self.engine.tokenize(text))

    async def generate(self, context: Context, n: int, params: SamplingParams) -> list[Step]:
        if n <= 0:
            return []
        if not self.share_prefix:
            return await asyncio.to_thread(self.generate_unshared, context.text, n, params)
        return await asyncio.wrap_future(self.submit(context.text, n, params, hold=True))

    def submit(self, text: str, n: int, params: SamplingParams, *, hold: bool = False) -> concurrent.futures.Future:
        """Queue a request for the scheduler thread; the future gives its ``n`` steps.

        ``hold`` (in an event loop): the request waits for the end of the loop's iteration, and goes to
        the scheduler with every other request made in it. The search makes a round's requests in one
        iteration; admitted as they trickle in, which requests share a decoding batch would depend on
        thread timing, and llama.cpp's logits move with a batch's make-up (enough to flip a sampled token
        now and then), so one problem's search would not give the same answers twice."""
        req = self._request(text, n, params)
        with self._cv:
            if self._closed:
                raise BackendError("the llama.cpp policy is closed", where=self.model_path)
            if hold:
                self._held.append(req)
                asyncio.get_running_loop().call_soon(self._release)  # one a request: later ones find none held
            else:
                self._pending.append(req)
                self._wake()
        return req.future

    def _release(self) -> None:
        with self._cv:
            if self._held:
                self._pending.extend(self._held)
                self._held.clear()
                self._wake()

    def _wake(self) -> None:  # with self._cv held
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="ets-llamacpp-policy", daemon=True)
            self._thread.start()
        self._cv.notify_all()

    def _request(self, text: str, n: int, params: SamplingParams) -> _Request:
        return _Request(text, self.engine.tokenize(text), n, params, self.seed if params.seed is None else params.seed)

    # -- the baseline: no sharing --

    def generate_unshared(self, text: str, n: int, params: SamplingParams) -> list[Step]:
        """``n`` samples after ``text`` with no prefix sharing: the baseline ``bench/prefix_sharing.py``
        measures sharing against. Each sample evaluates the whole prompt in an emptied cache and
        decodes alone (what a backend without a prefix cache does: ``n`` prompt evaluations)."""
        eng = self.engine
        out: list[Step] = []
        with eng.lock:
            for i in range(n):
                for sid in range(eng.n_slots):
                    eng.clear(sid)
                req = self._request(text, 1, params)
                req.key.append(i)
                base, computed, _, logits = eng.prepare(req.tokens)
                sid = eng.fork(base, 1, {base})[0]
                act = [_Active(req, 0, _Child(slot=sid, token=0), req.rng(0))]
                act[0].child.token = _sample(logits, params.temperature, act[0].rng)
                while act:
                    eng.make_room(len(act), {base, sid})
                    act = self._step(act)
                c = req.results[0]
                out.append(Step(text=c.text, num_tokens=c.num_tokens, finish_reason=c.finish_reason,
                                prompt_tokens_computed=computed, prompt_tokens_reused=0))
        return out

    # -- the scheduler --

    def _loop(self) -> None:
        eng = self.engine
        active: list[_Active] = []
        admitted: list[_Request] = []  # requests whose children are not all forked yet (their base is busy)
        while True:
            with self._cv:
                while not self._pending and not active and not admitted and not self._closed:
                    self._cv.wait()
                if self._closed and not self._pending and not active and not admitted:
                    return
                admitted.extend(self._pending)
                self._pending.clear()
            try:
                with eng.lock:
                    self._admit(admitted, active)
                    admitted = [r for r in admitted if r.started < r.n]
                    if active:
                        busy = {a.child.slot for a in active} | {r.base for r in admitted if r.base is not None}
                        eng.make_room(len(active), busy)
                        active = self._step(active)
            except BaseException as e:  # noqa: BLE001 - handed to every waiting request
                failed = {id(a.request): a.request for a in active}
                failed.update({id(r): r for r in admitted})
                for r in failed.values():
                    if not r.future.done():
                        r.future.set_exception(e if isinstance(e, Exception) else BackendError(str(e)))
                active, admitted = [], []
                if not isinstance(e, Exception):
                    raise

    def _admit(self, admitted: list[_Request], active: list[_Active]) -> None:
        """Evaluate new prompts and fork children while there is room in the batch and the slots.

        The batch's room is counted in rows: children in one state (same tokens, same next token) share
        a row (:meth:`SlotEngine.decode_next`), so a request's children forked together, most of them
        opening alike at a low temperature, take a row for each distinct first token."""
        eng = self.engine
        rows = len(eng.rows([(a.child.slot, a.child.token) for a in active])[0])
        for req in admitted:
            busy = {a.child.slot for a in active} | {r.base for r in admitted if r.base is not None}
            if rows >= self.n_batch_seqs or eng.n_slots - len(busy) < (1 if req.base is not None else 2):
                break
            if req.base is None:
                req.base, req.computed, req.reused, req.logits = eng.prepare(req.tokens, protect=busy)
                busy.add(req.base)
            opened: set[int] = set()  # first tokens of the children forked in this call: a row each
            while req.started < req.n and eng.n_slots - len(busy) >= 1:
                rng = req.rng(req.started)
                token = _sample(req.logits, req.params.temperature, rng)
                if token not in opened:
                    if rows >= self.n_batch_seqs:
                        break  # this child waits; its generator is made afresh when it is forked
                    opened.add(token)
                    rows += 1
                sid = eng.fork(req.base, 1, busy)[0]
                busy.add(sid)
                active.append(_Active(req, req.started, _Child(slot=sid, token=token), rng))
                req.started += 1
            if req.started < req.n:
                break  # first come, first served: the rest waits for room
            req.logits = None

    def _step(self, active: list[_Active]) -> list[_Active]:
        """Account each running child's sampled token, then decode the unfinished ones as one batch."""
        eng = self.engine
        still: list[_Active] = []
        for a in active:
            c, req = a.child, a.request
            c.generated.append(c.token)
            if eng.is_eog(c.token):
                c.finish = "stop"
            else:
                c.data.extend(eng.piece(c.token))
                c.text = c.data.decode("utf-8", errors="ignore")
                cut = _find_stop(c.text, req.stops, _content_start(c.text))
                if cut is not None:
                    c.text, c.finish = c.text[:cut], "stop"
                elif len(c.generated) >= req.max_tokens:
                    c.text, c.finish = c.data.decode("utf-8", errors="replace"), "length"
            if c.finish is None:
                still.append(a)
                continue
            first = a.index == 0
            req.results[a.index] = Step(
                text=c.text, num_tokens=len(c.generated), finish_reason=c.finish,
                prompt_tokens_computed=req.computed if first else 0,
                prompt_tokens_reused=req.reused if first else 0,
            )
            if req.started == req.n and all(r is not None for r in req.results) and not req.future.done():
                req.future.set_result(list(req.results))
        if still:
            logits = eng.decode_next([(a.child.slot, a.child.token) for a in still])
            for a, row in zip(still, logits):
                a.child.token = _sample(row, a.request.params.temperature, a.rng)
        return still


def _content_start(text: str) -> int:
    """Where a step's content starts: a delimiter before it (a blank line) does not end the step,
    so a model writing blank lines between its steps does not make empty steps."""
    n = len(text) - len(text.lstrip())
    return n if n < len(text) else len(text) + 1


def _find_stop(text: str, stops: tuple[str, ...], start: int = 0) -> int | None:
    """End index of the earliest stop string in ``text`` at or after ``start`` (kept), or None."""
    best = None
    for s in stops:
        i = text.find(s, start)
        if i >= 0 and (best is None or i + len(s) < best):
            best = i + len(s)
    return best


def matched_stop(text: str, stops: tuple[str, ...] | list[str]) -> str | None:
    """The stop string a step that ended with ``finish_reason == "stop"`` ended on (the scheduler keeps it
    at the end of the text), or None when it ended at the end of text (an end-of-generation token)."""
    stops = tuple(s for s in stops if s)
    end = _find_stop(text, stops, _content_start(text))
    if end != len(text):
        return None
    start = _content_start(text)
    return next((s for s in stops if text.endswith(s) and text.find(s, start) + len(s) == end), None)
