"""The sentence-transformers embedder: the shipped MiniLM, any model path, the device string."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ets.backends.base import BackendError, Embedder
from ets.backends.embedder import resolve_device


def test_resolve_device():
    assert resolve_device(None) == "cpu"
    assert resolve_device("") == "cpu"
    assert resolve_device(0) == "cuda:0"
    assert resolve_device("1") == "cuda:1"
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("cuda:2") == "cuda:2"
    assert resolve_device("mps") == "mps"


pytest.importorskip("sentence_transformers")

from ets.backends.embedder import SentenceTransformerEmbedder, load_embedder  # noqa: E402
from ets.models import default_embedder_path  # noqa: E402


@pytest.fixture(scope="module")
def embedder():
    try:
        return load_embedder()
    except BackendError as e:  # pragma: no cover - depends on the install
        pytest.skip(str(e))


def test_default_model_embeds_offline(embedder, monkeypatch):
    assert isinstance(embedder, Embedder)
    assert embedder.device == "cpu"
    vecs = embedder.encode(["Tom has 3 + 5 = 8 apples.", "Tom now has 8 apples.", "The capital of France is Paris."])
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > unit[0] @ unit[2]
    assert embedder.encode([]).shape == (0, 384)


def test_any_model_path_works(tmp_path):
    copy = tmp_path / "my-model"
    shutil.copytree(default_embedder_path(), copy)
    emb = SentenceTransformerEmbedder(str(copy), device="cpu")
    assert emb.model_name == str(copy.resolve())
    assert emb.encode(["x = 2"]).shape == (1, 384)


def test_missing_model_is_a_backend_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendError):
        SentenceTransformerEmbedder("no-such-org/no-such-model-xyz", device="cpu")
