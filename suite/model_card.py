"""The README.md written beside an exported merge: a Hugging Face model card.

YAML front matter (``base_model``: the source models and the base model, ``base_model_relation: merge``,
tags: ``merge``, ``evosuite``, the benchmark and the merge spaces), then the sources, the held-out scores
with their intervals, the recipe, how to load the model, and the configuration with the command that
reproduces it.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from evosuite.pipeline import space_class, stage_names


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def _interval(metrics: dict[str, Any], metric: str) -> str:
    low, high = metrics.get(f"{metric}_low"), metrics.get(f"{metric}_high")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        return f"{low:.4f} to {high:.4f}"
    return "-"


def _scores(summary: dict[str, Any], config) -> str:
    metric = summary.get("metric", "score")
    sources = {s.name for s in config.sources}
    stages = set(summary.get("stages") or {})
    lines = [f"| model | kind | {metric} | 95% interval |", "|---|---|---|---|"]
    for name, score in summary["test_scores"].items():
        metrics = (summary.get("test_metrics") or {}).get(name) or {}
        shown = _number(score)
        if name == "merged":
            lines.append(f"| **merged** | merged model | **{shown}** | {_interval(metrics, metric)} |")
            continue
        kind = "source" if name in sources else "stage best" if name in stages else "reference merge"
        lines.append(f"| {name} | {kind} | {shown} | {_interval(metrics, metric)} |")
    best = summary.get("best_baseline")
    if best is not None:
        margin = summary["margin_over_best_baseline"]
        lines.append(f"\nReference merges are fixed hand recipes over the same sources, scored on the same items. "
                     f"The best, `{best}`, scores {_number(summary['test_scores'][best])}: the merged model is "
                     f"{abs(margin):.4f} {'above' if margin >= 0 else 'below'} it.")
    return "\n".join(lines)


def _recipe(summary: dict[str, Any]) -> str:
    stages = summary.get("stages") or {}
    parts = []
    if len(stages) > 1:
        parts.append("A pipeline: each stage merges the previous stage's best model with the sources.\n\n"
                     + "\n".join(f"- `{label}`: search fitness {_number(entry.get('search_fitness'))}"
                                 for label, entry in stages.items()))
        for label, entry in stages.items():
            if isinstance(entry.get("recipe"), dict):
                parts.append(f"Stage `{label}`:\n\n```yaml\n{_yaml(entry['recipe'])}```")
    final = "Final stage" if len(stages) > 1 else "The recipe"
    parts.append(f"{final} (as written to the run's `best_recipe.yaml`):\n\n```yaml\n{_yaml(summary['recipe'])}```")
    return "\n\n".join(parts)


def _loading(summary: dict[str, Any]) -> str:
    recipe = summary.get("recipe") or {}
    note = space_class(str(recipe.get("space"))).loading_note(recipe)
    return note or "A standard Hugging Face model directory: any `transformers` loader reads it."


def model_card(summary: dict[str, Any], config) -> str:
    models = [s.model for s in config.sources]
    spaces = stage_names(config.space.name)
    front = {
        "base_model": models + ([config.base_model] if config.base_model else []),
        "base_model_relation": "merge",
        "tags": list(dict.fromkeys(["merge", "evosuite", "evolutionary-model-merge", summary["benchmark"],
                                    *(tag for s in spaces for tag in (space_class(s).card_tags or (s,)))])),
        "library_name": "transformers",
    }
    sources = "\n".join(f"| {s.name} | `{s.model}` |" for s in config.sources)
    base = f"\n\nBase model (the sources' common ancestor): `{config.base_model}`." if config.base_model else ""
    rerun = {k: v for k, v in config.to_dict().items() if k != "evosuite_version"}
    search = f"`{summary['search_split']}` split" if summary.get("search_split") else "search split"
    if summary.get("contaminated"):
        scores_are = (f"the scores below are on its `{summary['split']}` split, which the search scored too, so "
                      f"they are not held out")
    else:
        scores_are = f"the scores below are on its held-out `{summary['split']}` split"
    return (
        f"---\n{_yaml(front)}---\n\n"
        f"# Evolved merge for {summary['benchmark']}\n\n"
        f"This model was made by evosuite, an evolutionary model merge (Sakana AI, arXiv:2403.13187): the "
        f"`{config.optimizer.name}` optimizer searched the `{config.space.name}` merge space for "
        f"{summary['evaluations']} candidate evaluations (seed {summary['seed']}), scoring each candidate on the "
        f"{search} of `{summary['benchmark']}`; {scores_are}.\n\n"
        f"## Source models\n\n| name | model |\n|---|---|\n{sources}{base}\n\n"
        f"## Scores on {summary['benchmark']} ({summary['split']} split, {summary.get('metric', 'score')})\n\n"
        f"{_scores(summary, config)}\n\n"
        f"## Recipe\n\n{_recipe(summary)}\n\n"
        f"## Loading\n\n{_loading(summary)}\n\n"
        f"## Reproduce\n\nSave this configuration as `config.yaml`:\n\n```yaml\n{_yaml(rerun)}```\n\n"
        f"and run:\n\n```\nevosuite run --config config.yaml --report\n```\n"
    )
