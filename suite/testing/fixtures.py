"""pytest fixtures for plugin authors, loaded in every pytest run of an environment that has evosuite.

evosuite announces this module through the ``pytest11`` entry point, so a plugin package's tests use the
fixtures by naming them; no ``conftest.py`` and no ``pytest_plugins`` line are needed. Heavy imports
(torch, transformers) happen only when a fixture is used.

The tiny models are random-weight models of the tiny zoo's two families (a Llama causal LM; a LLaVA VLM
around the same kind of LM) with a char-level tokenizer, written in a second or two: they load, generate
and merge like real models, but their answers are noise. They are written once per test session and
shared: copy one before changing it.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest


@pytest.fixture(scope="session")
def evosuite_tiny_llm(tmp_path_factory) -> Path:
    """Directory of a tiny random-weight Llama causal LM (``evosuite eval --model`` and ``load_model`` take it)."""
    from evosuite.testing.models import write_llm

    return write_llm(tmp_path_factory.mktemp("evosuite-tiny") / "tiny-llm", seed=0)


@pytest.fixture(scope="session")
def evosuite_tiny_vlm(tmp_path_factory) -> Path:
    """Directory of a tiny random-weight LLaVA VLM (16x16 images), for image-text benchmarks."""
    from evosuite.testing.models import write_vlm

    return write_vlm(tmp_path_factory.mktemp("evosuite-tiny") / "tiny-vlm", seed=0)


def write_tiny_run(path: Path, model_dir: Path | None = None, *, benchmark: str = "zoo-ja-math",
                   generations: int = 2, popsize: int = 3, genes: int = 4) -> Path:
    """Write a small finished run directory with ``RunStore``: what ``evosuite run`` leaves behind.

    Two sources (both ``model_dir``, under the names ``a`` and ``b``), a PS search of ``generations``
    x ``popsize`` logged evaluations (the last of the first generation failed), the best recipe, the
    held-out table and summary, status ``finished``, and ``model/`` (a copy of ``model_dir``, if given).
    """
    from evosuite.config import parse_config
    from evosuite.evolver import Evaluation
    from evosuite.run_store import RunStore

    source = str(model_dir) if model_dir is not None else "tiny-llm"
    config = parse_config({"sources": [{"name": "a", "model": source}, {"name": "b", "model": source}],
                           "benchmark": benchmark, "space": "ps", "optimizer": "cmaes",
                           "budget": generations * popsize, "seed": 0})
    store = RunStore(path).create({**config.to_dict(), "evosuite_version": _version()})
    rng = random.Random(0)
    best: Evaluation | None = None
    for generation in range(generations):
        for index in range(popsize):
            genome = [round(rng.random(), 6) for _ in range(genes)]
            failed = generation == 0 and index == popsize - 1
            evaluation = Evaluation("ps", generation, index, genome, round(rng.random(), 4), 0.5,
                                    "RuntimeError: out of memory" if failed else None)
            store.log_evaluation(evaluation.record())
            if not failed and (best is None or evaluation.fitness > best.fitness):
                best = evaluation
    assert best is not None
    recipe = {"space": "ps", "method": "dare_ties", "genome_length": genes, "seed": 0}
    store.write_yaml("best_recipe.yaml", {"fitness": best.fitness, "genome": best.genome, "recipe": recipe,
                                          "stages": {"ps": {"genome": best.genome, "fitness": best.fitness,
                                                            "recipe": recipe}}})
    scores = {"a": 0.25, "b": 0.5, "equal-weight": 0.375, "merged": 0.625}
    for name, score in scores.items():
        store.log_final({"name": name, "score": score, "metrics": {"acc_ja": score, "acc": score}, "seconds": 1.0})
    summary: dict[str, Any] = {
        "benchmark": benchmark, "metric": "acc_ja", "split": "test", "test_scores": scores,
        "test_metrics": {name: {"acc_ja": s, "acc": s} for name, s in scores.items()},
        "search_fitness": best.fitness, "best_genome": best.genome, "recipe": recipe,
        "stages": {"ps": {"best_genome": best.genome, "search_fitness": best.fitness}},
        "evaluations": generations * popsize, "seed": 0, "sources": ["a", "b"],
        "baselines": ["equal-weight"], "best_baseline": "equal-weight", "margin_over_best_baseline": 0.25,
        "best_genome_on_bound": False, "genes_on_bound": [],
    }
    if model_dir is not None:
        shutil.copytree(model_dir, store.path / "model")
        summary["model_dir"] = str(store.path / "model")
    store.write_json("summary.json", summary)
    store.set_status("finished")
    return store.path


def _version() -> str:
    from evosuite import __version__

    return __version__


@pytest.fixture
def evosuite_tiny_run_dir(tmp_path, evosuite_tiny_llm) -> Path:
    """A small finished run directory (config, evaluations, best recipe, final table, summary, model/)."""
    return write_tiny_run(tmp_path / "run", evosuite_tiny_llm)


class PluginHostHelper:
    """The ``evosuite_plugin_host`` fixture's value: a fresh host plus run-time plugin registration."""

    def __init__(self):
        self._names: list[str] = []

    @property
    def host(self):
        """The process-wide ``evosuite.plugin_manager.Host`` (what ``evosuite.plugin_manager.get`` uses)."""
        from evosuite.plugin_manager import get_host

        return get_host()

    def register(self, plugin: Any, name: str | None = None) -> Any:
        """Register a plugin module or object for this test; returns it."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        self.host.add_plugin(plugin, name)
        self._names.append(name)
        return plugin

    def registry(self, kind: str):
        """The registry of one kind: models, methods, spaces, benchmarks, optimizers, experiments."""
        return self.host.registry(kind)

    def get(self, kind: str, name: str) -> Any:
        return self.host.registry(kind).get(name)

    def close(self) -> None:
        from evosuite import plugin_manager

        host = plugin_manager._host
        for name in reversed(self._names):
            if host is not None and host.pm.has_plugin(name):
                host.remove_plugin(name)
        self._names.clear()
        plugin_manager.reset_host()


@pytest.fixture
def evosuite_plugin_host(monkeypatch) -> Iterator[PluginHostHelper]:
    """A fresh plugin host for one test, with only evosuite's built-in plugins loaded.

    ``evosuite_plugin_host.register(my_plugin)`` adds a plugin module or object, so ``evosuite.api`` lookups
    (``evosuite_plugin_host.get("benchmarks", "my-bench")``, ``evosuite.models.load_model``...) see it;
    it is removed and the host forgotten when the test ends. Installed third-party plugins are not loaded
    (``EVOSUITE_LOAD_PLUGINS`` is set empty for the test), so an installed copy of the plugin under test
    cannot clash with the one registered.
    """
    from evosuite import plugin_manager

    monkeypatch.setenv("EVOSUITE_LOAD_PLUGINS", "")
    plugin_manager.reset_host()
    helper = PluginHostHelper()
    yield helper
    helper.close()
