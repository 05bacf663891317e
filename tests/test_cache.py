"""The cache directory and atomic builds: a crash never leaves a half-built folder."""

from __future__ import annotations

import pytest

from evosuite.cache import build_atomically, cache_dir


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EVOSUITE_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("EVOSUITE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "evosuite"


def test_build_atomically_reuses_and_never_leaves_half_a_build(tmp_path):
    root = tmp_path / "thing"
    calls = []

    def crash(tmp):
        tmp.mkdir()
        (tmp / "half").write_text("x")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        build_atomically(root, crash, marker="done")
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary folder

    def build(tmp):
        calls.append(tmp)
        tmp.mkdir()
        (tmp / "done").write_text(str(len(calls)))

    messages = []
    assert build_atomically(root, build, marker="done") == root
    assert build_atomically(root, build, marker="done", say=messages.append) == root
    assert len(calls) == 1 and "reusing" in messages[0]
    build_atomically(root, build, marker="done", force=True)
    assert (root / "done").read_text() == "2" and [p.name for p in tmp_path.iterdir()] == ["thing"]


def test_recipe_hash_follows_settings_and_code(tmp_path):
    from evosuite.cache import recipe_hash

    code = tmp_path / "build.py"
    code.write_text("steps = 1\n")
    first = recipe_hash({"steps": 1, "lr": 0.1}, [code])
    assert recipe_hash({"lr": 0.1, "steps": 1}, [code]) == first  # key order does not matter
    assert recipe_hash({"steps": 2, "lr": 0.1}, [code]) != first
    code.write_text("steps = 2\n")
    assert recipe_hash({"steps": 1, "lr": 0.1}, [code]) != first
