"""The tiny zoo's target tasks as benchmark plugins, scored with the same metric code as the real ones.

- ``zoo-ja-vqa``: Japanese questions about images (the miniature JA-VG-VQA), Japanese ROUGE-L with the
  strict-Japanese rule, reported on a 0-1 scale.
- ``zoo-ja-math``: arithmetic word problems asked in Japanese (the miniature MGSM-JA): last-number exact
  match, and ``acc_ja`` which also requires a Japanese answer.

Their data are parquet files inside a built zoo, loaded with ``datasets.load_dataset`` like any dataset.
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path
from typing import Any

from evosuite.api import Benchmark, BenchmarkResult
from evosuite.errors import DataError


@lru_cache(maxsize=8)
def _load_split(parquet: str) -> list[dict[str, Any]]:
    from datasets import load_dataset

    dataset = load_dataset("parquet", data_files={"data": parquet}, split="data")
    return [dict(row) for row in dataset]


class ZooBenchmark(Benchmark):
    task = ""
    splits = ("search", "test")
    search_split = "search"
    test_split = "test"
    options = {"data_dir": None, "batch_size": 64, "max_new_tokens": 12}

    def zoo_dir(self) -> Path:
        if self.settings["data_dir"]:
            return Path(self.settings["data_dir"])
        from evosuite.plugins.zoo.build import zoo_path

        return zoo_path()

    def items(self, split, *, limit=None, seed=None):
        if split not in self.splits:
            raise DataError(f"benchmark {self.name!r} has no split {split!r}", f"use one of {', '.join(self.splits)}")
        manifest = self.zoo_dir() / "zoo.json"
        if not manifest.is_file():
            raise DataError(f"no built zoo at {self.zoo_dir()}",
                            "run `evosuite zoo build`, or point data_dir at a built zoo")
        tasks = json.loads(manifest.read_text())["tasks"]
        rows = _load_split(str(self.zoo_dir() / tasks[self.task][split]))
        if limit is not None and limit < len(rows):
            rows = random.Random(seed).sample(rows, limit) if seed is not None else rows[:limit]
        return rows

    def generation_options(self, progress):
        return {"max_new_tokens": self.settings["max_new_tokens"], "batch_size": self.settings["batch_size"],
                "stop": ["\n"], "progress": progress}


class ZooJapaneseVQA(ZooBenchmark):
    name = "zoo-ja-vqa"
    description = "tiny zoo: Japanese questions about images (miniature JA-VG-VQA), Japanese ROUGE-L"
    metric = "rougeL_ja"
    modality = "image-text"
    task = "zoo-ja-vqa"

    def predict(self, model, items, *, progress=None):
        from evosuite.plugins.zoo.prompts import vqa_prompt

        prompts = [vqa_prompt(item["question"]) for item in items]
        images = [item["image"] for item in items]
        return model.generate(prompts, images, **self.generation_options(progress))

    def score(self, items, predictions, *, split):
        from evosuite.benchmarks.metrics import japanese_rouge_l

        rouge = japanese_rouge_l(list(predictions), [item["answer"] for item in items])
        per_item = [{"id": item["id"], "question": item["question"], "prediction": p, "reference": item["answer"],
                     **scores} for item, p, scores in zip(items, predictions, rouge.per_item)]
        metrics = {"rougeL_ja": rouge.rougeL_ja / 100, "rougeL": rouge.rougeL / 100,
                   "rougeL_ja_low": rouge.rougeL_ja_low / 100, "rougeL_ja_high": rouge.rougeL_ja_high / 100}
        return BenchmarkResult(self.name, split, metrics["rougeL_ja"], metrics, per_item)

    def item_scores(self, items, predictions):
        """Per-item strict-Japanese ROUGE-L F (0-1), as ``japanese_rouge_l`` scores each item but without its
        bootstrap (racing calls this per chunk); their plain mean approximates the bootstrap mid headline."""
        from evosuite.benchmarks.metrics.language import JA_THRESHOLD, japanese_probability
        from evosuite.benchmarks.metrics.rouge_ja import _scorer

        scorer, out = _scorer(), []
        for item, prediction in zip(items, predictions):
            reference = item["answer"]
            if japanese_probability(prediction) < JA_THRESHOLD and japanese_probability(reference) >= JA_THRESHOLD:
                prediction = ""  # the strict-Japanese rule: a non-Japanese answer to a Japanese reference
            out.append(float(scorer.score(reference, prediction)["rougeL"].fmeasure))
        return out


class ZooJapaneseMath(ZooBenchmark):
    name = "zoo-ja-math"
    description = "tiny zoo: arithmetic word problems in Japanese (miniature MGSM-JA), exact match"
    metric = "acc_ja"
    modality = "text"
    task = "zoo-ja-math"

    def predict(self, model, items, *, progress=None):
        from evosuite.plugins.zoo.prompts import math_prompt

        return model.generate([math_prompt(item["question"]) for item in items], None,
                              **self.generation_options(progress))

    def score(self, items, predictions, *, split):
        from evosuite.benchmarks.metrics import mgsm_scores

        scores = mgsm_scores(list(predictions), [item["answer_number"] for item in items])
        per_item = [{"id": item["id"], "question": item["question"], **record}
                    for item, record in zip(items, scores["per_item"])]
        metrics = {"acc_ja": scores["acc_ja"], "acc": scores["acc"]}
        return BenchmarkResult(self.name, split, metrics[self.metric], metrics, per_item)

    def item_scores(self, items, predictions):
        """1.0 per item answered right (in Japanese for ``acc_ja``): their mean is the headline exactly."""
        from evosuite.benchmarks.metrics import mgsm_scores

        key = "correct_ja" if self.metric == "acc_ja" else "correct"
        scores = mgsm_scores(list(predictions), [item["answer_number"] for item in items])
        return [1.0 if record[key] else 0.0 for record in scores["per_item"]]

