"""``image-classification``: zero-shot image classification accuracy of an OpenCLIP-style model on any
``datasets`` image classification set (a hub id, a local image folder, or local parquet/arrow files).

Each class's text embedding averages its prompts (``templates``, each with ``{}`` for the class name); an
image is assigned the most similar class. The model must have modality ``image-classification`` (the ``clip``
adapter's models): it is asked ``model.classify(images, class_names, templates=...)``.

Options: ``dataset`` (a ``datasets`` id, or a local directory or parquet file; ``data_dir`` is passed on
to ``load_dataset``), ``split`` (held out, for the final table) and ``search_split`` (for the search;
default: ``split``, and the run is then contaminated), ``image_column``, ``label_column`` (a ``ClassLabel``
column, whose names are the classes, or a string column), ``class_names`` (the prompts' class names in label
order; needed for an integer label column without names), ``templates``, ``batch_size``.
"""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from evosuite import hookimpl
from evosuite.api import Benchmark, BenchmarkResult
from evosuite.errors import ConfigError, DataError, ModelError

MODALITY = "image-classification"


@lru_cache(maxsize=8)
def load_rows(dataset: str, split: str, data_dir: str | None = None) -> tuple[list[dict[str, Any]], Any]:
    """The rows of one split (``dict``s, images decoded) and the split's ``features``."""
    from datasets import load_dataset

    path = Path(dataset)
    try:
        if path.is_file() and path.suffix in (".parquet", ".arrow"):
            builder = "parquet" if path.suffix == ".parquet" else "arrow"
            data = load_dataset(builder, data_files={split: str(path)}, split=split)
        elif path.is_dir() and (path / f"{split}.parquet").is_file():
            data = load_dataset("parquet", data_files={split: str(path / f"{split}.parquet")}, split=split)
        else:
            data = load_dataset(dataset, data_dir=data_dir, split=split)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise DataError(f"cannot load split {split!r} of dataset {dataset!r}: {text[0] if text else exc!r}",
                        "give a datasets id reachable from here, a local image folder or a parquet file") from None
    return [dict(row) for row in data], data.features


def check_model(model, benchmark: str) -> None:
    if getattr(model, "modality", None) != MODALITY or not getattr(model, "classifies", False):
        raise ModelError(f"benchmark {benchmark!r} classifies images zero-shot; model "
                         f"{getattr(model, 'name_or_path', model)!r} ({getattr(model, 'modality', '?')}) cannot",
                         "use an OpenCLIP model (the clip adapter)")


class ImageClassificationBase(Benchmark):
    """Zero-shot classification accuracy; subclasses say where the rows, class names and templates come from.

    An item is ``{"id", "image", "label"}`` with ``label`` a class name; a prediction is a class name.
    """

    metric = "accuracy"
    modality = MODALITY

    def class_names(self) -> list[str]:
        raise NotImplementedError

    def templates(self) -> list[str]:
        raise NotImplementedError

    def rows(self, split: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def items(self, split, *, limit=None, seed=None):
        if split not in self.splits:
            raise DataError(f"benchmark {self.name!r} has no split {split!r}", f"use one of {', '.join(self.splits)}")
        rows = self.rows(split)
        if limit is not None and limit < len(rows):
            rows = random.Random(seed).sample(rows, limit) if seed is not None else rows[:limit]
        return rows

    def predict(self, model, items, *, progress=None):
        check_model(model, self.name)
        names = self.class_names()
        predicted = model.classify([item["image"] for item in items], names, templates=self.templates(),
                                   batch_size=self.settings.get("batch_size") or 256)
        if progress is not None:
            progress(len(items), len(items))
        return [names[i] for i in predicted]

    def item_scores(self, items, predictions) -> list[float]:
        """1.0 per image classified right: their mean is the headline accuracy exactly."""
        return [1.0 if p == item["label"] else 0.0 for item, p in zip(items, predictions)]

    def score(self, items, predictions, *, split):
        scores = self.item_scores(items, predictions)
        per_item = [{"id": item["id"], "prediction": p, "reference": item["label"], "correct": bool(s)}
                    for item, p, s in zip(items, predictions, scores)]
        accuracy = sum(scores) / len(scores) if scores else 0.0
        metrics = {"accuracy": accuracy, **self.group_metrics(items, scores)}
        return BenchmarkResult(self.name, split, accuracy, metrics, per_item)

    def group_metrics(self, items: Sequence[dict[str, Any]], scores: Sequence[float]) -> dict[str, float]:
        """Extra metrics (e.g. accuracy per label subset); none by default."""
        return {}


class ImageClassification(ImageClassificationBase):
    name = "image-classification"
    description = "zero-shot image classification accuracy on any datasets image classification set"
    splits = ("search", "test")
    search_split = "search"
    test_split = "test"
    options = {"dataset": None, "data_dir": None, "split": "test", "search_split": None, "image_column": "image",
               "label_column": "label", "class_names": None, "templates": ["a photo of a {}."], "batch_size": 256}

    def __init__(self, **options):
        super().__init__(**options)
        if not self.settings["dataset"]:
            raise ConfigError("benchmark 'image-classification' needs a dataset",
                              "set its option dataset: a datasets id, a local image folder or a parquet file")
        templates = self.settings["templates"]
        if isinstance(templates, str):
            templates = [templates]
        if not templates or any("{}" not in t for t in templates):
            raise ConfigError("every template of 'image-classification' needs a {} for the class name",
                              "e.g. templates: ['a photo of a {}.']")
        self._templates = list(templates)
        split = self.settings["split"]
        self._split_of = {"test": split, "search": self.settings["search_split"] or split}

    def templates(self):
        return self._templates

    def split_source(self, split):
        # "search" and "test" are names for the dataset's splits chosen by option: the same one unless
        # search_split names another (then the run is not contaminated).
        return (str(self.settings["dataset"]), self._split_of[split])

    def _load(self, split: str):
        return load_rows(str(self.settings["dataset"]), self._split_of[split], self.settings["data_dir"])

    def class_names(self) -> list[str]:
        given = self.settings["class_names"]
        if given:
            return list(given)
        rows, features = self._load("test")
        feature = features.get(self.settings["label_column"])
        names = getattr(feature, "names", None)
        if names:
            return [n.replace("_", " ") for n in names]
        labels = {row[self.settings["label_column"]] for row in rows}
        if not all(isinstance(v, str) for v in labels):
            raise ConfigError(f"label column {self.settings['label_column']!r} holds numbers without class names",
                              "give the class_names option, in label order")
        return sorted(labels)

    def rows(self, split):
        rows, _ = self._load(split)
        image_column, label_column = self.settings["image_column"], self.settings["label_column"]
        if rows and (image_column not in rows[0] or label_column not in rows[0]):
            raise DataError(f"dataset {self.settings['dataset']!r} has no column "
                            f"{image_column if image_column not in rows[0] else label_column!r}",
                            f"its columns: {', '.join(rows[0])}; set image_column and label_column")
        names = self.class_names()
        out = []
        for i, row in enumerate(rows):
            label = row[label_column]
            label = names[label] if isinstance(label, int) else str(label)
            out.append({"id": row.get("id", i), "image": row[image_column], "label": label})
        return out


@hookimpl
def register_benchmarks(register):
    register(ImageClassification)
