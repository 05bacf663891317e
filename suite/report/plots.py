"""The report's figures, drawn with matplotlib's object API (no pyplot: no global state, no display).

Each ``*_figure`` function returns a ``matplotlib.figure.Figure``; its artists carry a ``gid`` naming what
they show (``candidates:<stage>``, ``best:<stage>``, ``mean:<stage>``, ``heldout:<source>``, ``failed``,
``heatmap:<parameter>``, ``path:<source>``, ``scales``, ``scores``, ``intervals``) so that tests and
readers can find a series without relying on drawing order. Text goes through ``safe_text``: a name the
installed fonts cannot draw (Japanese on a machine without CJK fonts) degrades to ASCII instead of boxes.
"""

from __future__ import annotations

import functools
import io
import math
import unicodedata
from pathlib import Path
from typing import Any

from matplotlib import rcParams
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from evosuite.report.render import recipe_figure_name

TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
         "#17becf"]
DPI = 110
MAX_CELL_LABELS = 160  # annotate heatmap cells with their values up to this many cells


# -- text and colours --------------------------------------------------------------------------------
@functools.cache
def _drawable() -> frozenset[int]:
    from matplotlib import font_manager, ft2font

    try:
        path = font_manager.findfont(font_manager.FontProperties(family=rcParams["font.family"]))
        return frozenset(ft2font.FT2Font(path).get_charmap())
    except Exception:  # no font information: ASCII is always drawable
        return frozenset(range(128))


def safe_text(text: Any) -> str:
    """``text`` if the font can draw it, else its NFKC form with undrawable characters as ``?``."""
    text, drawable = str(text), _drawable()
    if all(ord(c) in drawable or c in "\n\t" for c in text):
        return text
    return "".join(c if ord(c) in drawable or c in "\n\t" else "?" for c in unicodedata.normalize("NFKC", text))


def palette(names: list[str]) -> dict[str, str]:
    """One colour per name, in order (sources first, then stages, then references)."""
    return {name: TAB10[i % len(TAB10)] for i, name in enumerate(dict.fromkeys(names))}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def save_png(figure: Figure, path: Path) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    data = buffer.getvalue()
    Path(path).write_bytes(data)
    return data


# -- fitness over evaluations ------------------------------------------------------------------------
def fitness_figure(evaluations: list[dict[str, Any]], *, metric: str, stages: list[str],
                   held_out: dict[str, float] | None = None, colors: dict[str, str] | None = None) -> Figure:
    """Every candidate as a point (x: its evaluation number), each stage's best so far and generation mean
    as lines, failed candidates as crosses on the bottom edge, sources' held-out scores as dashed lines."""
    colors = colors or palette(stages)
    fig = Figure(figsize=(10, 5.2), layout="constrained")
    ax = fig.add_subplot()
    order = [s for s in stages if any(r.get("stage") == s for r in evaluations)]
    numbered = list(enumerate(evaluations, start=1))
    for stage in order:
        color = colors.get(stage, TAB10[0])
        rows = [(x, r) for x, r in numbered if r.get("stage") == stage]
        ok = [(x, float(r["fitness"])) for x, r in rows if _finite(r.get("fitness")) and not r.get("error")]
        if not ok:
            continue
        ax.scatter([x for x, _ in ok], [f for _, f in ok], s=16, alpha=0.5, color=color, edgecolors="none",
                   label=safe_text(f"{stage}: candidate"), gid=f"candidates:{stage}", zorder=3)
        best_x, best_y, best = [], [], -math.inf
        for x, fitness in ok:
            best = max(best, fitness)
            best_x.append(x)
            best_y.append(best)
        best_x.append(rows[-1][0])  # the line runs to the stage's last evaluation
        best_y.append(best)
        ax.plot(best_x, best_y, drawstyle="steps-post", color=color, lw=2.2, label=safe_text(f"{stage}: best so far"),
                gid=f"best:{stage}", zorder=4)
        generations: dict[int, list[tuple[int, float]]] = {}
        for x, r in rows:
            if _finite(r.get("fitness")) and not r.get("error"):
                generations.setdefault(int(r.get("generation", 0)), []).append((x, float(r["fitness"])))
        gen_x = [sum(x for x, _ in g) / len(g) for _, g in sorted(generations.items())]
        gen_y = [sum(f for _, f in g) / len(g) for _, g in sorted(generations.items())]
        ax.plot(gen_x, gen_y, ls="--", marker="o", ms=3.5, color=color, lw=1.1, alpha=0.85,
                label=safe_text(f"{stage}: generation mean"), gid=f"mean:{stage}", zorder=4)
    if len(order) > 1:  # where each later stage begins
        for stage in order[1:]:
            start = next(x for x, r in numbered if r.get("stage") == stage)
            ax.axvline(start - 0.5, color="0.4", lw=0.8, ls="-.", zorder=1)
            ax.text(start - 0.5, 1.0, safe_text(f" {stage} begins"), transform=ax.get_xaxis_transform(), va="top",
                    fontsize=8, color="0.3")
    failed = [x for x, r in numbered if r.get("error") or not _finite(r.get("fitness"))]
    if failed:
        ax.scatter(failed, [0.015] * len(failed), transform=ax.get_xaxis_transform(), marker="x", color="#d62728",
                   s=22, label=f"failed candidate ({len(failed)})", gid="failed", zorder=5, clip_on=False)
    edge = blended_transform_factory(ax.transAxes, ax.transData)
    shown = {name: float(score) for name, score in (held_out or {}).items() if _finite(score)}
    for name, score in shown.items():
        ax.axhline(score, color=colors.get(name, "0.5"), ls=(0, (5, 3)), lw=1.3, alpha=0.9, zorder=2,
                   label=safe_text(f"{name}: held-out test score (source)"), gid=f"heldout:{name}")
    by_value: dict[str, list[str]] = {}  # one label per distinct score, so equal scores do not overprint
    for name, score in shown.items():
        by_value.setdefault(f"{score:.3f}", []).append(name)
    for value, names in by_value.items():
        color = colors.get(names[0], "0.3") if len(names) == 1 else "0.3"
        ax.text(1.005, float(value), safe_text(f"{', '.join(names)} (held-out) {value}"), transform=edge, va="center",
                fontsize=8, color=color, clip_on=False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("evaluation number (candidates in the order they were scored)")
    ax.set_ylabel(safe_text(f"fitness: {metric} on the search split (0 to 1)"))
    ax.set_title(safe_text(f"Fitness over {len(evaluations)} evaluations"
                       + (f" ({len(failed)} failed)" if failed else "")))
    if evaluations:
        ax.set_xlim(0.5, len(evaluations) + 0.5)
    else:
        ax.text(0.5, 0.5, "no evaluation logged yet", transform=ax.transAxes, ha="center", color="0.4")
    ax.grid(alpha=0.25)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.15, 1.0), fontsize=8, frameon=False)
    return fig


