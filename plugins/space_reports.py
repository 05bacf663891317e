"""What the built-in ``ps`` and ``dfs`` spaces show in a run's report: a section and a figure per best recipe.

The report (``evosuite.report``) asks each stage's space class for them (``MergeSpace.describe`` and
``MergeSpace.figure``); the drawing helpers (font-safe text, palette) are the report's.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from evosuite.report.plots import MAX_CELL_LABELS, palette, safe_text
from evosuite.report.render import fmt


# -- PS: the report section --------------------------------------------------------------------------
def _layers(layers: list[int]) -> str:
    return str(layers[0]) if layers[0] == layers[-1] else f"{layers[0]}-{layers[-1]}"


def ps_describe(recipe: Mapping[str, Any]) -> list[tuple]:
    """The method, its options and a table of each layer group's per-source parameters."""
    groups = recipe.get("groups") or []
    options = ", ".join(f"{k} {v}" for k, v in (recipe.get("method_options") or {}).items()) or "none"
    rows = [[_layers(g.get("layers") or [0]), source, ", ".join(f"{p} {fmt(v)}" for p, v in params.items())]
            for g in groups for source, params in g["sources"].items()]
    return [("p", f"Method `{recipe.get('method')}`, {len(groups)} layer group(s), method options: {options}."),
            ("table", ["layers", "source", "parameters"], rows)]


def ps_report_figure(recipe: Mapping[str, Any], *, label: str, colors: Mapping[str, str]):
    if not recipe.get("groups"):
        return None
    figure = ps_figure(dict(recipe), title=f"Stage {label}: evolved {recipe.get('method', 'merge')} parameters "
                                           "per layer group and source")
    return figure, f"Stage {label}: the best recipe's parameters per layer group (columns) and source model (rows)"


# -- DFS: the report section -------------------------------------------------------------------------
def path_text(path: list[dict[str, Any]]) -> str:
    """``a:0 -> b:1 (x0.80) -> ...``: each step's source and layer, with the scale on entering another source."""
    steps = []
    for k, step in enumerate(path):
        scale = float(step.get("scale", 1.0))
        shown = f"{step['source']}:{step['layer']}"
        if k and path[k - 1]["source"] != step["source"]:
            shown += f" (x{scale:.2f})"
        steps.append(shown)
    return " -> ".join(steps) if steps else "(empty path)"


def dfs_describe(recipe: Mapping[str, Any]) -> list[tuple]:
    path = recipe.get("path") or []
    return [("p", f"{len(path)} layers on the path out of {recipe.get('slots')} slots "
                  f"(r = {recipe.get('repeats')}, scales `{recipe.get('scales')}`, embeddings from "
                  f"`{recipe.get('embeddings_from')}`). Path (source:layer, with the scale applied "
                  f"on entering another source's layer):"),
            ("code", path_text(path), "text")]


def dfs_report_figure(recipe: Mapping[str, Any], *, label: str, colors: Mapping[str, str]):
    return (dfs_figure(dict(recipe), colors=dict(colors)),
            f"Stage {label}: the evolved layer path, position by position, and the transition scales")


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
        ax.set_yticks(range(len(sources)), [safe_text(s) for s in sources], fontsize=9)
        ax.set_xlabel("layer group (decoder layer indices)")
        ax.set_title(safe_text(param))
        fig.colorbar(image, ax=ax, shrink=0.9, label=safe_text(f"{param} value"))
    axes[0].set_ylabel("source model")
    method = recipe.get("method", "?")
    fig.suptitle(safe_text(title or f"PS recipe ({method}): per-source parameters per layer group"), fontsize=11)
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
                    label=safe_text(f"{name} ({len(xs)} layers)"), gid=f"path:{name}")
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
    top.set_title(safe_text(title or head), fontsize=10)
    return fig
