"""``evosuite report RUN_DIR``: a run explained, as ``report.md`` and a self-contained ``report.html``.

Everything comes from the run store (``evosuite.run_store``), so a report can be made of a finished run, of
one still running, and of one that was killed: what was logged is what is shown. Nothing is imported from
the run's plugins and no model is loaded.

Figures (``plots``) are PNG files under ``report_figures/`` (the Markdown links them) and are embedded as
``data:`` URIs in the HTML, which therefore opens as one file with no external reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from evosuite.config import DEFAULT_SPACE
from evosuite.errors import ConfigError
from evosuite.pipeline import space_class, stage_labels
from evosuite.run_store import RunStore, atomic_write_text

FIGURES_DIR = "report_figures"


@dataclass
class RunData:
    """What the run store holds, read once; fields are empty where the run has not written them yet."""

    path: Path
    config: dict[str, Any]
    status: dict[str, Any]
    evaluations: list[dict[str, Any]]
    finals: dict[str, dict[str, Any]]  # in the order they were scored
    best: dict[str, Any] | None = None  # best_recipe.yaml
    summary: dict[str, Any] | None = None

    @property
    def sources(self) -> list[str]:
        return [s["name"] for s in self.config.get("sources") or [] if isinstance(s, dict)]

    @property
    def space_name(self) -> str:
        space = self.config.get("space") or {}
        return (space.get("name") if isinstance(space, dict) else str(space)) or DEFAULT_SPACE

    @property
    def stage_labels(self) -> list[str]:
        """The stages the configuration asks for ("ps", "ps+dfs"...), then any other stage found in the log."""
        labels = stage_labels(self.space_name)
        for record in self.evaluations:
            if record.get("stage") not in labels:
                labels.append(record.get("stage"))
        return labels

    @property
    def benchmark(self) -> str:
        bench = self.config.get("benchmark") or {}
        return (bench.get("name") if isinstance(bench, dict) else str(bench)) or "?"

    @property
    def metric(self) -> str:
        """The headline metric: the summary's, else the metric whose value is each final row's score."""
        if self.summary and self.summary.get("metric"):
            return str(self.summary["metric"])
        for row in self.finals.values():
            metrics = row.get("metrics") or {}
            matches = [k for k, v in metrics.items() if v == row.get("score") and not k.endswith(("_low", "_high"))]
            if matches:
                return sorted(matches, key=lambda k: (f"{k}_low" not in metrics, len(k)))[0]
        return "score"

    @property
    def split(self) -> str:
        return str((self.summary or {}).get("split") or "held-out")

    def kind(self, name: str) -> str:
        """``source``, ``merge`` (a stage's best, or ``merged``) or ``reference`` (equal-weight...)."""
        if name in self.sources:
            return "source"
        if name == "merged" or name in self.stage_labels:
            return "merge"
        return "reference"

    def interval(self, name: str) -> tuple[float, float] | None:
        """The held-out score's interval (``<metric>_low``/``_high``), when the benchmark gives one."""
        metrics = (self.finals.get(name) or {}).get("metrics") or {}
        low, high = metrics.get(f"{self.metric}_low"), metrics.get(f"{self.metric}_high")
        if isinstance(low, (int, float)) and isinstance(high, (int, float)):
            return float(low), float(high)
        return None

    #: The space class that describes and draws a recipe (``evosuite.pipeline.space_class``).
    space_class = staticmethod(space_class)

    def stage_recipes(self) -> dict[str, dict[str, Any]]:
        """Stage label -> the recipe of its best genome (best_recipe.yaml; empty until the search has ended)."""
        if not self.best:
            return {}
        stages = self.best.get("stages") or {}
        recipes = {label: entry["recipe"] for label, entry in stages.items()
                   if isinstance(entry, dict) and isinstance(entry.get("recipe"), dict)}
        if not recipes and isinstance(self.best.get("recipe"), dict):
            recipes[self.stage_labels[-1]] = self.best["recipe"]
        return recipes


def load_run(run_dir: str | Path) -> RunData:
    store = RunStore(run_dir)
    if not store.exists():
        raise ConfigError(f"{str(run_dir)!r} is not a run directory (no .evosuite-run marker)",
                          "give the directory `evosuite run` made")
    best_path = store.path / "best_recipe.yaml"
    try:
        best = yaml.safe_load(best_path.read_text(encoding="utf-8")) if best_path.is_file() else None
    except (UnicodeDecodeError, yaml.YAMLError):
        best = None
    summary = store.read_json("summary.json")
    if summary is not None and not isinstance(summary, dict):
        raise ConfigError(f"{str(store.path / 'summary.json')!r} is not a summary evosuite wrote",
                          f"write it again with `evosuite resume {store.path}`")
    return RunData(path=store.path, config=store.config() or {}, status=store.status(),
                   evaluations=store.evaluations(), finals=store.finals(),
                   best=best if isinstance(best, dict) else None, summary=summary)


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` and their figures into ``run_dir``; return the two paths."""
    from evosuite.report.plots import make_figures, save_png
    from evosuite.report.render import build_document, to_html, to_markdown

    data = load_run(run_dir)
    figures = make_figures(data)  # file name -> (Figure, caption)
    images: dict[str, bytes] = {}
    if figures:
        (data.path / FIGURES_DIR).mkdir(exist_ok=True)
    for name, (figure, _) in figures.items():
        images[name] = save_png(figure, data.path / FIGURES_DIR / name)
    document = build_document(data, {name: caption for name, (_, caption) in figures.items()}, FIGURES_DIR)
    md_path, html_path = data.path / "report.md", data.path / "report.html"
    atomic_write_text(md_path, to_markdown(document))
    atomic_write_text(html_path, to_html(document, images))
    return md_path, html_path


__all__ = ["RunData", "load_run", "write_report"]
