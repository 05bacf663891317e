"""What the two Japanese VQA benchmarks share: the paper's prompt and generation, and Japanese ROUGE-L.

``ja_vg_vqa`` and ``ja_vlm_wild`` subclass ``JapaneseVQABenchmark``; each says where its data lives and
how a row becomes a question and a reference answer.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from evosuite.api import BenchmarkResult
from evosuite.errors import DataError

from . import hub_data, prompts_ja


class JapaneseVQABenchmark(hub_data.HubBenchmark):
    """A Japanese question about an image, answered freely and scored with Japanese ROUGE-L (0-1)."""

    modality = "image-text"
    metric = "rougeL_ja"
    #: Model adapter -> template name (``"*"``: any other adapter). Every LLaVA model of the paper used
    #: ``ja-shisa-vqa`` (configs/vlm/*.yaml).
    adapter_templates: ClassVar[Mapping[str, str]] = {"vlm": "ja-shisa-vqa", "*": "ja-shisa-vqa"}
    #: Defaults: the paper's configs (5 beams, repetition penalty 1.5, 512 new tokens, batches of 4).
    options = {"data_dir": None, **prompts_ja.VLM_GENERATION, "template": None, "system_message": None,
               "image_token": None}

    # -- prompting -----------------------------------------------------------------------------------
    def template(self, adapter: str) -> str:
        return prompts_ja.resolve_template(self.settings["template"], adapter, self.adapter_templates,
                                           system_message=self.settings["system_message"])

    def prompt(self, item: Mapping[str, Any], adapter: str = "*", image_token: str | None = None) -> str:
        token = self.settings["image_token"] or image_token or "<image>"
        text = prompts_ja.IMAGE_INPUT.format(image=token, question=item["question"])
        return prompts_ja.render(self.template(adapter), text)

    def generation_options(self) -> dict[str, Any]:
        return {key: self.settings[key] for key in ("max_new_tokens", "num_beams", "repetition_penalty", "batch_size")}

    def predict(self, model, items, *, progress=None):
        image_token = getattr(model, "image_token", None)
        prompts = [self.prompt(item, model.adapter, image_token) for item in items]
        self._prompts.update({item["id"]: p for item, p in zip(items, prompts)})
        images = [item["image"] for item in items]
        return model.generate(prompts, images, **self.generation_options(), progress=progress)

    # -- scoring -------------------------------------------------------------------------------------
    def score(self, items, predictions, *, split):
        from evosuite.benchmarks.metrics import japanese_rouge_l

        if len(items) != len(predictions):
            raise DataError(f"{len(predictions)} predictions for {len(items)} items", "give one prediction per item")
        rouge = japanese_rouge_l(list(predictions), [item["answer"] for item in items])
        per_item = []
        for item, prediction, scores in zip(items, predictions, rouge.per_item):
            fields = {k: v for k, v in item.items() if k not in ("image", "answer")}
            per_item.append({**fields, "prompt": self._prompts.get(item["id"]) or self.prompt(item),
                             "prediction": prediction, "reference": item["answer"],
                             "rougeL": scores["rougeL"] / 100, "rougeL_ja": scores["rougeL_ja"] / 100,
                             "is_japanese": scores["is_japanese"]})
        metrics = {
            "rougeL_ja": rouge.rougeL_ja / 100, "rougeL_ja_low": rouge.rougeL_ja_low / 100,
            "rougeL_ja_high": rouge.rougeL_ja_high / 100,
            "rougeL": rouge.rougeL / 100, "rougeL_low": rouge.rougeL_low / 100, "rougeL_high": rouge.rougeL_high / 100,
        }
        return BenchmarkResult(self.name, split, metrics[self.metric], metrics, per_item)
