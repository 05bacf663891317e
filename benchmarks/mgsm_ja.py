"""MGSM-JA: the 250 grade-school math problems of MGSM in Japanese, answered with chain of thought.

Data, as in the paper: the search's fitness is scored on ``gsm8k-ja``, the final table on MGSM-JA
``test``; the two share no problem.

- ``test`` (held out) and ``train``: ``juletxara/mgsm``, config ``ja`` (``test``: 250 problems, GSM8K test
  items 0-249 translated; ``train``: 8 exemplars). The hub repository is a legacy loading script, so with
  current ``datasets`` the hub's parquet export of the same data is read (``ja/test/0000.parquet``).
- ``gsm8k-ja`` (search): ``SakanaAI/gsm8k-ja-test_250-1319``, split ``test``: 1069 problems, GSM8K test
  items 250-1318 translated with gpt-4-0125-preview (the dataset card), so item id 0 is GSM8K test item
  250. The repository's ``main`` branch holds one JSON-lines file at its top, ``gsm8k-ja-test_250-1319.jsonl``
  (the hub reads its split, ``test``, from the file name); its parquet export is ``default/test/0000.parquet``.
  Its columns: ``question`` (string) and ``answer_number`` (a JSON integer, read as int64).

Offline, ``data_dir`` holds both copies as the hub lays them out: ``<data_dir>/juletxara/mgsm/ja/test/
0000.parquet`` and ``<data_dir>/SakanaAI/gsm8k-ja-test_250-1319/gsm8k-ja-test_250-1319.jsonl``.

As in the paper's evaluation code (evomerge/eval/ja_mgsm.py, evomerge/models/causallm.py): the Japanese
Alpaca chain-of-thought prompt, greedy generation up to 1024 tokens cut at "Instruction"/"Response",
the prediction is the last match of ``\\d*\\.?\\d+`` as a float (quirks included: "1,000" reads as 0.0)
and must equal ``answer_number``; ``acc_ja`` also requires the response's fastText probability of
Japanese to be above 0.5. ``robust_numbers: true`` reads numbers with thousands separators, signs and
full-width digits instead (not the paper's rule).
"""

from __future__ import annotations

import math

from evosuite import hookimpl
from evosuite.api import BenchmarkResult
from evosuite.errors import DataError

from . import hub_data, prompts_ja


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


class MGSMJapanese(hub_data.HubBenchmark):
    name = "mgsm-ja"
    description = ("MGSM-JA (juletxara/mgsm, ja): 250 math word problems held out, search on GSM8K-JA (1069); "
                   "last-number exact match, acc and acc_ja")
    metric = "acc"
    modality = "text"
    dataset_id = "juletxara/mgsm"
    dataset_config = "ja"
    splits = ("test", "train", "gsm8k-ja")
    split_sources = {"gsm8k-ja": hub_data.SplitSource("SakanaAI/gsm8k-ja-test_250-1319", "test")}
    search_split = "gsm8k-ja"
    test_split = "test"
    columns = ("question", "answer_number")
    #: Every language model of the paper used ``ja-alpaca-cot`` (configs/llm/*.yaml).
    adapter_templates = {"llm": "ja-alpaca-cot", "*": "ja-alpaca-cot"}
    options = {"data_dir": None, **prompts_ja.MGSM_GENERATION, "template": None,
               "stop": list(prompts_ja.MGSM_STOP), "robust_numbers": False}

    def to_item(self, index, row):
        if row["answer_number"] is None:
            raise DataError(f"row {index} of {self.name} has no answer_number", "check the data copy")
        return {"id": index, "question": row["question"], "answer_number": row["answer_number"]}

    def template(self, adapter: str) -> str:
        return prompts_ja.resolve_template(self.settings["template"], adapter, self.adapter_templates)

    def prompt(self, item, adapter: str = "*") -> str:
        return prompts_ja.render(self.template(adapter), item["question"])

    def generation_options(self):
        options = {key: self.settings[key] for key in ("max_new_tokens", "num_beams", "repetition_penalty",
                                                       "batch_size")}
        return {**options, "stop": list(self.settings["stop"] or [])}

    def predict(self, model, items, *, progress=None):
        prompts = [self.prompt(item, model.adapter) for item in items]
        self._prompts.update({item["id"]: p for item, p in zip(items, prompts)})
        return model.generate(prompts, None, **self.generation_options(), progress=progress)

    def score(self, items, predictions, *, split):
        from evosuite.benchmarks.metrics import mgsm_scores

        if len(items) != len(predictions):
            raise DataError(f"{len(predictions)} predictions for {len(items)} items", "give one prediction per item")
        scores = mgsm_scores(list(predictions), [item["answer_number"] for item in items],
                             robust=bool(self.settings["robust_numbers"]))
        per_item = []
        for item, response, record in zip(items, predictions, scores["per_item"]):
            per_item.append({"id": item["id"], "question": item["question"],
                             "prompt": self._prompts.get(item["id"]) or self.prompt(item),
                             "prediction": response, "extracted": record["prediction"],
                             "reference": item["answer_number"], "correct": record["correct"],
                             "japanese_probability": record["japanese_probability"],
                             "correct_ja": record["correct_ja"]})
        n = scores["n"]
        metrics = {"acc": scores["acc"], "acc_ja": scores["acc_ja"]}
        for key in ("acc", "acc_ja"):
            low, high = wilson_interval(round(metrics[key] * n), n)
            metrics[f"{key}_low"], metrics[f"{key}_high"] = low, high
        return BenchmarkResult(self.name, split, metrics[self.metric], metrics, per_item)


@hookimpl
def register_benchmarks(register):
    register(MGSMJapanese)
