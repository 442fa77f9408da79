"""In-process llama.cpp backends: a policy and a token-logit PRM / judge on the CPU.

Both run a GGUF model through ``llama-cpp-python``'s low-level API (one loaded
model file, shared; one llama.cpp context each, so the policy's cache and the
judge's do not evict each other).

Prefix sharing, for real
------------------------
Each context keeps a small pool of **slots** (llama.cpp sequence ids) in one
unified KV cache. A slot remembers the tokens its sequence holds. A request
for a node's text

1. finds the slot whose tokens share the longest prefix with the node's
   tokens, and evaluates only the rest (the node's parent, or the node itself
   when it was generated in this context, is usually there already);
2. forks the ``k`` children from that prefix with ``llama_memory_seq_cp``
   (cache cells are shared, not copied), samples each child's first token from
   the prefix's last logits, and decodes the children together, one token of
   each per ``llama_decode`` call (a batch of ``k`` sequences), so the prefix
   is evaluated once whatever ``k`` is and both cores work on every call.

The children's slots keep their tokens afterwards, so expanding a child later
finds its whole text in the cache but for its newest step's last token.

``Step.prompt_tokens_computed`` / ``prompt_tokens_reused`` count this per
request, as the HTTP backends do: the first sample carries the node's prompt
tokens, split into those evaluated and those found in the cache; the other
samples carry 0 (they share the first one's evaluation). A backend
re-evaluating every child's prompt would compute ``k * len(prompt)`` tokens
per expansion; the engine's totals (``_Engine.prompt_tokens_*``) and
``bench/prefix_sharing.py`` show that difference.

llama.cpp contexts are not thread-safe: every call runs in a worker thread
(``asyncio.to_thread``) under the context's lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import os
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ets.backends.base import BackendError, Context, SamplingParams, Step
from ets.formats import PromptFormat, get_format

DEFAULT_FORMAT = "small_instruct"  # the prompt format the CPU models run with

__all__ = ["DEFAULT_FORMAT", "LlamaCppPolicy", "TokenLogitPRM", "LlamaCppJudge", "load_model", "JUDGE_TEMPLATE"]


def _llama():
    try:
        import llama_cpp  # noqa: F401
        from llama_cpp import _internals  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the install
        raise BackendError(
            "llama-cpp-python is not installed; install it with: "
            "CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install --no-cache-dir 'llama-cpp-python==0.3.36'",
            where="llama_cpp",
        ) from e
    return llama_cpp


_LOAD_LOCK = threading.Lock()
_MODELS: dict[str, object] = {}
_LOG_CALLBACK = None


def _silence_llama_logs() -> None:
    """Route llama.cpp's log lines to nowhere (they go to stderr by default)."""
    global _LOG_CALLBACK
    llama_cpp = _llama()
    if _LOG_CALLBACK is None:
        @llama_cpp.llama_log_callback
        def _drop(level, text, user_data):  # pragma: no cover - C callback
            return None
        _LOG_CALLBACK = _drop
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


def load_model(model_path: str | os.PathLike | None = None):
    """Load a GGUF model once per process (policy and judge share it)."""
    if model_path is None:
        from ets.models import default_policy_model_path
        model_path = default_policy_model_path()
    path = str(Path(model_path).expanduser().resolve())
    if not os.path.isfile(path):
        raise BackendError("GGUF model file not found", where=path)
    llama_cpp = _llama()
    from llama_cpp import _internals
    with _LOAD_LOCK:
        model = _MODELS.get(path)
        if model is None:
            _silence_llama_logs()
            llama_cpp.llama_backend_init()
            params = llama_cpp.llama_model_default_params()
            params.n_gpu_layers = 0
            try:
                # verbose=True: no stdout/stderr redirection (its /dev/null handles leak); the log callback
                # above already silences llama.cpp
                model = _internals.LlamaModel(path_model=path, params=params, verbose=True)
            except ValueError as e:
                raise BackendError(f"llama.cpp could not load the model: {e}", where=path) from e
            _MODELS[path] = model
    return model


