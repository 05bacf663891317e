"""``zoo-clip-union``: the CLIP zoo's target task. Zero-shot classification of held-out coloured-shape images
over the union of the two experts' label subsets (24 classes, prompt ``"a red circle"``), scored with the
same code path as the generic ``image-classification`` benchmark; accuracy per subset and the accuracy's 95%
(Wilson) interval are reported beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

from evosuite.benchmarks.image_classification import ImageClassificationBase, load_rows
from evosuite.errors import DataError


class ZooClipUnion(ImageClassificationBase):
    name = "zoo-clip-union"
    description = "tiny CLIP zoo: zero-shot classification over the union of two experts' label subsets"
    task = "zoo-clip-union"
    splits = ("search", "test")
    search_split = "search"
    test_split = "test"
    options = {"data_dir": None, "batch_size": 256}

    def zoo_dir(self) -> Path:
        if self.settings["data_dir"]:
            return Path(self.settings["data_dir"])
        from evosuite.plugins.zoo.clip_build import clip_zoo_path

        return clip_zoo_path()

    def meta(self) -> dict:
        manifest = self.zoo_dir() / "zoo.json"
        if not manifest.is_file():
            raise DataError(f"no built CLIP zoo at {self.zoo_dir()}",
                            "run `evosuite run --plugin clip` once, or point data_dir at a built CLIP zoo")
        return json.loads(manifest.read_text())

    def class_names(self):
        return list(self.meta()["classes"])

    def templates(self):
        return list(self.meta()["templates"])

    def rows(self, split):
        path = self.zoo_dir() / self.meta()["tasks"][self.task][split]
        rows, _ = load_rows(str(path), split)
        return [{"id": r["id"], "image": r["image"], "label": r["label"], "subset": r["subset"]} for r in rows]

    def group_metrics(self, items, scores):
        from evosuite.benchmarks.mgsm_ja import wilson_interval

        # The accuracy's 95% interval (Wilson), shown beside every score of the final table.
        out = dict(zip(("accuracy_low", "accuracy_high"), wilson_interval(round(sum(scores)), len(scores))))
        for subset in sorted({item["subset"] for item in items}):
            chosen = [s for item, s in zip(items, scores) if item["subset"] == subset]
            out[f"accuracy_{subset}"] = sum(chosen) / len(chosen)
        return out

