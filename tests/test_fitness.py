"""Cheaper fitness: seeded growing subsets, racing against the elite, the genome cache, and their resume."""

from __future__ import annotations

import math

import pytest

from evosuite.api import Benchmark, BenchmarkResult
from evosuite.config import parse_config
from evosuite.errors import ConfigError
from evosuite.evolver import Evolver
from evosuite.fitness import FitnessSettings, ItemScorer, Schedule, item_order, parse_fitness, subset_size
from evosuite.plugin_manager import get
from evosuite.run_store import RunStore


class Threshold(Benchmark):
    """Item i is answered right when the model (a genome) has genome[0] >= the item's bar: a mean of 0/1."""

    name = "threshold"
    metric = "acc"
    splits = ("search",)
    search_split = "search"

    def __init__(self, n=60, per_item=True):
        super().__init__()
        self.rows = [{"id": i, "bar": ((i * 37) % n) / n} for i in range(n)]
        self.predicted = 0
        if per_item:
            self.item_scores = lambda items, predictions: [1.0 if p == "yes" else 0.0 for p in predictions]

    def items(self, split, *, limit=None, seed=None):
        return self.rows[:limit]

    def predict(self, model, items, *, progress=None):
        self.predicted += len(items)
        return ["yes" if model[0] >= item["bar"] else "no" for item in items]

    def score(self, items, predictions, *, split):
        score = sum(p == "yes" for p in predictions) / len(predictions)
        return BenchmarkResult(self.name, split, score, {"acc": score})


def scorer(benchmark, settings, seed=0):
    return ItemScorer(lambda genome: genome, benchmark, benchmark.rows, settings, seed)


@pytest.mark.parametrize("value, message", [
    ({"subset": 0}, "fitness.subset must be a positive integer"),
    ({"grow": 0.5}, "fitness.grow must be a number >= 1"),
    ({"racing": "yes"}, "fitness.racing must be true or false"),
    ({"chunk": 0}, "fitness.chunk must be a positive integer"),
    ({"subsett": 3}, "unknown key fitness.'subsett'"),
    ([1], "fitness must be a mapping"),
])
def test_fitness_settings_are_validated(value, message):
    with pytest.raises(ConfigError, match=message):
        parse_fitness(value)
    data = {"sources": ["a", "b"], "benchmark": "x", "fitness": value}
    with pytest.raises(ConfigError):
        parse_config(data)


def test_defaults_are_off_and_config_accepts_fitness_and_workers():
    assert not FitnessSettings().active
    config = parse_config({"sources": ["a", "b"], "benchmark": "x", "workers": 2,
                           "fitness": {"subset": 8, "grow": 2, "racing": True}})
    assert config.workers == 2 and parse_fitness(config.fitness) == FitnessSettings(8, 2.0, True, 8)
    with pytest.raises(ConfigError, match="workers must be at least 1"):
        parse_config({"sources": ["a", "b"], "benchmark": "x", "workers": 0})


def test_subsets_are_seeded_nested_prefixes_that_grow_to_everything():
    settings = FitnessSettings(subset=10, grow=1.5)
    sizes = [subset_size(settings, g, 40) for g in range(6)]
    assert sizes == [10, 15, 23, 34, 40, 40]
    items = list(range(40))
    assert item_order(items, settings, 1) == item_order(items, settings, 1) != items
    assert sorted(item_order(items, settings, 1)) == items
    assert item_order(items, settings, 1) != item_order(items, settings, 2)
    assert item_order(items, FitnessSettings(), 1) == items  # no subset: the split's own order


def test_without_settings_the_fitness_is_the_benchmark_score_of_every_item():
    bench = Threshold()
    assert scorer(bench, FitnessSettings())([0.5]) == bench.score(bench.rows, bench.predict([0.5], bench.rows),
                                                                   split="search").score


def test_racing_stops_a_candidate_that_cannot_beat_the_threshold():
    bench = Threshold(60)
    score = scorer(bench, FitnessSettings(racing=True, chunk=5))
    full = score([0.3], context={"count": 60, "threshold": None})
    assert full.extra["items"] == 60 and not full.extra["raced"] and full.fitness == pytest.approx(0.3 + 1 / 60)
    assert full.fitness == pytest.approx(sum(full.extra["item_scores"]) / 60)
    bench.predicted = 0
    raced = score([0.3], context={"count": 60, "threshold": 0.9})
    assert raced.extra["raced"] and raced.extra["items"] < 60 and bench.predicted == raced.extra["items"]
    # stopped only once even perfect answers on the rest could not beat 0.9
    seen = raced.extra["item_scores"]
    assert (sum(seen) + 60 - len(seen)) / 60 <= 0.9 < (sum(seen[:-5]) + 60 - len(seen) + 5) / 60
    assert raced.fitness <= 0.9
    winner = score([0.95], context={"count": 60, "threshold": 0.9})
    assert not winner.extra["raced"] and winner.fitness > 0.9


def test_a_benchmark_without_item_scores_is_scored_whole_on_the_subset():
    bench = Threshold(60, per_item=False)
    result = scorer(bench, FitnessSettings(subset=20, racing=True))([0.5], context={"count": 20, "threshold": 0.99})
    assert result.extra == {"items": 20, "of": 20, "raced": False} and bench.predicted == 20


