"""Progress of a run in the terminal: a live ``rich`` dashboard, plain lines when stdout is not a terminal
(CI, pipes), or nothing with ``--quiet``. Generic: it shows stages, genomes' fitness and item counts."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Sequence

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from evosuite.evolver import Evaluation, EvolutionEvents

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 40) -> str:
    values = [v for v in values if math.isfinite(v)][-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - low) / span * (len(SPARK) - 1)))] for v in values)


def _fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


class Reporter(EvolutionEvents):
    """Base reporter: remembers what happened; subclasses decide how to show it."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self.stage_name = ""
        self.best_history: list[float] = []
        self.generation_fitness: dict[int, list[float]] = {}
        self.best: Evaluation | None = None
        self.count = 0
        self.budget = 0
        self.started = time.perf_counter()
        self.stage_started = time.perf_counter()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def stage(self, name: str) -> None:
        self.stage_name = name
        self.stage_started = time.perf_counter()

    def message(self, text: str) -> None: ...

    def evaluation_finished(self, evaluation, best, count, budget):
        self.best, self.count, self.budget = best, count, budget
        self.best_history.append(best.fitness if best else -math.inf)
        if not evaluation.failed:
            self.generation_fitness.setdefault(evaluation.generation, []).append(evaluation.fitness)

    def mean_fitness(self) -> float | None:
        if not self.generation_fitness:
            return None
        latest = self.generation_fitness[max(self.generation_fitness)]
        return sum(latest) / len(latest)

    def eta_seconds(self) -> float | None:
        if self.count == 0:
            return None
        elapsed = time.perf_counter() - self.stage_started
        return elapsed / self.count * (self.budget - self.count)

    def final_table(self, title: str, rows: list[dict[str, Any]], run_dir: str) -> None:
        """``rows``: {name, score, detail, kind}; kind is ``source``, ``reference`` (a baseline) or ``merge``."""


class QuietReporter(Reporter):
    pass


class PlainReporter(Reporter):
    """One line per event, for logs and pipes."""

    def _print(self, text: str) -> None:
        print(text, flush=True)

    def stage(self, name):
        super().stage(name)
        self._print(f"== {name}")

    def message(self, text):
        self._print(text)

    def evaluation_finished(self, evaluation, best, count, budget):
        super().evaluation_finished(evaluation, best, count, budget)
        status = f"failed: {evaluation.error}" if evaluation.failed else f"fitness {_fmt(evaluation.fitness)}"
        replay = " (replayed)" if evaluation.replayed else ""
        self._print(f"[{self.stage_name}] eval {count}/{budget} gen {evaluation.generation}: {status}{replay}; "
                    f"best {_fmt(best.fitness if best else None)}")

    def final_table(self, title, rows, run_dir):
        self._print(title)
        for row in rows:
            self._print(f"  {row['name']:<28} {row.get('kind', ''):<10} {row['score']:.4f}  {row.get('detail', '')}")
        self._print(f"run directory: {run_dir}")


class LiveReporter(Reporter):
    """The live dashboard."""

    def __init__(self, console: Console | None = None):
        super().__init__(console)
        self.items = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeRemainingColumn(), console=self.console)
        self.items_task = self.items.add_task("items", total=1, visible=False)
        self.notes: list[str] = []
        self._final: tuple | None = None
        self.live = Live(self._render(), console=self.console, refresh_per_second=8, transient=False)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live.update(self._screen())
        return self.live.__exit__(*exc)

    def _screen(self):
        """The dashboard, with the final table under it once the run has one."""
        return self._render() if self._final is None else Group(self._render(), *self._final)

    def _render(self):
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan")
        table.add_column()
        table.add_row("stage", self.stage_name or "starting")
        if self.budget:
            generation = max(self.generation_fitness) if self.generation_fitness else 0
            table.add_row("generation", str(generation))
            table.add_row("evaluations", f"{self.count} / {self.budget}")
            table.add_row("best fitness", f"{_fmt(self.best.fitness if self.best else None)}  "
                                          f"[green]{sparkline(self.best_history)}[/green]")
            table.add_row("generation mean", _fmt(self.mean_fitness()))
            eta = self.eta_seconds()
            table.add_row("ETA", "-" if eta is None else f"{int(eta // 60)}m{int(eta % 60):02d}s")
        table.add_row("elapsed", f"{time.perf_counter() - self.started:.0f}s")
        parts: list[Any] = [table, self.items]
        if self.notes:
            parts.append("\n".join(self.notes[-4:]))
        return Panel(Group(*parts), title="evosuite", border_style="blue")

    def _refresh(self):
        self.live.update(self._screen())

    def stage(self, name):
        super().stage(name)
        self.items.update(self.items_task, visible=False)
        self._refresh()

    def message(self, text):
        if text.startswith("scoring "):  # the held-out table: the item bar now follows that model
            self.items.update(self.items_task, description=text.removeprefix("scoring ").split(" on ")[0],
                              completed=0)
        self.notes.append(text)
        self._refresh()

    def evaluation_started(self, generation, index, count, budget):
        self.items.update(self.items_task, description=f"candidate {count + 1}", completed=0, visible=True)
        self._refresh()

    def item_progress(self, done, total):
        self.items.update(self.items_task, completed=done, total=total, visible=True)

    def evaluation_finished(self, evaluation, best, count, budget):
        super().evaluation_finished(evaluation, best, count, budget)
        self._refresh()

    def final_table(self, title, rows, run_dir):
        table = Table(title=title)
        table.add_column("model")
        table.add_column("kind")  # source, reference (a fixed baseline recipe) or merge
        table.add_column("score", justify="right")
        table.add_column("detail")
        top = max(r["score"] for r in rows)
        for row in rows:
            style = "bold green" if row["score"] == top else None
            table.add_row(row["name"], row.get("kind", ""), f"{row['score']:.4f}", row.get("detail", ""), style=style)
        self._final = (table, f"run directory: [bold]{run_dir}[/bold]")
        self._refresh()


def make_reporter(quiet: bool = False, plain: bool | None = None) -> Reporter:
    if quiet:
        return QuietReporter()
    if plain is None:
        plain = not sys.stdout.isatty()
    return PlainReporter() if plain else LiveReporter()
