"""Shared fixtures: a fresh plugin host per test, run-time plugin registration, fake installed packages."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from evosuite import plugin_manager

# One thread: on the 2-core machines tests run on, 2 threads under contention are many times slower.
torch.set_num_threads(1)

TESTS_DIR = Path(__file__).parent


@pytest.fixture(autouse=True)
def fresh_host(monkeypatch):
    """Each test starts with plugins loaded anew, so registrations never leak between tests."""
    monkeypatch.delenv("EVOSUITE_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("EVOSUITE_LOAD_PLUGINS", raising=False)
    plugin_manager.reset_host()
    yield
    plugin_manager.reset_host()


@pytest.fixture
def register_plugin():
    """Register plugin objects for one test: ``register_plugin(obj, "name")``; unregistered afterwards."""
    added: list[str] = []

    def register(plugin, name: str):
        plugin_manager.get_host().add_plugin(plugin, name)
        added.append(name)
        return plugin

    yield register
    for name in added:
        if plugin_manager._host is not None and plugin_manager._host.pm.has_plugin(name):
            plugin_manager._host.remove_plugin(name)


def write_fake_distribution(root: Path, package: str, module: str, source: str, *, entry_name: str | None = None,
                            version: str = "1.0") -> Path:
    """An importable module plus a ``.dist-info`` whose entry point is in the ``evosuite`` group, under ``root``.

    Putting ``root`` on ``sys.path`` (or ``PYTHONPATH``) makes it look exactly like a pip-installed plugin.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    dist_info = root / f"{package.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
    (dist_info / "entry_points.txt").write_text(f"[evosuite]\n{entry_name or module} = {module}\n")
    return root


@pytest.fixture
def fake_distribution(tmp_path):
    return lambda *args, **kwargs: write_fake_distribution(tmp_path / "site", *args, **kwargs)


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 600):
    """Run ``evosuite`` in a subprocess, as a user would; returns the CompletedProcess."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("EVOSUITE_STRICT_PLUGINS", None) if "EVOSUITE_STRICT_PLUGINS" not in (env or {}) else None
    return subprocess.run([sys.executable, "-m", "evosuite", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


@contextlib.contextmanager
def private_cache(path: Path):
    """``EVOSUITE_CACHE`` points at ``path`` inside the block (session fixtures cannot use ``monkeypatch``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVOSUITE_CACHE", str(path))
        yield


@pytest.fixture(scope="session")
def zoo_env(tmp_path_factory):
    """A private cache holding the small test variant of the zoo, built once per session.

    Returns the environment that points ``evosuite`` subprocesses at it (``EVOSUITE_CACHE``) and makes the
    default experiments use it (``EVOSUITE_ZOO_VARIANT=test``); ``zoo_env["root"]`` is the zoo directory.
    """
    from evosuite.plugins.zoo.build import build_zoo, zoo_path

    cache = tmp_path_factory.mktemp("evosuite-cache")
    with private_cache(cache):
        root = build_zoo("test", seed=0)
        assert root == zoo_path("test", 0)
    return {"EVOSUITE_CACHE": str(cache), "EVOSUITE_ZOO_VARIANT": "test", "root": str(root)}
