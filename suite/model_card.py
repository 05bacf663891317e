"""The README.md written beside an exported merge: a Hugging Face model card with the recipe and scores."""

from __future__ import annotations

from typing import Any

import yaml


def model_card(summary: dict[str, Any], config) -> str:
    sources = [s.model for s in config.sources]
    front = {
        "base_model": sources + ([config.base_model] if config.base_model else []),
        "tags": ["merge", "evosuite", "evolutionary-model-merge", summary["benchmark"]],
        "library_name": "transformers",
    }
    rows = "\n".join(f"| {name} | {score:.4f} |" for name, score in summary["test_scores"].items())
    recipe = yaml.safe_dump(summary["recipe"], sort_keys=False, allow_unicode=True)
    return (
        f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n\n"
        f"# Evolved merge\n\n"
        f"This model was produced by [evosuite](https://pypi.org/project/evosuite/) with an evolutionary search "
        f"({summary['evaluations']} evaluations, seed {summary['seed']}) over merges of: "
        f"{', '.join(f'`{s}`' for s in sources)}.\n\n"
        f"## Scores on {summary['benchmark']} ({summary['split']} split, {summary['metric']})\n\n"
        f"| model | score |\n|---|---|\n{rows}\n\n"
        f"## Recipe\n\n```yaml\n{recipe}```\n\n"
        f"## Reproduce\n\n```\nevosuite run --config config.yaml --seed {summary['seed']}\n```\n"
    )
