"""A toy benchmark plugin for tests: fast, deterministic, and sensitive to the merged weights.

Its score is the fraction of characters a model's greedy completion shares, position by position, with a
fixed target string; with tiny random models this is a noisy but deterministic landscape, enough to
exercise the evolver, the run store and resume without a trained zoo.
"""

from __future__ import annotations

from evosuite import hookimpl
from evosuite.api import Benchmark, BenchmarkResult

TARGET = "abcabcab"


class ToyBenchmark(Benchmark):
    name = "toy-echo"
    description = "toy: greedy completion vs a fixed string"
    metric = "char_match"
    splits = ("search", "test")
    search_split = "search"
    test_split = "test"
    options = {"items": 6, "fail_on": None}

    def items(self, split, *, limit=None, seed=None):
        n = limit or self.settings["items"]
        offset = 0 if split == "search" else 100
        return [{"id": i, "prompt": f"q{(i + offset) % 10} {chr(97 + i % 20)}:"} for i in range(n)]

    def predict(self, model, items, *, progress=None):
        return model.generate([item["prompt"] for item in items], max_new_tokens=len(TARGET), progress=progress)

    def score(self, items, predictions, *, split):
        per = [sum(a == b for a, b in zip(p, TARGET)) / len(TARGET) for p in predictions]
        score = sum(per) / len(per)
        per_item = [{"id": i["id"], "prediction": p, "score": s} for i, p, s in zip(items, predictions, per)]
        return BenchmarkResult(self.name, split, score, {"char_match": score}, per_item)


@hookimpl
def register_benchmarks(register):
    register(ToyBenchmark)
