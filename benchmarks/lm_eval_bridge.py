"""Optional bridge to lm-evaluation-harness: any of its tasks as an evosuite benchmark (or fitness).

Registers the benchmark ``lm-eval`` only when the ``lm_eval`` package is importable; otherwise it
registers nothing and says nothing. Choose the task with the ``task`` option::

    evosuite eval --model M --benchmark lm-eval -O task=arc_easy -O num_fewshot=0
    # run config:  benchmark: {name: lm-eval, options: {task: arc_easy, metric: acc_norm}}

lm-eval builds the requests and scores them; this module only answers them with the evosuite model
(``generate_until`` through ``LoadedModel.generate``; ``loglikelihood`` with a forward pass of the
model's ``module`` and ``tokenizer``, which the transformers-based adapters have). Item ids are the
indices of the task's evaluation documents. ``evosuite score`` can score predictions made elsewhere for
generation tasks (lm-eval's ``process_results`` on the raw text, without the task's answer filters).
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from functools import lru_cache
from typing import Any

from evosuite import hookimpl
from evosuite.api import Benchmark, BenchmarkResult
from evosuite.errors import ConfigError, DataError, ModelError

from . import hub_data


def available() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


@lru_cache(maxsize=4)
def task_manager(include_path: str | None, include_defaults: bool):
    """lm-eval's task index (indexing its bundled tasks takes about half a minute: done once per process)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=include_defaults)


def _lm_class():
    """An ``lm_eval`` LM answering requests with an evosuite ``LoadedModel`` (built lazily: lm_eval is optional)."""
    from lm_eval.api.model import LM

    class EvosuiteLM(LM):
        def __init__(self, model, *, batch_size: int, max_new_tokens: int, max_length: int):
            super().__init__()
            self.model = model
            self.batch_size = batch_size
            self.max_new_tokens = max_new_tokens
            self.max_length = max_length

        def _parts(self):
            tokenizer, module = getattr(self.model, "tokenizer", None), getattr(self.model, "module", None)
            if tokenizer is None or module is None:
                raise ModelError(f"model {self.model.name_or_path!r} gives no log-likelihoods",
                                 "use an lm-eval generation task, or a transformers-based model")
            return tokenizer, module

        def _logprob(self, context: str, continuation: str) -> tuple[float, bool]:
            import torch

            tokenizer, module = self._parts()
            context_ids = tokenizer(context, add_special_tokens=True)["input_ids"] if context else []
            if not context_ids:
                bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
                context_ids = [bos]
            target_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
            ids = (context_ids + target_ids)[-self.max_length:]
            n = min(len(target_ids), len(ids) - 1)
            device = next(module.parameters()).device
            with torch.inference_mode():
                logits = module(input_ids=torch.tensor([ids], device=device)).logits[0].float()
            logprobs = torch.log_softmax(logits[-n - 1:-1], dim=-1)
            wanted = torch.tensor(ids[-n:], device=device)
            total = float(logprobs.gather(1, wanted[:, None]).sum())
            greedy = bool((logprobs.argmax(-1) == wanted).all())
            return total, greedy

        def loglikelihood(self, requests):
            return [self._logprob(*request.args) for request in requests]

        def loglikelihood_rolling(self, requests):
            return [self._logprob("", request.args[0])[0] for request in requests]

        def generate_until(self, requests):
            groups: dict[Any, list[int]] = defaultdict(list)
            for index, request in enumerate(requests):
                gen_kwargs = dict(request.args[1] or {})
                until = gen_kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                key = (tuple(until), int(gen_kwargs.get("max_gen_toks", self.max_new_tokens)))
                groups[key].append(index)
            outputs: list[str] = [""] * len(requests)
            for (until, max_tokens), indices in groups.items():
                texts = self.model.generate([requests[i].args[0] for i in indices], None, max_new_tokens=max_tokens,
                                            num_beams=1, stop=list(until), batch_size=self.batch_size)
                for i, text in zip(indices, texts):
                    outputs[i] = text
            return outputs

    return EvosuiteLM