def _run(tmp_path, name, settings, budget, pool=None, store=None, optimizer="cmaes"):
    bench = Threshold(60)
    score = scorer(bench, settings)
    store = store or RunStore(tmp_path / name).create({})
    evolver = Evolver(stage="ps", optimizer=get("optimizers", optimizer)(2, seed=4), evaluate=score, store=store,
                      budget=budget, evaluator=pool, schedule=Schedule(settings, 60) if settings.active else None)
    return evolver, evolver.run(), store


def test_racing_and_subsets_score_a_fraction_of_the_items_and_find_the_same_best(tmp_path):
    settings = FitnessSettings(subset=12, grow=1.5, racing=True, chunk=4)
    full_evolver, full_best, _ = _run(tmp_path, "full", FitnessSettings(), 60)
    evolver, best, store = _run(tmp_path, "cheap", settings, 60)
    stats = evolver.schedule.stats()
    assert stats["items_full_evaluation"] == 60 * 60 and stats["fraction"] < 1 / 3
    assert best.extra["items"] == best.extra["of"] and not best.extra["raced"]
    # the landscape is a step function of genome[0]: both find a genome answering (nearly) everything
    assert best.genome[0] >= 0.9 and full_best.genome[0] >= 0.9
    records = store.evaluations()
    assert all({"items", "of", "raced", "item_scores"} <= set(r) for r in records)
    assert any(r["raced"] for r in records)


def test_resume_with_a_schedule_replays_to_the_same_run(tmp_path):
    settings = FitnessSettings(subset=10, grow=1.3, racing=True, chunk=3)
    _, whole, whole_store = _run(tmp_path, "whole", settings, 30)
    store = RunStore(tmp_path / "killed").create({})
    _run(tmp_path, "killed", settings, 13, store=store)  # "killed" after 13 evaluations, mid-generation
    evolver, resumed, _ = _run(tmp_path, "killed", settings, 30, store=store)
    assert resumed.genome == whole.genome and resumed.fitness == whole.fitness
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in store.evaluations()]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in whole_store.evaluations()]
    assert sum(e.replayed for e in evolver.history) == 13


def test_identical_genomes_reuse_the_logged_score(tmp_path):
    calls = []

    def evaluate(genome, progress):
        calls.append(genome)
        return sum(genome)

    class Repeating:  # asks the same two genomes every generation
        popsize = 2

        def ask(self):
            return [[0.1, 0.2], [0.3, 0.4]]

        def tell(self, genomes, fitnesses):
            pass

    store = RunStore(tmp_path / "run").create({})
    evolver = Evolver(stage="ps", optimizer=Repeating(), evaluate=evaluate, store=store, budget=6)
    best = evolver.run()
    assert len(calls) == 2 and best.fitness == pytest.approx(0.7)
    records = store.evaluations()
    assert len(records) == 6 and [r.get("cached", False) for r in records] == [False, False] + [True] * 4
    assert math.isclose(records[5]["fitness"], 0.7)


def test_a_genome_asked_twice_in_one_generation_is_scored_once(tmp_path):
    calls = []

    def evaluate(genome, progress):
        calls.append(genome)
        if genome[0] < 0:
            raise RuntimeError("out of memory")
        return sum(genome)

    class Twins:  # one generation: a genome, another, the first again, a failing one and its twin
        popsize = 5

        def ask(self):
            return [[0.1, 0.2], [0.3, 0.4], [0.1, 0.2], [-1.0, 0.0], [-1.0, 0.0]]

        def tell(self, genomes, fitnesses):
            pass

    store = RunStore(tmp_path / "run").create({})
    Evolver(stage="ps", optimizer=Twins(), evaluate=evaluate, store=store, budget=5,
            max_consecutive_failures=99).run()
    assert calls == [[0.1, 0.2], [0.3, 0.4], [-1.0, 0.0]]  # each distinct genome once
    records = store.evaluations()
    assert [r["index"] for r in records] == [0, 1, 2, 3, 4]  # every asked genome is logged, in ask order
    assert [r.get("cached", False) for r in records] == [False, False, True, False, True]
    assert math.isclose(records[2]["fitness"], 0.3) and records[2]["seconds"] == 0
    assert records[3]["error"] == records[4]["error"] and "out of memory" in records[4]["error"]

    # Stopped after the first genome, then resumed: the logged score serves its twin, as in one go.
    calls.clear()
    cut = RunStore(tmp_path / "cut").create({})
    Evolver(stage="ps", optimizer=Twins(), evaluate=evaluate, store=cut, budget=1).run()
    Evolver(stage="ps", optimizer=Twins(), evaluate=evaluate, store=cut, budget=5,
            max_consecutive_failures=99).run()
    assert calls == [[0.1, 0.2], [0.3, 0.4], [-1.0, 0.0]]
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in cut.evaluations()]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_zoo_math_item_scores_average_to_the_headline():
    from evosuite.plugins.zoo.benchmarks import ZooJapaneseMath

    bench = ZooJapaneseMath()
    items = [{"id": i, "question": "q", "answer_number": n} for i, n in enumerate([3, 12, 7, 40])]
    predictions = ["答えは3です", "answer 12", "答えは8です", "答えは40です"]
    per = bench.item_scores(items, predictions)
    assert per == [1.0, 0.0, 0.0, 1.0]
    assert sum(per) / len(per) == bench.score(items, predictions, split="search").score
