"""The headline commands on the small test zoo: `evosuite zoo ...` and `evosuite run --plugin vlm|llm`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli


def env_of(zoo_env):
    return {k: v for k, v in zoo_env.items() if k != "root"}


def test_zoo_commands_show_the_cached_zoo(zoo_env):
    path = run_cli("zoo", "path", "--variant", "test", env=env_of(zoo_env))
    assert path.returncode == 0 and path.stdout.strip() == zoo_env["root"]
    listing = run_cli("zoo", "list", "--variant", "test", env=env_of(zoo_env))
    assert listing.returncode == 0
    assert "vqa/vlm" in listing.stdout and "zoo-ja-math" in listing.stdout
    rebuilt = run_cli("zoo", "build", "--variant", "test", env=env_of(zoo_env))
    assert rebuilt.returncode == 0 and "reusing" in rebuilt.stdout  # cached: not built again


@pytest.mark.parametrize("plugin, task, sources", [
    ("vlm", "zoo-ja-vqa", {"ja-lm", "en-vlm"}),
    ("llm", "zoo-ja-math", {"ja-lm", "math-lm"}),
])
def test_run_plugin_default_experiment(zoo_env, tmp_path, plugin, task, sources):
    run_dir = tmp_path / "run"
    result = run_cli("run", "--plugin", plugin, "--budget", "4", "--run-dir", str(run_dir), "--plain",
                     env=env_of(zoo_env))
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["benchmark"] == task and summary["evaluations"] == 4
    baselines = {"equal-weight", "task-arithmetic", "ties-0.5", "dare-ties-0.5"}
    assert set(summary["test_scores"]) == sources | baselines | {"merged"}
    assert summary["best_baseline"] in baselines
    assert all(0.0 <= v <= 1.0 for v in summary["test_scores"].values())
    config = (run_dir / "config.yaml").read_text()
    assert str(Path(zoo_env["root"])) in config  # the experiment pointed the run at the cached zoo
    assert (run_dir / "model" / "config.json").is_file()


def test_run_needs_a_plugin_or_a_config():
    result = run_cli("run")
    assert result.returncode == 2
    assert result.stderr.startswith("Error: nothing to run") and "vlm" in result.stderr
    unknown = run_cli("run", "--plugin", "vml")
    assert unknown.returncode == 2 and "did you mean 'vlm'" in unknown.stderr


@pytest.mark.parametrize("plugin", ["llm", "vlm"])
def test_search_starts_exactly_at_task_arithmetic(zoo_env, tmp_path, plugin):
    """In the zoo's worlds task arithmetic (1, 1) is mostly the hand recipe to beat, so the llm and vlm
    experiments search task arithmetic weights per layer: the warm start's generation 0 holds that baseline
    exactly (weight 1 in the range [0, 2] is gene 0.5 for each of the 2 sources x 2 layers of the test zoo), not
    an approximation (a DARE-TIES space logs "approximated" and starts elsewhere)."""
    run_dir = tmp_path / "run"
    result = run_cli("run", "--plugin", plugin, "--budget", "4", "--run-dir", str(run_dir), "--plain",
                     "--no-save-model", env=env_of(zoo_env))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()]
    baseline = next(r for r in records if r.get("baseline") == "task-arithmetic")
    assert baseline["genome"] == [0.5] * 4
    assert "baseline task-arithmetic: approximated" not in result.stdout
