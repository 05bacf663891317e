"""The report's figures, drawn with matplotlib's object API (no pyplot: no global state, no display).

Each ``*_figure`` function returns a ``matplotlib.figure.Figure``; its artists carry a ``gid`` naming what
they show (``candidates:<stage>``, ``best:<stage>``, ``mean:<stage>``, ``heldout:<source>``, ``failed``,
``heatmap:<parameter>``, ``path:<source>``, ``scales``, ``scores``, ``intervals``) so that tests and
readers can find a series without relying on drawing order. Text goes through ``_safe``: a name the
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


def _safe(text: Any) -> str:
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
                   label=_safe(f"{stage}: candidate"), gid=f"candidates:{stage}", zorder=3)
        best_x, best_y, best = [], [], -math.inf
        for x, fitness in ok:
            best = max(best, fitness)
            best_x.append(x)
            best_y.append(best)
        best_x.append(rows[-1][0])  # the line runs to the stage's last evaluation
        best_y.append(best)
        ax.plot(best_x, best_y, drawstyle="steps-post", color=color, lw=2.2, label=_safe(f"{stage}: best so far"),
                gid=f"best:{stage}", zorder=4)
        generations: dict[int, list[tuple[int, float]]] = {}
        for x, r in rows:
            if _finite(r.get("fitness")) and not r.get("error"):
                generations.setdefault(int(r.get("generation", 0)), []).append((x, float(r["fitness"])))
        gen_x = [sum(x for x, _ in g) / len(g) for _, g in sorted(generations.items())]
        gen_y = [sum(f for _, f in g) / len(g) for _, g in sorted(generations.items())]
        ax.plot(gen_x, gen_y, ls="--", marker="o", ms=3.5, color=color, lw=1.1, alpha=0.85,
                label=_safe(f"{stage}: generation mean"), gid=f"mean:{stage}", zorder=4)
    if len(order) > 1:  # where each later stage begins
        for stage in order[1:]:
            start = next(x for x, r in numbered if r.get("stage") == stage)
            ax.axvline(start - 0.5, color="0.4", lw=0.8, ls="-.", zorder=1)
            ax.text(start - 0.5, 1.0, _safe(f" {stage} begins"), transform=ax.get_xaxis_transform(), va="top",
                    fontsize=8, color="0.3")
    failed = [x for x, r in numbered if r.get("error") or not _finite(r.get("fitness"))]
    if failed:
        ax.scatter(failed, [0.015] * len(failed), transform=ax.get_xaxis_transform(), marker="x", color="#d62728",
                   s=22, label=f"failed candidate ({len(failed)})", gid="failed", zorder=5, clip_on=False)
    edge = blended_transform_factory(ax.transAxes, ax.transData)
    shown = {name: float(score) for name, score in (held_out or {}).items() if _finite(score)}
    for name, score in shown.items():
        ax.axhline(score, color=colors.get(name, "0.5"), ls=(0, (5, 3)), lw=1.3, alpha=0.9, zorder=2,
                   label=_safe(f"{name}: held-out test score (source)"), gid=f"heldout:{name}")
    by_value: dict[str, list[str]] = {}  # one label per distinct score, so equal scores do not overprint
    for name, score in shown.items():
        by_value.setdefault(f"{score:.3f}", []).append(name)
    for value, names in by_value.items():
        color = colors.get(names[0], "0.3") if len(names) == 1 else "0.3"
        ax.text(1.005, float(value), _safe(f"{', '.join(names)} (held-out) {value}"), transform=edge, va="center",
                fontsize=8, color=color, clip_on=False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("evaluation number (candidates in the order they were scored)")
    ax.set_ylabel(_safe(f"fitness: {metric} on the search split (0 to 1)"))
    ax.set_title(_safe(f"Fitness over {len(evaluations)} evaluations"
                       + (f" ({len(failed)} failed)" if failed else "")))
    if evaluations:
        ax.set_xlim(0.5, len(evaluations) + 0.5)
    else:
        ax.text(0.5, 0.5, "no evaluation logged yet", transform=ax.transAxes, ha="center", color="0.4")
    ax.grid(alpha=0.25)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.15, 1.0), fontsize=8, frameon=False)
    return fig


# -- PS recipe ---------------------------------------------------------------------------------------
def _group_label(layers: list[int], single: bool) -> str:
    first, last = int(layers[0]), int(layers[-1])
    if single:
        return f"all layers\n({first}-{last})"
    return f"{first}" if first == last else f"{first}-{last}"


def ps_figure(recipe: dict[str, Any], *, title: str = "") -> Figure:
    """The recipe's per-source parameters (density, weight...) per layer group: one heatmap per parameter,
    rows the source models, columns the layer groups, each cell labelled with its value."""
    groups = recipe.get("groups") or []
    sources = list((groups[0].get("sources") or {}) if groups else {})
    params = list(dict.fromkeys(p for g in groups for s in sources for p in (g["sources"].get(s) or {})))
    n_groups = max(1, len(groups))
    width = min(18.0, 2.2 + len(params) * (1.6 + 0.42 * n_groups))
    fig = Figure(figsize=(width, 1.7 + 0.55 * max(1, len(sources))), layout="constrained")
    if not params:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no per-source parameters in this recipe", ha="center", transform=ax.transAxes)
        return fig
    axes = fig.subplots(1, len(params), squeeze=False)[0]
    labels = [_group_label(g.get("layers") or [0], len(groups) == 1) for g in groups]
    for ax, param in zip(axes, params):
        values = [[float(groups[g]["sources"].get(s, {}).get(param, math.nan)) for g in range(len(groups))]
                  for s in sources]
        flat = [v for row in values for v in row if math.isfinite(v)]
        low, high = min([0.0, *flat]), max([1.0, *flat])
        image = ax.imshow(values, aspect="auto", cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
        image.set_gid(f"heatmap:{param}")
        if len(flat) <= MAX_CELL_LABELS:
            for s, row in enumerate(values):
                for g, v in enumerate(row):
                    shade = (v - low) / (high - low) if high > low else 0.0
                    ax.text(g, s, f"{v:.2f}", ha="center", va="center", fontsize=8,
                            color="black" if shade > 0.6 else "white")
        ax.set_xticks(range(len(groups)), labels, fontsize=8, rotation=90 if len(groups) > 12 else 0)
        ax.set_yticks(range(len(sources)), [_safe(s) for s in sources], fontsize=9)
        ax.set_xlabel("layer group (decoder layer indices)")
        ax.set_title(_safe(param))
        fig.colorbar(image, ax=ax, shrink=0.9, label=_safe(f"{param} value"))
    axes[0].set_ylabel("source model")
    method = recipe.get("method", "?")
    fig.suptitle(_safe(title or f"PS recipe ({method}): per-source parameters per layer group"), fontsize=11)
    return fig


# -- DFS path ----------------------------------------------------------------------------------------
def dfs_figure(recipe: dict[str, Any], *, colors: dict[str, str] | None = None, title: str = "") -> Figure:
    """The evolved path, position by position: which source's layer runs there (colour: the source), and
    below it the scale applied to the hidden state entering that layer (transitions between sources)."""
    path = recipe.get("path") or []
    names = list(dict.fromkeys(step["source"] for step in path))
    colors = {**palette(names), **(colors or {})}
    fig = Figure(figsize=(min(18.0, 8.0 + 0.12 * len(path)), 6.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.4])
    positions = list(range(1, len(path) + 1))
    if path:
        top.plot(positions, [int(s["layer"]) for s in path], color="0.75", lw=0.9, zorder=1, gid="path-line")
    for name in names:
        xs = [p for p, step in zip(positions, path) if step["source"] == name]
        ys = [int(step["layer"]) for step in path if step["source"] == name]
        top.scatter(xs, ys, marker="s", s=46, color=colors[name], edgecolors="black", linewidths=0.4, zorder=3,
                    label=_safe(f"{name} ({len(xs)} layers)"), gid=f"path:{name}")
    scales = [float(step.get("scale", 1.0)) for step in path]
    entered = [k > 0 and path[k]["source"] != path[k - 1]["source"] for k in range(len(path))]
    bar_colors = [colors[step["source"]] if entry else "0.88" for step, entry in zip(path, entered)]
    bottom.bar(positions, scales, color=bar_colors, width=0.8, gid="scales")
    bottom.axhline(1.0, color="0.4", ls="--", lw=0.8)
    if len(path) <= 60:
        for x, scale, entry in zip(positions, scales, entered):
            if entry:
                bottom.text(x, scale, f"{scale:.2f}", ha="center", va="bottom", fontsize=7)
    top.set_ylabel("layer index in its source")
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_ylabel("input scale (x)")
    bottom.set_xlabel("position on the path (1 = first layer after the embeddings)\n"
                      "coloured bar: scale on entering another source's layer; grey: no transition (1.0)")
    if path:
        bottom.set_xlim(0.3, len(path) + 0.7)
        top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, title="source")
    else:
        top.text(0.5, 0.5, "empty path: embeddings straight to the head", ha="center", transform=top.transAxes)
    top.grid(alpha=0.25)
    head = (f"DFS path: {len(path)} layers of {recipe.get('slots', '?')} slots (r = {recipe.get('repeats', '?')}, "
            f"scales: {recipe.get('scales', '?')}, embeddings from {recipe.get('embeddings_from', '?')})")
    top.set_title(_safe(title or head), fontsize=10)
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
    ax.set_xticks(xs, [_safe(r["name"]) for r in rows], rotation=20 if len(rows) > 5 else 0, ha="right"
                  if len(rows) > 5 else "center")
    top = max([1e-9, *scores, *(float(r["high"]) for _, _, r in with_interval)])
    ax.set_ylim(0, top * 1.18)
    ax.set_ylabel(_safe(f"held-out {metric} (0 to 1)"))
    kinds = [k for k in KIND_COLORS if any(r.get("kind") == k for r in rows)]
    handles = [Patch(facecolor=KIND_COLORS[k], edgecolor="black", label=k) for k in kinds]
    if with_interval:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="black", marker="|", ls="none", ms=10, label="95% interval"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_title(_safe(title or f"Held-out scores ({metric})"), fontsize=11)
    ax.grid(axis="y", alpha=0.25)
    return fig


# -- all figures of one run ------------------------------------------------------------------------------
def _file_stem(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label)


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
    for label, recipe in data.stage_recipes().items():
        if recipe.get("space") == "ps" and recipe.get("groups"):
            figures[f"ps_{_file_stem(label)}.png"] = (
                ps_figure(recipe, title=f"Stage {label}: evolved {recipe.get('method', 'merge')} parameters "
                                        "per layer group and source"),
                f"Stage {label}: the best recipe's parameters per layer group (columns) and source model (rows)",
            )
        elif recipe.get("space") == "dfs":
            figures[f"dfs_{_file_stem(label)}.png"] = (
                dfs_figure(recipe, colors=colors),
                f"Stage {label}: the evolved layer path, position by position, and the transition scales",
            )
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