class LmEvalTask(Benchmark):
    name = "lm-eval"
    description = "any lm-evaluation-harness task (-O task=NAME), requests answered by the evosuite model"
    metric = "lm-eval"
    modality = "text"
    #: The task's evaluation documents are its only split, so a search on them is contaminated.
    splits = ("test",)
    search_split = "test"
    test_split = "test"
    #: ``include_path``: a folder of your own task YAML files; ``include_defaults: false`` skips lm-eval's
    #: bundled tasks (faster when the task is in ``include_path``).
    options = {"task": None, "metric": None, "num_fewshot": None, "include_path": None, "include_defaults": True,
               "batch_size": 8,
               "max_new_tokens": 256, "max_length": 2048, "data_dir": None}

    def __init__(self, **options):
        super().__init__(**options)
        if not self.settings["task"]:
            raise ConfigError("benchmark 'lm-eval' needs a task", "give -O task=NAME (an lm-eval task name)")
        self._task = None
        self._samples: dict[int, dict[str, Any]] = {}
        if self.settings["metric"]:
            self.metric = str(self.settings["metric"])

    # -- the lm-eval task ------------------------------------------------------------------------------
    def task(self):
        if self._task is None:
            from lm_eval.tasks import get_task_dict

            include_path = self.settings["include_path"]
            manager = task_manager(str(include_path) if include_path else None,
                                   bool(self.settings["include_defaults"]))
            name = self.settings["task"]
            try:
                tasks = get_task_dict([name], manager)
            except Exception as exc:  # noqa: BLE001
                raise ConfigError(f"lm-eval cannot load task {name!r}: {hub_data._first_line(exc)}",
                                  "check the task name (`lm_eval ls tasks`) and that its data is reachable") from None
            if name not in tasks or isinstance(tasks[name], dict):
                raise ConfigError(f"lm-eval task {name!r} is a group", "name one of its tasks")
            task = tasks[name]
            if self.settings["num_fewshot"] is not None:
                task.set_config(key="num_fewshot", value=int(self.settings["num_fewshot"]))
            if not self.settings["metric"]:
                self.metric = next(iter(task.aggregation()))
            self._task = task
        return self._task

    def docs(self):
        return list(self.task().eval_docs)

    def items(self, split, *, limit=None, seed=None):
        if split not in self.splits:
            raise DataError(f"benchmark 'lm-eval' has no split {split!r}", "use test (the task's evaluation documents)")
        task, docs = self.task(), self.docs()
        indices = hub_data.subset_indices(len(docs), limit=limit, seed=seed)
        return [{"id": i, "question": task.doc_to_text(docs[i]), "reference": task.doc_to_target(docs[i])}
                for i in indices]

    def items_by_id(self, split, ids):
        docs = self.docs()
        bad = [i for i in ids if not 0 <= i < len(docs)]
        if bad:
            raise DataError(f"item id {bad[0]} is outside lm-eval task {self.settings['task']!r}",
                            f"ids are 0..{len(docs) - 1}")
        task = self.task()
        return [{"id": i, "question": task.doc_to_text(docs[i]), "reference": task.doc_to_target(docs[i])}
                for i in ids]

    # -- predicting and scoring ---------------------------------------------------------------------------
    def predict(self, model, items, *, progress=None):
        from lm_eval import evaluator

        task = self.task()
        lm = _lm_class()(model, batch_size=int(self.settings["batch_size"]),
                         max_new_tokens=int(self.settings["max_new_tokens"]),
                         max_length=int(self.settings["max_length"]))
        ids = [item["id"] for item in items]
        name = self.settings["task"]
        results = evaluator.evaluate(lm=lm, task_dict={name: task}, samples={name: ids}, bootstrap_iters=0,
                                     log_samples=True, verbosity="ERROR")
        first_filter = None
        for sample in results["samples"][name]:
            if first_filter is None:
                first_filter = sample["filter"]
            if sample["filter"] == first_filter:
                self._samples[sample["doc_id"]] = sample
        if progress is not None:
            progress(len(items), len(items))
        return [self._prediction(self._samples[i]) for i in ids]

    @staticmethod
    def _prediction(sample) -> str:
        responses = sample["filtered_resps"]
        if responses and isinstance(responses[0], (list, tuple)):  # log-likelihoods: the chosen option
            best = max(range(len(responses)), key=lambda k: responses[k][0])
            return str(best)
        return str(responses[0]) if responses else ""

    def score(self, items, predictions, *, split):
        task = self.task()
        metric = self.metric
        docs = None
        values, per_item = [], []
        for item, prediction in zip(items, predictions):
            sample = self._samples.get(item["id"])
            if sample is not None and self._prediction(sample) == prediction:
                value = sample[metric]
            elif task.OUTPUT_TYPE == "generate_until":
                docs = docs if docs is not None else self.docs()
                value = task.process_results(docs[item["id"]], [prediction])[metric]
            else:
                raise DataError(f"lm-eval task {self.settings['task']!r} scores log-likelihoods, not text",
                                "score it with `evosuite eval`, not from predictions")
            values.append(value)
            per_item.append({"id": item["id"], "question": item["question"], "prompt": item["question"],
                             "prediction": prediction, "reference": item["reference"],
                             metric: value if isinstance(value, (int, float)) else str(value)})
        headline = float(task.aggregation()[metric](values))
        return BenchmarkResult(self.name, split, headline, {metric: headline}, per_item)


@hookimpl
def register_benchmarks(register):
    if available():  # lm-evaluation-harness is optional: without it this plugin adds nothing
        register(LmEvalTask)
