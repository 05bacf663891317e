"""An example evosuite plugin: a small unit-conversion benchmark with its own data and metric.

It uses only the public plugin API: ``evosuite.hookimpl``, the base classes in ``evosuite.api`` and,
for a mistake the user can fix, an ``evosuite.errors`` exception (the command line prints it as one line).
Installed, its entry point (``[project.entry-points.evosuite]`` in pyproject.toml) makes evosuite call
``register_benchmarks`` below, and ``unit-conversion`` works wherever a benchmark name is accepted.
"""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path

from evosuite import hookimpl
from evosuite.api import Benchmark, BenchmarkResult
from evosuite.errors import DataError

from evosuite_example_benchmark.metric import char_f1, exact_match

#: The evosuite hook API versions this plugin supports; evosuite warns when it provides another one.
EVOSUITE_HOOKS = ">=1,<2"

DATA_FILE = "unit_conversion.json"


def load_data(data_dir: str | Path | None = None) -> dict:
    """The packaged data (or ``data_dir/unit_conversion.json``): few-shot examples and two splits."""
    if data_dir is not None:
        path = Path(data_dir) / DATA_FILE
        if not path.is_file():
            raise DataError(f"no {DATA_FILE} in {data_dir}", "point data_dir at a copy of the packaged data")
        return json.loads(path.read_text(encoding="utf-8"))
    return json.loads(resources.files(__package__).joinpath("data", DATA_FILE).read_text(encoding="utf-8"))


class UnitConversion(Benchmark):
    name = "unit-conversion"
    description = "example plugin: convert units (meters to centimeters...), exact match on the number"
    metric = "exact_match"
    modality = "text"
    splits = ("search", "test")
    search_split = "search"
    test_split = "test"
    options = {"data_dir": None, "shots": 3, "max_new_tokens": 8, "batch_size": 16}

    def __init__(self, **options):
        super().__init__(**options)  # checks option names, fills self.settings
        self._data = None

    @property
    def data(self) -> dict:
        if self._data is None:
            self._data = load_data(self.settings["data_dir"])
        return self._data

    def items(self, split, *, limit=None, seed=None):
        if split not in self.splits:
            raise DataError(f"benchmark {self.name!r} has no split {split!r}", f"use one of {', '.join(self.splits)}")
        rows = [dict(row) for row in self.data["splits"][split]]
        if limit is not None and limit < len(rows):
            rows = random.Random(seed).sample(rows, limit) if seed is not None else rows[:limit]
        return rows

    def prompt(self, question: str) -> str:
        lines = ["Convert the units. Answer with a number."]
        for shot in self.data["shots"][: self.settings["shots"]]:
            lines += [f"Q: {shot['question']}", f"A: {shot['answer']}"]
        lines += [f"Q: {question}", "A:"]
        return "\n".join(lines)

    def predict(self, model, items, *, progress=None):
        prompts = [self.prompt(item["question"]) for item in items]
        return model.generate(prompts, max_new_tokens=self.settings["max_new_tokens"],
                              batch_size=self.settings["batch_size"], stop=["\n"], progress=progress)

    def score(self, items, predictions, *, split):
        per_item = []
        for item, prediction in zip(items, predictions, strict=True):
            per_item.append({"id": item["id"], "question": item["question"], "prediction": prediction,
                             "reference": item["answer"], "exact_match": exact_match(prediction, item["answer"]),
                             "char_f1": char_f1(prediction, item["answer"])})
        n = max(len(per_item), 1)
        metrics = {"exact_match": sum(r["exact_match"] for r in per_item) / n,
                   "char_f1": sum(r["char_f1"] for r in per_item) / n}
        return BenchmarkResult(self.name, split, metrics[self.metric], metrics, per_item)


@hookimpl
def register_benchmarks(register):
    register(UnitConversion)
