"""One evolution run from a configuration to a summary: plugins resolved, models loaded, the evolver run,
the held-out table scored and the best merge exported, all recorded in the run store.

Everything model- or task-specific happens behind the plugin objects; this module only wires them.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

from evosuite import __version__
from evosuite.config import RunConfig, parse_config
from evosuite.errors import ConfigError, EvosuiteError
from evosuite.evolver import Evolver
from evosuite.models import check_mergeable, load_model
from evosuite.plugin_manager import get_host
from evosuite.run_store import RunStore
from evosuite.tui import Reporter

MERGED = "merged"


class Plan:
    """The plugin classes a configuration names, resolved (and their options checked) before any work."""

    def __init__(self, config: RunConfig):
        host = get_host()
        self.config = config
        self.benchmark_cls = host.registry("benchmarks").get(config.benchmark.name)
        self.space_cls = host.registry("spaces").get(config.space.name)
        self.optimizer_cls = host.registry("optimizers").get(config.optimizer.name)
        self.benchmark = self.benchmark_cls(**config.benchmark.options)
        for spec, cls, kind in ((config.space, self.space_cls, "merge space"),
                                (config.optimizer, self.optimizer_cls, "optimizer")):
            unknown = sorted(set(spec.options) - set(cls.options))
            if unknown:
                raise ConfigError(f"unknown option {unknown[0]!r} for {kind} {spec.name!r}",
                                  f"valid options: {', '.join(sorted(cls.options)) or 'none'}")
        if self.space_cls.needs_base and not config.base_model:
            raise ConfigError(f"merge space {config.space.name!r} needs a base model",
                              "set base_model to the sources' common ancestor")


def _load_models(config: RunConfig, reporter: Reporter):
    kwargs = dict(dtype=config.dtype, device=config.device, trust_remote_code=config.trust_remote_code,
                  allow_pickle=config.allow_pickle)
    models = {}
    for spec in config.sources:
        reporter.message(f"loading {spec.name}: {spec.model}")
        models[spec.name] = load_model(spec.model, adapter=spec.adapter, **kwargs)
    base = None
    if config.base_model:
        reporter.message(f"loading base model: {config.base_model}")
        base = load_model(config.base_model, **kwargs)
    check_mergeable({**models, **({"base model": base} if base is not None else {})})
    return models, base


def run_experiment(config: RunConfig, run_dir: str | Path, reporter: Reporter, *, resume: bool = False,
                   save_model: bool = True) -> dict[str, Any]:
    """Run (or resume) one evolution and return its summary; every result is also in ``run_dir``."""
    plan = Plan(config)
    store = RunStore(run_dir)
    if not resume:
        store.create({**config.to_dict(), "evosuite_version": __version__})
    else:
        store.set_status("running", resumed=True)
    try:
        summary = _execute(plan, store, reporter, save_model=save_model)
    except KeyboardInterrupt:
        store.set_status("interrupted", fix=f"evosuite resume {store.path}")
        raise
    except EvosuiteError as exc:
        store.set_status("failed", error=str(exc))
        raise
    store.set_status("finished")
    return summary


def _execute(plan: Plan, store: RunStore, reporter: Reporter, *, save_model: bool) -> dict[str, Any]:
    config, benchmark = plan.config, plan.benchmark
    reporter.stage("loading models")
    models, base = _load_models(config, reporter)
    carrier = models[config.carrier_name()]
    if benchmark.modality == "image-text" and carrier.modality != "image-text":
        raise ConfigError(f"benchmark {benchmark.name!r} needs images but the carrier {config.carrier_name()!r} "
                          "is a text model", "set carrier to the VLM source")
    space = plan.space_cls(list(models.values()), list(models), base, carrier, seed=config.seed,
                           **config.space.options)
    search_items = benchmark.items(benchmark.search_split, limit=config.search_limit, seed=config.seed)

    def fitness(genome, progress):
        model = space.candidate(genome)
        predictions = benchmark.predict(model, search_items, progress=progress)
        return benchmark.score(search_items, predictions, split=benchmark.search_split).score

    optimizer = plan.optimizer_cls(space.dimension, seed=config.seed, x0=space.initial_genome(),
                                   **config.optimizer.options)
    reporter.stage(f"{space.name} search on {benchmark.name}/{benchmark.search_split} "
                   f"({len(search_items)} items, {space.dimension} genes)")
    evolver = Evolver(stage=space.name, optimizer=optimizer, evaluate=fitness, store=store, budget=config.budget,
                      events=reporter, max_consecutive_failures=config.max_consecutive_failures)
    best = evolver.run()
    store.write_yaml("best_recipe.yaml", {"fitness": best.fitness, "genome": best.genome,
                                          "recipe": space.recipe(best.genome)})

    # The held-out table: each source as it is (in the carrier, so a text LM sees through the VLM's vision
    # tower on an image task), the space's references, and the evolved merge.
    reporter.stage(f"held-out table on {benchmark.name}/{benchmark.test_split}")
    test_items = benchmark.items(benchmark.test_split, limit=config.test_limit, seed=config.seed)
    builders = {name: _source_in_carrier(carrier, model) for name, model in models.items()}
    builders.update(space.references())
    builders[MERGED] = lambda: space.candidate(best.genome)
    finals = store.finals()
    for name, build in builders.items():
        if name in finals:
            continue
        reporter.message(f"scoring {name} on the test split")
        start = time.perf_counter()
        result = benchmark.evaluate(build(), benchmark.test_split, items=test_items,
                                    progress=reporter.item_progress)
        record = {"name": name, "score": result.score, "metrics": result.metrics,
                  "seconds": time.perf_counter() - start}
        store.log_final(record)
        finals[name] = record

    summary = {
        "benchmark": benchmark.name,
        "metric": benchmark.metric,
        "split": benchmark.test_split,
        "test_scores": {name: finals[name]["score"] for name in builders},
        "test_metrics": {name: finals[name]["metrics"] for name in builders},
        "search_fitness": best.fitness,
        "best_genome": best.genome,
        "recipe": space.recipe(best.genome),
        "evaluations": len(evolver.history),
        "failed_evaluations": sum(1 for e in evolver.history if e.failed),
        "seed": config.seed,
        "sources": [s.name for s in config.sources],
    }
    if save_model:
        reporter.message("saving the merged model")
        _save_atomically(space.candidate(best.genome), store.path / "model", summary, config)
        summary["model_dir"] = str(store.path / "model")
    store.write_json("summary.json", summary)
    rows = [{"name": name, "score": score, "detail": _detail(finals[name]["metrics"])}
            for name, score in summary["test_scores"].items()]
    reporter.final_table(f"{benchmark.name} ({benchmark.test_split}, {benchmark.metric})", rows, str(store.path))
    return summary


def _detail(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v))


def _source_in_carrier(carrier, model):
    """A source as it is, inside the carrier: a text LM facing an image task sees through its vision tower."""
    if model is carrier:
        return lambda: carrier

    def build():
        shell = carrier.clone()
        target = shell.mergeable_parameters()
        for name, tensor in model.mergeable_parameters().items():
            target[name].copy_(tensor)
        return shell

    return build


def _save_atomically(model, out_dir: Path, summary: dict[str, Any], config: RunConfig) -> None:
    from evosuite.model_card import model_card

    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp, model_card=model_card(summary, config))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)


def config_from_store(store: RunStore) -> RunConfig:
    data = store.config()
    data.pop("evosuite_version", None)
    return parse_config(data)
