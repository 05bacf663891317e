"""One table from several runs on the same benchmark: each source once, then every run's merges.

This is how the README's table of sources, PS, DFS, PS+DFS and the W = 1 ablation is produced: one run per
space, then ``evosuite compare RUN_DIR...``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evosuite.errors import ConfigError
from evosuite.run_store import RunStore


def _summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    if not path.is_file():
        raise ConfigError(f"{str(run_dir)!r} has no summary.json (the run has not finished)",
                          f"finish it with `evosuite resume {run_dir}` or leave it out")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        summary = None
    keys = ("benchmark", "split", "metric", "test_scores")
    if not isinstance(summary, dict) or not all(k in summary for k in keys) or not isinstance(
            summary["test_scores"], dict):
        raise ConfigError(f"{str(path)!r} is not a summary evosuite wrote (unreadable or incomplete)",
                          f"write it again with `evosuite resume {run_dir}` or leave the run out")
    return summary


def _row_inputs(run_dir: Path, summary: dict[str, Any]) -> dict[str, str]:
    """Row name -> what its score depends on: two runs share a row only when this is equal.

    A source's row depends on that source's model (and the carrier it is scored in); a reference merge's
    on every source; both on the benchmark settings.
    """
    try:
        config = RunStore(run_dir).config()
    except (OSError, ConfigError):  # a summary alone: its source names and seed are all there is to go by
        config = {"sources": summary.get("sources"), "seed": summary.get("seed")}
    common = {k: config.get(k) for k in ("base_model", "benchmark", "test_limit", "seed", "dtype")}
    sources = [s for s in config.get("sources") or [] if isinstance(s, dict)]
    carrier = next((s for s in sources if s.get("name") == config.get("carrier")), sources[-1] if sources else None)
    keys = {name: json.dumps({**common, "all": config.get("sources")}, sort_keys=True, default=str)
            for name in summary["test_scores"]}
    for source in sources:
        keys[str(source.get("name"))] = json.dumps({**common, "source": source, "carrier": carrier},
                                                   sort_keys=True, default=str)
    return keys


def comparison_rows(run_dirs: list[str | Path]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the first run's summary, rows of {model, run, score, low, high}): sources and reference merges once,
    then each run's merges."""
    summaries = [(Path(d), _summary(Path(d))) for d in run_dirs]
    first = summaries[0][1]
    for run_dir, summary in summaries[1:]:
        if (summary["benchmark"], summary["split"]) != (first["benchmark"], first["split"]):
            raise ConfigError(f"{str(run_dir)!r} is scored on {summary['benchmark']}/{summary['split']}, not "
                              f"{first['benchmark']}/{first['split']}", "compare runs of one benchmark")
    metric = first["metric"]
    inputs = {run_dir: _row_inputs(run_dir, summary) for run_dir, summary in summaries}
    versions: dict[str, set[str]] = {}
    for run_dir, summary in summaries:
        for name in summary["test_scores"]:
            versions.setdefault(name, set()).add(inputs[run_dir][name])
    rows, shown = [], set()
    for run_dir, summary in summaries:
        stages = set(summary.get("stages", {}))
        merges = [n for n in summary["test_scores"] if n == "merged" or n in stages]
        if "merged" in merges and len(stages) > 1:
            merges.remove("merged")  # the last stage's row already stands for it
        # Sources and reference merges (equal-weight...) are the same in every run: show them once.
        # Sources under one name but of other models (or scored otherwise) in other runs: a row per run, named.
        key = inputs[run_dir]
        shared = [n for n in summary["test_scores"]
                  if n not in merges and n != "merged" and (n, key[n]) not in shown]
        for name in shared + merges:
            metrics = summary.get("test_metrics", {}).get(name, {})
            labelled = name in merges or len(versions[name]) > 1
            rows.append({"model": name, "run": run_dir.name if labelled else "",
                         "score": summary["test_scores"][name], "low": metrics.get(f"{metric}_low"),
                         "high": metrics.get(f"{metric}_high")})
        shown.update((n, key[n]) for n in shared)
    return first, rows


def comparison_markdown(run_dirs: list[str | Path]) -> str:
    first, rows = comparison_rows(run_dirs)
    lines = [f"{first['benchmark']} ({first['split']} split, {first['metric']}, seed {first['seed']})", "",
             "| model | run | score | 95% interval |", "|---|---|---|---|"]
    for row in rows:
        interval = f"{row['low']:.3f} - {row['high']:.3f}" if row["low"] is not None else ""
        lines.append(f"| {row['model']} | {row['run']} | {row['score']:.3f} | {interval} |")
    return "\n".join(lines) + "\n"
