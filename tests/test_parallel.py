"""Evaluation pools: in-process, out-of-order completion logged in ask order, and Ray workers end to end."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import yaml

from evosuite.evolver import Evolver
from evosuite.fitness import FitnessSettings, Schedule
from evosuite.parallel import Evaluator, InProcessEvaluator, Task, Utilization, run_one
from evosuite.plugin_manager import get
from evosuite.ray_pool import make_evaluator
from evosuite.run_store import RunStore
from tests.conftest import run_cli
from tests.test_evolution_run import tiny_models, toy_config, toy_site  # noqa: F401 - fixtures
from tests.test_fitness import Threshold, scorer


class Shuffled(Evaluator):
    """Runs a generation's tasks in process but hands results back in reverse, like a worker pool might."""

    def __init__(self, evaluate, workers=3):
        self.inner = InProcessEvaluator(evaluate)
        self.workers = workers
        self.batches = []

    def run(self, tasks, progress=None, started=None):
        self.batches.append(len(tasks))
        yield from reversed(list(self.inner.run(tasks, progress, started)))

    def utilization(self):
        return self.inner.utilization()


def quadratic(genome, progress):
    if genome[0] > 0.8:
        raise RuntimeError("too far")
    return -sum((v - 0.7) ** 2 for v in genome)


def _strip(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_in_process_evaluator_reports_outcomes_and_utilization():
    pool = InProcessEvaluator(quadratic)
    outcomes = list(pool.run([Task((0, 0), [0.5, 0.5]), Task((0, 1), [0.9, 0.5])]))
    assert [o.key for o in outcomes] == [(0, 0), (0, 1)]
    assert outcomes[0].value == pytest.approx(-0.08) and outcomes[1].error.startswith("RuntimeError: too far")
    util = pool.utilization()
    assert util.tasks == 2 and 0 < util.fraction <= 1.0
    assert Utilization(2, [1.0, 0.5], 1.0).fraction == 0.75
    assert run_one(lambda g, p, c: c["count"], Task(None, [0.0], {"count": 4})).value == 4


def test_results_arriving_out_of_order_are_logged_in_ask_order_and_change_nothing(tmp_path):
    runs = {}
    for name, pool in (("plain", None), ("pool", Shuffled(quadratic))):
        store = RunStore(tmp_path / name).create({})
        best = Evolver(stage="ps", optimizer=get("optimizers", "cmaes")(3, seed=2), evaluate=quadratic, store=store,
                       budget=23, evaluator=pool).run()
        runs[name] = (best, store.evaluations())
    assert runs["pool"][0].genome == runs["plain"][0].genome
    assert _strip(runs["pool"][1]) == _strip(runs["plain"][1])
    assert [(r["generation"], r["index"]) for r in runs["pool"][1]][:4] == [(0, 0), (0, 1), (0, 2), (0, 3)]


def test_racing_with_a_pool_is_the_same_run_for_any_completion_order_and_resumes(tmp_path):
    settings = FitnessSettings(subset=10, grow=1.4, racing=True, chunk=3)

    def run(name, budget, pool_factory, store=None):
        score = scorer(Threshold(60), settings)
        store = store or RunStore(tmp_path / name).create({})
        pool = pool_factory(score) if pool_factory else None
        best = Evolver(stage="ps", optimizer=get("optimizers", "cmaes")(2, seed=9), evaluate=score, store=store,
                       budget=budget, evaluator=pool, schedule=Schedule(settings, 60)).run()
        return best, store

    plain, plain_store = run("plain", 30, None)
    pooled, pooled_store = run("pooled", 30, Shuffled)
    assert pooled.genome == plain.genome and _strip(pooled_store.evaluations()) == _strip(plain_store.evaluations())
    store = RunStore(tmp_path / "killed").create({})
    run("killed", 11, Shuffled, store)
    resumed, _ = run("killed", 30, Shuffled, store)
    assert resumed.genome == plain.genome and _strip(store.evaluations()) == _strip(plain_store.evaluations())


def test_without_ray_workers_fall_back_to_in_process(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    said = []
    pool = make_evaluator(workers=2, evaluate=quadratic, message=said.append)
    assert isinstance(pool, InProcessEvaluator) and "Ray is not installed" in said[0]
    assert isinstance(make_evaluator(workers=1, evaluate=quadratic), InProcessEvaluator)


def test_run_with_two_ray_workers_gives_the_in_process_result(tiny_models, toy_site, tmp_path):  # noqa: F811
    pytest.importorskip("ray")
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(toy_config(tiny_models, budget=12,
                                                fitness={"subset": 3, "grow": 1.5, "racing": True, "chunk": 2})))
    env = {"PYTHONPATH": str(toy_site)}
    single = run_cli("run", "--config", str(config), "--run-dir", str(tmp_path / "one"), "--quiet",
                     "--no-save-model", env=env)
    assert single.returncode == 0, single.stderr
    workers = run_cli("run", "--config", str(config), "--run-dir", str(tmp_path / "two"), "--plain",
                      "--no-save-model", "--workers", "2", env=env)
    assert workers.returncode == 0, workers.stderr
    assert "2 workers, utilization" in workers.stdout
    a = json.loads((tmp_path / "one" / "summary.json").read_text())
    b = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert b["best_genome"] == a["best_genome"] and b["test_scores"] == a["test_scores"]
    assert set(b) == set(a) and b["workers"] == 2 and a["workers"] == 1
    util = b["evaluation"]["ps"]
    # 12 evaluations, 11 tasks: in the warm start ties-0.5 lands on dare-ties-0.5's genome (the DARE-TIES
    # space has no magnitude trimming), scored once for both
    assert util["workers"] == 2 and util["tasks"] == 11 and 0 < util["utilization"] <= 1
    assert b["evaluation"]["ps"]["items_scored"] == a["evaluation"]["ps"]["items_scored"]
    lines = [json.loads(x) for x in (tmp_path / "two" / "evaluations.jsonl").read_text().splitlines()]
    assert [(r["generation"], r["index"]) for r in lines] == sorted((r["generation"], r["index"]) for r in lines)

    # A run interrupted in-process resumes on Ray workers (evaluation is not part of the search).
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "one", cut)
    for name in ("summary.json", "final.jsonl", "best_recipe.yaml"):
        (cut / name).unlink(missing_ok=True)
    evaluations = (cut / "evaluations.jsonl").read_text().splitlines(keepends=True)
    (cut / "evaluations.jsonl").write_text("".join(evaluations[:5]))
    resumed = run_cli("resume", str(cut), "--plain", "--no-save-model", "--workers", "2", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "2 workers, utilization" in resumed.stdout
    c = json.loads((cut / "summary.json").read_text())
    assert c["best_genome"] == a["best_genome"] and c["test_scores"] == a["test_scores"] and c["workers"] == 2