# -- the held-out table --------------------------------------------------------------------------------
KIND_COLORS = {"source": "#9aa7b8", "reference": "#d9b38c", "merge": "#2ca02c"}


def final_figure(rows: list[dict[str, Any]], *, metric: str, title: str = "") -> Figure:
    """One bar per held-out row (``name``, ``score``, ``kind``, optional ``low``/``high``), the interval as an
    error bar where the benchmark gives one."""
    fig = Figure(figsize=(max(6.0, 1.2 + 1.0 * len(rows)), 4.8), layout="constrained")
    ax = fig.add_subplot()
    xs = list(range(len(rows)))
    scores = [float(r["score"]) if _finite(r.get("score")) else 0.0 for r in rows]
    bars = ax.bar(xs, scores, color=[KIND_COLORS.get(r.get("kind"), "0.6") for r in rows], edgecolor="black",
                  linewidth=0.5, gid="scores")
    labels = ax.bar_label(bars, fmt="%.3f", padding=2, fontsize=8)
    with_interval = [(x, s, r) for x, s, r in zip(xs, scores, rows) if _finite(r.get("low")) and _finite(r.get("high"))]
    if with_interval:
        below = [max(0.0, s - float(r["low"])) for _, s, r in with_interval]
        above = [max(0.0, float(r["high"]) - s) for _, s, r in with_interval]
        errorbars = ax.errorbar([x for x, _, _ in with_interval], [s for _, s, _ in with_interval],
                                yerr=[below, above], fmt="none", ecolor="black", capsize=5, lw=1.1)
        errorbars.lines[2][0].set_gid("intervals")  # the vertical segments, one per interval
        for label in labels:  # values beside the bar's top, clear of the error bar
            label.set_horizontalalignment("left")
            label.set_x(7)  # offset points (bar_label places labels with xytext in points)
    ax.set_xticks(xs, [safe_text(r["name"]) for r in rows], rotation=20 if len(rows) > 5 else 0, ha="right"
                  if len(rows) > 5 else "center")
    top = max([1e-9, *scores, *(float(r["high"]) for _, _, r in with_interval)])
    ax.set_ylim(0, top * 1.18)
    ax.set_ylabel(safe_text(f"held-out {metric} (0 to 1)"))
    kinds = [k for k in KIND_COLORS if any(r.get("kind") == k for r in rows)]
    handles = [Patch(facecolor=KIND_COLORS[k], edgecolor="black", label=k) for k in kinds]
    if with_interval:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="black", marker="|", ls="none", ms=10, label="95% interval"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_title(safe_text(title or f"Held-out scores ({metric})"), fontsize=11)
    ax.grid(axis="y", alpha=0.25)
    return fig


# -- all figures of one run ------------------------------------------------------------------------------
def make_figures(data) -> dict[str, tuple[Figure, str]]:
    """File name -> (figure, caption), for a ``evosuite.report.RunData``, in the order the report shows them."""
    colors = palette([*data.sources, *data.stage_labels, *data.finals])
    figures: dict[str, tuple[Figure, str]] = {}
    held_out = {name: data.finals[name]["score"] for name in data.sources if name in data.finals}
    figures["fitness.png"] = (
        fitness_figure(data.evaluations, metric=data.metric, stages=data.stage_labels, held_out=held_out,
                       colors=colors),
        "Search fitness of every candidate, each stage's best so far and generation mean"
        + ("; dashed: the sources' scores on the held-out test split (another split than the search's)"
           if held_out else ""),
    )
    for label, recipe in data.stage_recipes().items():  # each space draws its own recipes, if it can
        drawn = data.space_class(recipe.get("space")).figure(recipe, label=label, colors=colors)
        if drawn is not None:
            figures[recipe_figure_name(recipe.get("space"), label)] = drawn
    if data.finals:
        rows = []
        for name, row in data.finals.items():
            interval = data.interval(name)
            rows.append({"name": name, "score": row.get("score"), "kind": data.kind(name),
                         "low": interval[0] if interval else None, "high": interval[1] if interval else None})
        figures["final.png"] = (
            final_figure(rows, metric=data.metric,
                         title=f"{data.benchmark}: held-out scores ({data.split} split)"),
            "Held-out scores: each source, the reference merges and each stage's best merge"
            + (" (error bars: 95% interval)" if any(r["low"] is not None for r in rows) else ""),
        )
    return figures
