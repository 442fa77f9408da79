"""The KV-slot engine: one llama.cpp context whose unified KV cache a pool of sequence slots shares.

A slot (a llama.cpp sequence id) remembers the tokens its sequence holds. :meth:`SlotEngine.prepare`
puts a token list into the slot sharing the longest prefix with it and evaluates only the rest;
:meth:`SlotEngine.fork` copies a slot into others with ``llama_memory_seq_cp`` (the cache cells are
shared, not copied); :meth:`SlotEngine.decode_next` extends several slots by one token each in one
``llama_decode`` call, and evaluates once the token that several slots in the same state append (siblings
sampling the same words). When the cache is full, the least recently used slots are emptied.

llama.cpp contexts are not thread-safe: callers hold :attr:`SlotEngine.lock` around every call.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ets.backends.base import BackendError
from ets.backends.llamacpp.library import default_threads, llama


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


class SlotEngine:
    """One llama.cpp context with a pool of sequence slots sharing a unified KV cache."""

    def __init__(self, model, *, n_ctx: int, n_slots: int, n_threads: int | None, n_batch: int = 512,
                 share_rows: bool = True):
        self.ctx = self.batch = None  # what close() frees, should the context not come up
        llama_cpp = llama()
        self.llama_cpp = llama_cpp
        self.model = model
        self.vocab = model.vocab
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        n_threads = n_threads or default_threads()
        self.n_slots = n_slots
        self.n_batch = n_batch
        self.share_rows = share_rows  # False: a row for every slot (the baseline bench/search_throughput.py measures)
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
            self.ctx = llama_cpp._internals.LlamaContext(model=model, params=params, verbose=False)
        except ValueError as e:
            raise BackendError(f"llama.cpp could not create a context: {e}", where=model.path_model) from e
        self.n_ctx = llama_cpp.llama_n_ctx(self.ctx.ctx)
        self.mem = llama_cpp.llama_get_memory(self.ctx.ctx)
        # a token may belong to every slot at once (decode_next's shared rows)
        self.batch = llama_cpp.llama_batch_init(max(n_batch, n_slots), 0, n_slots)
        self.slots = [_Slot() for _ in range(n_slots)]
        self.clock = 0
        self.lock = threading.Lock()
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        # totals, for benchmarks and tests
        self.prompt_tokens_computed = 0
        self.prompt_tokens_reused = 0
        self.decode_calls = 0
        # evaluate a prompt's last token in a call of its own: its logits then do not depend on how much of
        # the prompt was cached (llama.cpp's numbers move with a batch's shape), so a request made twice
        # samples the same text (the policy server sets it; a search in process gets that from its order)
        self.split_last = False
        self.tokens_shared = 0  # tokens decode_next appended without a batch row of their own

    def close(self) -> None:
        if self.batch is not None:
            self.llama_cpp.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx is not None:
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

    def clear(self, sid: int) -> None:
        """Empty slot ``sid``."""
        self.llama_cpp.llama_memory_seq_rm(self.mem, sid, -1, -1)
        self.slots[sid].tokens = []

    def _truncate(self, sid: int, n: int) -> None:
        slot = self.slots[sid]
        if n < len(slot.tokens):
            if not self.llama_cpp.llama_memory_seq_rm(self.mem, sid, n, -1):  # pragma: no cover
                self.clear(sid)
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

    def make_room(self, need: int, protect: set[int]) -> None:
        """Evict least recently used slots until ``need`` more cells fit."""
        while self.cells_used() + need > self.n_ctx:
            victims = [i for i in range(self.n_slots) if i not in protect and self.slots[i].tokens]
            if not victims:
                raise BackendError(
                    f"the llama.cpp context is too small: {need} more tokens do not fit in n_ctx={self.n_ctx}; "
                    "raise n_ctx")
            self.clear(min(victims, key=lambda i: self.slots[i].last_used))

    # --- decoding --------------------------------------------------------

    def _decode(self, items: list[tuple[int, int, int | Sequence[int], bool]]) -> None:
        """Decode (token, pos, seq or seqs, want_logits) items as one batch."""
        b = self.batch
        for i, (tok, pos, seqs, logits) in enumerate(items):
            b.token[i] = tok
            b.pos[i] = pos
            if isinstance(seqs, int):
                seqs = (seqs,)
            b.n_seq_id[i] = len(seqs)
            for j, seq in enumerate(seqs):
                b.seq_id[i][j] = seq
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
            # a protected (busy) slot is a source to copy a prefix from, never a slot to trim or clear: many
            # prompts admitted at once (greedy's 16 problems) share the few-shot prefix the first evaluated
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
            self.clear(target)
        elif best not in protect and (len(src.tokens) - reuse <= 1 or best_lcp == len(src.tokens)):
            target = best  # nothing worth keeping would be lost: extend / trim in place
            self._truncate(target, reuse)
        else:
            target = self._lru(protect | {best})
            self.clear(target)
            self.llama_cpp.llama_memory_seq_cp(self.mem, best, target, 0, reuse)
            self.slots[target].tokens = list(src.tokens[:reuse])
        self._touch(target)
        self.make_room(len(tokens) - reuse, protect | {target, best})
        rest = tokens[reuse:]
        slot = self.slots[target]
        # chunks of n_batch; with split_last, the last token alone, as it is when the rest is cached
        body = len(rest) - 1 if self.split_last and len(rest) > 1 else len(rest)
        ends = [*range(self.n_batch, body, self.n_batch), body] + ([len(rest)] if body < len(rest) else [])
        start = 0
        for end in ends:
            chunk = rest[start:end]
            self._decode([(t, reuse + start + j, target, end == len(rest) and j == len(chunk) - 1)
                          for j, t in enumerate(chunk)])
            slot.tokens.extend(chunk)
            start = end
        logits = self._logits(len(chunk) - 1)  # the last token's row, in the last call
        self.prompt_tokens_computed += len(rest)
        self.prompt_tokens_reused += reuse
        return target, len(rest), reuse, logits

    def decode_next(self, tokens: list[tuple[int, int]]) -> list[np.ndarray]:
        """Append one token to each of several slots (``(slot, token)`` pairs), decoding them as one
        batch; return each slot's next-token logits, in order.

        Slots holding the same tokens that append the same token are in one state: their next-token
        distribution is one. They get one batch row, tagged with all of them (its cell is shared, as a
        fork's are), and its logits (one array, for all of them: read, never write). Siblings sampled at
        a low temperature often open their steps alike, and on 2 cores every row costs its share of the
        call; the sequences split where their samples first differ."""
        rows, row_of = self.rows(tokens)
        self._decode([(tok, len(self.slots[sids[0]].tokens), sids, True) for tok, sids in rows])
        self.tokens_shared += len(tokens) - len(rows)
        for sid, tok in tokens:
            self.slots[sid].tokens.append(tok)
            self._touch(sid)
        logits = [self._logits(i) for i in range(len(rows))]
        return [logits[r] for r in row_of]

    def rows(self, tokens: list[tuple[int, int]]) -> tuple[list[tuple[int, list[int]]], list[int]]:
        """The batch rows :meth:`decode_next` makes of ``(slot, token)`` pairs: ``(token, slots)`` for each
        state (equal tokens held, equal token appended), and each pair's row."""
        rows: list[tuple[int, list[int]]] = []
        by_key: dict[tuple[int, int], list[int]] = {}  # (length, token) -> rows that may be the same state
        row_of: list[int] = []
        for sid, tok in tokens:
            held = self.slots[sid].tokens
            candidates = by_key.setdefault((len(held), tok), []) if self.share_rows else []
            row = next((r for r in candidates if self.slots[rows[r][1][0]].tokens == held), None)
            if row is None:
                row = len(rows)
                rows.append((tok, []))
                candidates.append(row)
            rows[row][1].append(sid)
            row_of.append(row)
        return rows, row_of

    def fork(self, src: int, n: int, protect: set[int]) -> list[int]:
        """``n`` slots holding ``src``'s tokens (cells shared through llama_memory_seq_cp)."""
        out: list[int] = []
        for _ in range(n):
            sid = self._lru(protect | {src} | set(out))
            self.clear(sid)
            self.llama_cpp.llama_memory_seq_cp(self.mem, src, sid, 0, len(self.slots[src].tokens))
            self.slots[sid].tokens = list(self.slots[src].tokens)
            self._touch(sid)
            out.append(sid)
        return out