def default_threads(shared: bool = True) -> int:
    """Threads per llama.cpp context: all cores for a context that decodes alone, half of them
    (at least one) when another context decodes beside it (``shared``: the policy and an
    in-process llama.cpp PRM).

    llama.cpp's threads synchronise hundreds of times per token: with more threads than free
    cores a decode slows down tenfold and more (seen here: 2 threads on a 2-core machine with
    one core busy, 24 ms -> 320 ms a token). Override with ``n_threads`` or ``ETS_LLAMA_THREADS``."""
    env = os.environ.get("ETS_LLAMA_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = os.cpu_count() or 2
    return max(1, cores // 2) if shared else cores


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    # compare in chunks first (fast path for long shared prefixes)
    while i + 64 <= n and a[i:i + 64] == b[i:i + 64]:
        i += 64
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class _Slot:
    tokens: list[int] = field(default_factory=list)
    last_used: int = 0


class _Engine:
    """One llama.cpp context with a pool of sequence slots sharing a unified KV cache."""

    def __init__(self, model, *, n_ctx: int, n_slots: int, n_threads: int | None, n_batch: int = 512):
        llama_cpp = _llama()
        from llama_cpp import _internals
        self.llama_cpp = llama_cpp
        self.model = model
        self.vocab = model.vocab
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        n_threads = n_threads or default_threads()
        self.n_slots = n_slots
        self.n_batch = n_batch
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = n_slots
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.kv_unified = True  # one cache for every sequence: forked children share the prefix's cells
        params.no_perf = True
        try:
            self.ctx = _internals.LlamaContext(model=model, params=params, verbose=False)
        except ValueError as e:
            raise BackendError(f"llama.cpp could not create a context: {e}", where=model.path_model) from e
        self.n_ctx = llama_cpp.llama_n_ctx(self.ctx.ctx)
        self.mem = llama_cpp.llama_get_memory(self.ctx.ctx)
        self.batch = llama_cpp.llama_batch_init(max(n_batch, n_slots), 0, 1)
        self.slots = [_Slot() for _ in range(n_slots)]
        self.clock = 0
        self.lock = threading.Lock()
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        # totals, for benchmarks and tests
        self.prompt_tokens_computed = 0
        self.prompt_tokens_reused = 0
        self.decode_calls = 0

    def close(self) -> None:
        if getattr(self, "batch", None) is not None:
            self.llama_cpp.llama_batch_free(self.batch)
            self.batch = None
        if getattr(self, "ctx", None) is not None:
            self.ctx.close()
            self.ctx = None

    def __del__(self):  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass

    # --- text <-> tokens -------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        return self.model.tokenize(text.encode("utf-8"), self.add_bos if add_bos is None else add_bos, True)

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self.llama_cpp.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.llama_cpp.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
        return buf.raw[:n]

    def is_eog(self, token: int) -> bool:
        return bool(self.llama_cpp.llama_vocab_is_eog(self.vocab, token))

    # --- cache bookkeeping -----------------------------------------------

    def _touch(self, sid: int) -> None:
        self.clock += 1
        self.slots[sid].last_used = self.clock

    def cells_used(self) -> int:
        """Cells the slots hold: the size of the union of their token prefixes (shared cells once)."""
        lists = sorted(s.tokens for s in self.slots if s.tokens)
        total = sum(len(t) for t in lists)
        for a, b in zip(lists, lists[1:]):
            total -= _lcp(a, b)
        return total

    def _clear(self, sid: int) -> None:
        self.llama_cpp.llama_memory_seq_rm(self.mem, sid, -1, -1)
        self.slots[sid].tokens = []

    def _truncate(self, sid: int, n: int) -> None:
        slot = self.slots[sid]
        if n < len(slot.tokens):
            if not self.llama_cpp.llama_memory_seq_rm(self.mem, sid, n, -1):  # pragma: no cover
                self._clear(sid)
                n = 0
            del slot.tokens[n:]

    def _lru(self, exclude: set[int]) -> int:
        free = [i for i in range(self.n_slots) if i not in exclude]
        if not free:
            raise BackendError(f"no free llama.cpp sequence slot (n_slots={self.n_slots})")
        empty = [i for i in free if not self.slots[i].tokens]
        if empty:
            return empty[0]
        return min(free, key=lambda i: self.slots[i].last_used)

    def _make_room(self, need: int, protect: set[int]) -> None:
        """Evict least recently used slots until ``need`` more cells fit."""
        while self.cells_used() + need > self.n_ctx:
            victims = [i for i in range(self.n_slots) if i not in protect and self.slots[i].tokens]
            if not victims:
                raise BackendError(
                    f"the llama.cpp context is too small: {need} more tokens do not fit in n_ctx={self.n_ctx}; "
                    "raise n_ctx")
            self._clear(min(victims, key=lambda i: self.slots[i].last_used))

    # --- decoding --------------------------------------------------------

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        """Decode (token, pos, seq, want_logits) items as one batch."""
        b = self.batch
        for i, (tok, pos, seq, logits) in enumerate(items):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits
        b.n_tokens = len(items)
        rc = self.llama_cpp.llama_decode(self.ctx.ctx, b)
        self.decode_calls += 1
        if rc != 0:
            raise BackendError(f"llama_decode failed with code {rc} (KV cache full? raise n_ctx)")

    def _logits(self, i: int) -> np.ndarray:
        ptr = self.llama_cpp.llama_get_logits_ith(self.ctx.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def prepare(self, tokens: list[int], protect: set[int] | None = None) -> tuple[int, int, int, np.ndarray]:
        """Put ``tokens`` into a slot, evaluating only what no slot holds.

        Returns ``(slot, computed, reused, last_logits)``."""
        if not tokens:
            raise BackendError("cannot evaluate an empty prompt")
        protect = set(protect or ())
        best, best_key = None, None
        for sid, slot in enumerate(self.slots):
            if sid in protect:
                continue
            n = _lcp(slot.tokens, tokens) if slot.tokens else 0
            # longest shared prefix; then the slot that loses least when trimmed; then the most recent
            key = (n, -(len(slot.tokens) - n), slot.last_used)
            if best_key is None or key > best_key:
                best, best_key = sid, key
        if best is None:
            raise BackendError(f"no free llama.cpp sequence slot (n_slots={self.n_slots})")
        best_lcp = best_key[0]
        reuse = min(best_lcp, len(tokens) - 1)  # the last token is always evaluated: its logits are needed
        src = self.slots[best]
        if reuse <= 0:
            target, reuse = self._lru(protect), 0
            self._clear(target)
        elif len(src.tokens) - reuse <= 1 or best_lcp == len(src.tokens):
            target = best  # nothing worth keeping would be lost: extend / trim in place
            self._truncate(target, reuse)
        else:
            target = self._lru(protect | {best})
            self._clear(target)
            self.llama_cpp.llama_memory_seq_cp(self.mem, best, target, 0, reuse)
            self.slots[target].tokens = list(src.tokens[:reuse])
        self._touch(target)
        self._make_room(len(tokens) - reuse, protect | {target, best})
        rest = tokens[reuse:]
        slot = self.slots[target]
        for start in range(0, len(rest), self.n_batch):
            chunk = rest[start:start + self.n_batch]
            base = reuse + start
            last = start + len(chunk) == len(rest)
            self._decode([(t, base + j, target, last and j == len(chunk) - 1) for j, t in enumerate(chunk)])
            slot.tokens.extend(chunk)
        logits = self._logits((len(rest) - 1) % self.n_batch)  # index of the last token in the last chunk
        self.prompt_tokens_computed += len(rest)
        self.prompt_tokens_reused += reuse
        return target, len(rest), reuse, logits

    def fork(self, src: int, n: int, protect: set[int]) -> list[int]:
        """``n`` slots holding ``src``'s tokens (cells shared through llama_memory_seq_cp)."""
        out: list[int] = []
        for _ in range(n):
            sid = self._lru(protect | {src} | set(out))
            self._clear(sid)
            self.llama_cpp.llama_memory_seq_cp(self.mem, src, sid, 0, len(self.slots[src].tokens))
            self.slots[sid].tokens = list(self.slots[src].tokens)
            self._touch(sid)
            out.append(sid)
        return out


def _sample(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    x = logits.astype(np.float64) / temperature
    x -= x.max()
    p = np.exp(x)
    c = np.cumsum(p)
    return int(np.searchsorted(c, rng.random() * c[-1], side="right").clip(0, len(c) - 1))


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
        self.key = [seed & 0xFFFFFFFF, zlib.crc32(text.encode("utf-8"))]
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.base: int | None = None
        self.logits: np.ndarray | None = None
        self.computed = self.reused = 0
        self.started = 0  # children forked so far
        self.results: list[Step | None] = [None] * n

    def rng(self, index: int) -> np.random.Generator:
        # one generator per child: its samples do not depend on how children were scheduled
        return np.random.default_rng(self.key + [index])


@dataclass
class _Active:
    request: _Request
    index: int
    child: _Child
    rng: np.random.Generator


class LlamaCppPolicy:
    """The policy, in process: ``k`` samples of the next step sharing the node's prefix.

    A scheduler thread owns the llama.cpp context. It evaluates each request's
    prompt once (what the cache does not already hold), forks its children
    from it, and decodes every running child of every request together, one
    token each per ``llama_decode`` call: up to ``n_batch_seqs`` sequences a
    batch (continuous batching; the search expands all nodes of a depth at
    once). ``n_slots`` sequence slots keep recent prefixes cached; ``n_ctx``
    is the size of the one KV cache all slots share.

    ``share_prefix=False`` is the baseline of ``bench/prefix_sharing.py``:
    every child evaluates its whole prompt in an emptied cache, alone.
    """

    def __init__(self, model_path: str | os.PathLike | None = None, *, n_ctx: int = 8192,
                 n_threads: int | None = None, seed: int = 0, n_batch_seqs: int = 32,
                 n_slots: int | None = None, share_prefix: bool = True):
        self.model = load_model(model_path)
        self.model_path = self.model.path_model
        self.n_batch_seqs = max(1, int(n_batch_seqs))
        self.share_prefix = share_prefix
        n_slots = n_slots or min(64, 2 * self.n_batch_seqs + 4)
        if n_slots < 2:
            raise ValueError("n_slots must be at least 2 (a prompt and a child)")
        self.engine = _Engine(self.model, n_ctx=n_ctx, n_slots=n_slots, n_threads=n_threads)
        self.seed = seed
        self._cv = threading.Condition()
        self._pending: list[_Request] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def close(self) -> None:
        with self._cv:
            self._closed = True
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
            return await asyncio.to_thread(self._generate_unshared, context.text, n, params)
        return await asyncio.wrap_future(self.submit(context.text, n, params))

    def submit(self, text: str, n: int, params: SamplingParams) -> concurrent.futures.Future:
        """Queue a request for the scheduler thread; the future gives its ``n`` steps."""
        seed = self.seed if params.seed is None else params.seed
        req = _Request(text, self.engine.tokenize(text), n, params, seed)
        with self._cv:
            if self._closed:
                raise BackendError("the llama.cpp policy is closed", where=self.model_path)
            self._pending.append(req)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="ets-llamacpp-policy", daemon=True)
                self._thread.start()
            self._cv.notify_all()
        return req.future

    # -- the baseline: no sharing --

    def _generate_unshared(self, text: str, n: int, params: SamplingParams) -> list[Step]:
        eng = self.engine
        out: list[Step] = []
        with eng.lock:
            for i in range(n):
                for sid in range(eng.n_slots):
                    eng._clear(sid)
                req = _Request(text, eng.tokenize(text), 1, params, self.seed if params.seed is None else params.seed)
                req.key.append(i)
                base, computed, _, logits = eng.prepare(req.tokens)
                sid = eng.fork(base, 1, {base})[0]
                act = [_Active(req, 0, _Child(slot=sid, token=0), req.rng(0))]
                act[0].child.token = _sample(logits, params.temperature, act[0].rng)
                while act:
                    eng._make_room(len(act), {base, sid})
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
                        eng._make_room(len(active), busy)
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
        """Evaluate new prompts and fork children while there is room in the batch and the slots."""
        eng = self.engine
        for req in admitted:
            busy = {a.child.slot for a in active} | {r.base for r in admitted if r.base is not None}
            if len(active) >= self.n_batch_seqs or eng.n_slots - len(busy) < (1 if req.base is not None else 2):
                break
            if req.base is None:
                req.base, req.computed, req.reused, req.logits = eng.prepare(req.tokens, protect=busy)
                busy.add(req.base)
            while req.started < req.n and len(active) < self.n_batch_seqs and eng.n_slots - len(busy) >= 1:
                sid = eng.fork(req.base, 1, busy)[0]
                busy.add(sid)
                rng = req.rng(req.started)
                child = _Child(slot=sid, token=_sample(req.logits, req.params.temperature, rng))
                active.append(_Active(req, req.started, child, rng))
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
            eng._decode([(a.child.token, len(eng.slots[a.child.slot].tokens), a.child.slot, True) for a in still])
            for i, a in enumerate(still):
                eng.slots[a.child.slot].tokens.append(a.child.token)
                eng._touch(a.child.slot)
                a.child.token = _sample(eng._logits(i), a.request.params.temperature, a.rng)
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


# ---------------------------------------------------------------------------
# token-logit PRM / judge

JUDGE_TEMPLATE = (
    "<|im_start|>system\nYou are a careful math teacher who checks a student's work.<|im_end|>\n"
    "<|im_start|>user\nProblem: {question}\n\nThe student's solution so far:\n{previous}"
    "\nThe student's newest step:\n{step}\n\n"
    "Is the newest step correct? Answer Yes or No.<|im_end|>\n<|im_start|>assistant\n"
)

RLHFLOW_USER = "<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>"
RLHFLOW_ASSISTANT = "<|start_header_id|>assistant<|end_header_id|>\n\n"


class TokenLogitPRM:
    """A reward model read off next-token logits: ``p(good) / (p(good) + p(bad))``.

    Modes:

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
        if mode is None:
            mode = "step_tag" if self.format.step_tag else ("rlhflow" if self.format.name == "llama" else "judge")
        if mode not in ("judge", "step_tag", "rlhflow"):
            raise ValueError(f"unknown TokenLogitPRM mode {mode!r}")
        self.mode = mode
        if good is None:
            good = ("Yes", "yes", " Yes") if mode == "judge" else ("+",)
        if bad is None:
            bad = ("No", "no", " No") if mode == "judge" else ("-",)
        self.judge_template = judge_template
        self.model = load_model(model_path)
        self.model_path = self.model.path_model
        self.engine = _Engine(self.model, n_ctx=n_ctx, n_slots=n_slots, n_threads=n_threads)
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

    # -- the text the PRM reads --

    def render(self, context: Context) -> str:
        steps = list(context.steps)
        if not steps:
            raise ValueError("a PRM scores the newest step: the context has none")
        if self.mode == "judge":
            prev = "".join(_strip_stops(s, self.format.stop) + "\n" for s in steps[:-1]) or "(nothing yet)\n"
            return self.judge_template.format(question=context.question.strip(), previous=prev,
                                              step=_strip_stops(steps[-1], self.format.stop))
        if self.mode == "step_tag":
            tag = self.format.step_tag or "ки"
            text = context.text.rstrip()
            return text if text.endswith(tag) else text + " " + tag
        # rlhflow
        parts = ["<|begin_of_text|>"]
        for i, s in enumerate(steps):
            content = _strip_stops(s, self.format.stop).strip()
            if i == 0:
                content = context.question.strip() + " " + content
            parts.append(RLHFLOW_USER.format(content=content))
            parts.append(RLHFLOW_ASSISTANT)
            if i < len(steps) - 1:
                parts.append("+<|eot_id|>")
        return "".join(parts)

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


def LlamaCppJudge(model_path: str | os.PathLike | None = None, **kwargs) -> TokenLogitPRM:
    """The CPU self-evaluation judge: ``Yes`` against ``No`` on the small instruct model."""
    kwargs.setdefault("mode", "judge")
    return TokenLogitPRM(model_path, **kwargs)


def _strip_stops(step: str, stops: Sequence[str]) -> str:
    s = step
    for d in stops:
        if d and d.strip() and s.rstrip().endswith(d.strip()):
            s = s.rstrip()[: -len(d.strip())]
    return s.strip()
