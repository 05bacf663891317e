"""The end of a run: the best recipes, the held-out table, ``summary.json``, the exported merge.

``finish`` takes what the searches found (each stage's space and best evaluation) and writes it all to the
run store; a resumed run reuses every held-out row that scored the very same model.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

from evosuite.baselines import baseline_summary, bound_summary
from evosuite.config import RunConfig
from evosuite.run_store import RunStore

#: The final table's name for the run's result (the last stage's best merge).
MERGED = "merged"


def finish(plan, store: RunStore, reporter, *, models: Mapping[str, Any], carrier, results: Mapping[str, tuple],
           test_items, evaluations: int, stats: Mapping[str, dict], load_notes: list[str],
           save_model: bool) -> dict[str, Any]:
    """Write best_recipe.yaml, score the held-out table, write summary.json (and the model) and show the table.

    ``results``: stage label -> ``(space, best evaluation)``, in stage order; ``stats``: per stage, what the
    search measured (workers, utilization, warm start, genes on a bound).
    """
    config, benchmark = plan.config, plan.benchmark
    final_label = list(results)[-1]
    final_space, final_best = results[final_label]
    recipe, why_not = final_space.mergekit_recipe(final_best.genome)
    store.write_yaml("best_recipe.yaml", {
        **(recipe if recipe is not None else {"no_mergekit_recipe": why_not}),  # `evosuite merge` rebuilds it
        "fitness": final_best.fitness, "genome": final_best.genome, "recipe": final_space.recipe(final_best.genome),
        "stages": {label: {"genome": b.genome, "fitness": b.fitness, "recipe": s.recipe(b.genome)}
                   for label, (s, b) in results.items()},
    })
    reporter.stage(f"held-out table on {benchmark.name}/{benchmark.test_split}")
    baselines = list(results[plan.stages[0].label][0].references(config.baselines))
    test_scores, test_metrics = _held_out_table(plan, store, reporter, models, carrier, results, test_items)
    summary = {
        "benchmark": benchmark.name,
        "metric": benchmark.metric,
        "split": benchmark.test_split,
        "search_split": benchmark.search_split,
        "contaminated": benchmark.contaminated,  # True: the search saw the held-out items
        "test_scores": test_scores,
        "test_metrics": test_metrics,
        "search_fitness": final_best.fitness,
        "best_genome": final_best.genome,
        "recipe": final_space.recipe(final_best.genome),
        "stages": {label: {"best_genome": b.genome, "search_fitness": b.fitness, "recipe": s.recipe(b.genome)}
                   for label, (s, b) in results.items()},
        "evaluations": evaluations,
        "seed": config.seed,
        "sources": [s.name for s in config.sources],
        "workers": config.workers,
        "evaluation": dict(stats),  # per stage: worker utilization, items scored (cheaper fitness)
        "loading": load_notes,  # carrier choice, vocabulary alignment, config differences: one line each
        **baseline_summary(baselines, test_scores, MERGED),
        **bound_summary(stats[final_label]),
    }
    if save_model:
        reporter.message("saving the merged model")
        export_atomically(final_space, final_best.genome, store.path / "model", summary, config)
        summary["model_dir"] = str(store.path / "model")
    store.write_json("summary.json", summary)
    kinds = {**{n: "source" for n in models}, **{n: "reference" for n in baselines}}
    rows = [{"name": name, "score": score, "detail": _detail(test_metrics[name]), "kind": kinds.get(name, "merge")}
            for name, score in test_scores.items() if not (name == MERGED and len(results) > 1)]
    reporter.final_table(f"{benchmark.name} ({benchmark.test_split}, {benchmark.metric})", rows, str(store.path))
    return summary


def _held_out_table(plan, store: RunStore, reporter, models, carrier, results, test_items):
    """Each source as it is (in the carrier, so a text LM sees through the VLM's vision tower on an image
    task), the first space's references, and each stage's best merge, scored on the held-out items."""
    benchmark = plan.benchmark
    builders = {name: _source_in_carrier(carrier, model) for name, model in models.items()}
    builders.update(results[plan.stages[0].label][0].references(plan.config.baselines))
    genomes: dict[str, list[float]] = {}
    for label, (space, best) in results.items():
        key = MERGED if len(results) == 1 else label
        builders[key] = (lambda s=space, b=best: s.candidate(b.genome))
        genomes[key] = best.genome
    finals = store.finals()
    for name, build in builders.items():
        # A row is reused only if it scored this very model: a resume that searched on (a larger budget)
        # scores its new best again instead of reporting the old one.
        if name in finals and finals[name].get("genome") == genomes.get(name):
            continue
        reporter.message(f"scoring {name} on the test split")
        start = time.perf_counter()
        result = benchmark.evaluate(build(), benchmark.test_split, items=test_items,
                                    progress=reporter.item_progress)
        record = {"name": name, "score": result.score, "metrics": result.metrics,
                  "seconds": time.perf_counter() - start, "genome": genomes.get(name)}
        store.log_final(record)
        finals[name] = record
    test_scores = {name: finals[name]["score"] for name in builders}
    test_metrics = {name: finals[name]["metrics"] for name in builders}
    if len(results) > 1:
        final_label = list(results)[-1]
        test_scores[MERGED], test_metrics[MERGED] = test_scores[final_label], test_metrics[final_label]
    return test_scores, test_metrics


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


def export_atomically(space, genome, out_dir: Path, summary: dict[str, Any], config: RunConfig) -> None:
    """Export the best merge beside ``out_dir``, then rename it into place."""
    from evosuite.model_card import model_card

    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        space.export(genome, tmp, model_card=model_card(summary, config))
    except BaseException:  # disk full, Ctrl-C, SIGTERM: leave no half-written model behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
