"""The zoo's seed (``EVOSUITE_ZOO_SEED``) and the robustness script that runs the default experiments over seeds."""

import importlib.util
from pathlib import Path

import pytest

from evosuite.errors import ConfigError
from evosuite.plugins.zoo import experiments

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "zoo_robustness.py"


def _script():
    spec = importlib.util.spec_from_file_location("zoo_robustness", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_zoo_seed_reaches_the_builder(monkeypatch, tmp_path):
    seen = []

    def fake_build(variant, *, seed, progress=None):
        seen.append(seed)
        raise RuntimeError("stop here")

    monkeypatch.setattr("evosuite.plugins.zoo.build.build_zoo", fake_build)
    monkeypatch.setenv("EVOSUITE_ZOO_SEED", "3")
    with pytest.raises(RuntimeError):
        experiments.ZooVLMExperiment().config()
    monkeypatch.delenv("EVOSUITE_ZOO_SEED")
    with pytest.raises(RuntimeError):
        experiments.ZooLLMExperiment().config()
    assert seen == [3, 0]


def test_a_zoo_seed_that_is_not_a_number_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("EVOSUITE_ZOO_SEED", "two")
    with pytest.raises(ConfigError, match="EVOSUITE_ZOO_SEED='two' is not an integer"):
        experiments.zoo_seed()


def test_robustness_margins_are_over_the_best_source_and_the_best_baseline():
    summary = {"sources": ["ja-lm", "en-vlm"], "best_baseline": "task-arithmetic", "margin_over_best_baseline": 0.1,
               "test_scores": {"ja-lm": 0.2875, "en-vlm": 0.0, "task-arithmetic": 0.5025, "merged": 0.6025}}
    row = _script().margins(summary)
    assert row["best_source"] == "ja-lm"
    assert row["over_sources"] == pytest.approx(0.6025 - 0.2875)
    assert row["over_baseline"] == pytest.approx(0.1)


def test_robustness_cells_force_the_kernels_and_keep_their_zoos_apart(tmp_path):
    script = _script()
    native = script.cell_env("native", 1, 2, tmp_path)
    forced = script.cell_env("avx2", 2, 0, tmp_path)
    assert "ATEN_CPU_CAPABILITY" not in native and forced["ATEN_CPU_CAPABILITY"] == "avx2"
    assert native["EVOSUITE_ZOO_SEED"] == "2" and native["OMP_NUM_THREADS"] == "1"
    assert native["EVOSUITE_CACHE"] != forced["EVOSUITE_CACHE"]
    assert script.spread([0.3, -0.1, 0.2]) == "-0.100 / +0.200 / +0.300"
