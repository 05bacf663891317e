"""The evolver end to end on tiny random models and a toy benchmark: run store, failures, kill -9 and resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from evosuite.config import parse_config
from evosuite.errors import ConfigError
from evosuite.evolver import Evolver, TooManyFailures
from evosuite.plugin_manager import get
from evosuite.run_store import RunStore
from tests import toy_plugin
from tests.conftest import run_cli, write_fake_distribution
from tests.factories import write_llm


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {name: str(write_llm(root / name, seed=seed)) for name, seed in (("base", 0), ("a", 1), ("b", 2))}


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory):
    source = Path(toy_plugin.__file__).read_text()
    return write_fake_distribution(tmp_path_factory.mktemp("site"), "evosuite-toy", "evosuite_toy", source)


def toy_config(models, **extra):
    return {"sources": [{"name": "a", "model": models["a"]}, {"name": "b", "model": models["b"]}],
            "base_model": models["base"], "benchmark": "toy-echo", "budget": 10, "seed": 3, **extra}


def test_run_writes_a_complete_run_store(tiny_models, toy_site, tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(toy_config(tiny_models)))
    result = run_cli("run", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--plain",
                     env={"PYTHONPATH": str(toy_site)})
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["benchmark"] == "toy-echo" and summary["split"] == "test" and summary["seed"] == 3
    assert set(summary["test_scores"]) == {"a", "b", "equal-weight", "task-arithmetic", "ties-0.5", "dare-ties-0.5",
                                           "merged"}
    assert summary["evaluations"] == 10 and len(summary["best_genome"]) == 4
    lines = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]
    assert len(lines) == 10 and all(set(r) >= {"genome", "fitness", "seconds", "error"} for r in lines)
    assert max(r["fitness"] for r in lines) == summary["search_fitness"]
    assert yaml.safe_load((run / "best_recipe.yaml").read_text())["genome"] == summary["best_genome"]
    assert (run / "model" / "model.safetensors").is_file() and (run / "model" / "README.md").is_file()
    assert "evosuite" in (run / "model" / "README.md").read_text()
    assert "eval 10/10" in result.stdout  # plain progress lines when stdout is not a terminal


PIPELINE = {"name": "ps+dfs", "options": {"dfs": {"scales": "hop", "repeats": 2}}}


@pytest.mark.parametrize("space", ["ps", "ps+dfs"])
def test_kill_9_then_resume_gives_the_uninterrupted_result(tiny_models, toy_site, tmp_path, space):
    # with ps+dfs the budget is split 8 + 8, so the kill below lands in the middle of the DFS stage
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(toy_config(tiny_models, budget=16, space=PIPELINE if space == "ps+dfs" else "ps")))
    env = {"PYTHONPATH": str(toy_site)}
    whole = run_cli("run", "--config", str(config), "--run-dir", str(tmp_path / "whole"), "--quiet",
                    "--no-save-model", env=env)
    assert whole.returncode == 0, whole.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "evosuite", "run", "--config", str(config), "--run-dir",
                             str(killed), "--quiet", "--no-save-model"],
                            env={**os.environ, **env, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = killed / "evaluations.jsonl"
    deadline = time.time() + 120
    kill_after = 11 if space == "ps+dfs" else 7
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < kill_after):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(log.read_text().splitlines())
    assert kill_after <= done_before < 16, "the run must be killed in the middle"
    assert not (killed / "summary.json").exists()

    resumed = run_cli("resume", str(killed), "--quiet", "--no-save-model", env=env)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((tmp_path / "whole" / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    assert b["best_genome"] == a["best_genome"]
    assert b["test_scores"] == a["test_scores"]
    assert len(log.read_text().splitlines()) == 16  # nothing evaluated twice
    if space == "ps+dfs":
        assert set(b["stages"]) == {"ps", "ps+dfs"} and b["stages"] == a["stages"]
        assert {"a", "b", "equal-weight", "task-arithmetic", "ties-0.5", "dare-ties-0.5", "ps", "ps+dfs",
                "merged"} == set(b["test_scores"])


def test_failing_candidates_are_logged_and_too_many_stop_the_run(tmp_path):
    store = RunStore(tmp_path / "run").create({"test": True})
    calls = []

    def evaluate(genome, progress):
        calls.append(genome)
        if len(calls) % 2 == 0:
            raise RuntimeError("out of memory")
        return float("nan") if len(calls) == 3 else sum(genome)

    optimizer = get("optimizers", "random")(3, seed=0)
    best = Evolver(stage="ps", optimizer=optimizer, evaluate=evaluate, store=store, budget=8).run()
    records = store.evaluations()
    assert len(records) == 8
    assert [r["error"] is not None for r in records] == [False, True, True, True, False, True, False, True]
    assert "out of memory" in records[1]["error"] and "nan" in records[2]["error"]
    assert best.fitness == max(r["fitness"] for r in records if r["fitness"] is not None)

    def always_fails(genome, progress):
        raise ValueError("broken candidate")

    with pytest.raises(TooManyFailures, match="3 candidates in a row failed"):
        Evolver(stage="x", optimizer=get("optimizers", "random")(2, seed=0), evaluate=always_fails,
                store=store, budget=10, max_consecutive_failures=3).run()
    assert len(store.evaluations("x")) == 3  # what was computed is kept


def test_torn_last_line_is_ignored_and_reevaluated(tmp_path):
    store = RunStore(tmp_path / "run").create({})
    scores = iter(range(100))
    evaluate = lambda genome, progress: float(next(scores))  # noqa: E731
    Evolver(stage="ps", optimizer=get("optimizers", "cmaes")(2, seed=1), evaluate=evaluate, store=store,
            budget=3).run()
    with open(store.path / "evaluations.jsonl", "a") as handle:
        handle.write('{"stage": "ps", "generation": 0, "ind')  # a crash mid-write
    best = Evolver(stage="ps", optimizer=get("optimizers", "cmaes")(2, seed=1), evaluate=evaluate, store=store,
                   budget=5).run()
    assert len(store.evaluations()) == 5 and best.fitness == 4.0


def test_cmaes_is_reproducible_and_bounded():
    cmaes = get("optimizers", "cmaes")
    a, b = cmaes(4, seed=7), cmaes(4, seed=7)
    assert a.popsize == 4 + int(3 * math.log(4))
    for _ in range(3):
        ga, gb = a.ask(), b.ask()
        assert ga == gb and all(0.0 <= v <= 1.0 for g in ga for v in g)
        fitness = [-sum((v - 0.9) ** 2 for v in g) for g in ga]
        a.tell(ga, fitness)
        b.tell(gb, fitness)
    assert a.ask() != cmaes(4, seed=8).ask()


def test_cmaes_climbs_a_simple_landscape():
    optimizer = get("optimizers", "cmaes")(3, seed=0)
    best = -math.inf
    for _ in range(25):
        genomes = optimizer.ask()
        fitness = [-sum((v - 0.8) ** 2 for v in g) for g in genomes]
        best = max(best, *fitness)
        optimizer.tell(genomes, fitness)
    assert best > -0.005  # started at 0.5 everywhere: -0.27


@pytest.mark.parametrize("mutation, message", [
    ({"budgett": 3}, "unknown key 'budgett'"),
    ({"budget": "many"}, "budget has the wrong type"),
    ({"sources": [{"name": "a", "model": "x"}]}, "at least two models"),
    ({"carrier": "c"}, "carrier 'c' is not one of the sources"),
    ({"benchmark": {"name": "toy-echo", "opts": {}}}, "unknown key benchmark.'opts'"),
])
def test_config_errors_are_one_line_and_name_the_key(mutation, message):
    data = {**toy_config({"a": "a", "b": "b", "base": "base"}), **mutation}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_cli_config_errors_stop_before_any_work(tiny_models, toy_site, tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(toy_config(tiny_models, space={"name": "ps", "options": {"metod": "ties"}})))
    result = run_cli("run", "--config", str(config), "--run-dir", str(tmp_path / "run"),
                     env={"PYTHONPATH": str(toy_site)})
    assert result.returncode == 2
    assert result.stderr.strip() == ("Error: unknown option 'metod' for merge space 'ps' (valid options: "
                                     "granularity, keep_draws, method, method_options, parameters, "
                                     "precompute_deltas, ranges)")
    unknown = run_cli("run", "--config", str(config).replace("exp", "missing"))
    assert unknown.returncode == 2 and "does not exist" in unknown.stderr
    assert not (tmp_path / "run" / "evaluations.jsonl").exists()
