"""The report's text: one document of blocks, rendered to Markdown and to self-contained HTML.

Blocks are tuples: ``("h", level, text)``, ``("p", text)``, ``("list", [text...])``, ``("table", headers,
rows)``, ``("img", file_name, caption)``, ``("code", text, language)``. Text may hold `code spans`; nothing
else is interpreted, and every value is escaped for the format it is written in.
"""

from __future__ import annotations

import base64
import html
import math
import re
import time
from typing import Any

import yaml

Block = tuple

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Noto Sans JP",sans-serif;max-width:1100px;
margin:2em auto;padding:0 1em;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.3em}h2{font-size:1.25em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;
vertical-align:top}th{background:#f3f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{background:#f3f4f6;padding:0 .25em;border-radius:3px}pre{background:#f6f8fa;padding:.8em;overflow:auto;
border:1px solid #e5e7eb;border-radius:4px}figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}
"""


def fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}" if isinstance(value, float) and math.isfinite(value) else str(value)
    return str(value)


def recipe_figure_name(space: Any, label: str) -> str:
    """The PNG file of stage ``label``'s recipe figure: ``ps_ps.png``, ``dfs_ps-dfs.png``..."""
    return f"{space}_{''.join(c if c.isalnum() else '-' for c in label)}.png"


def _config_for_rerun(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "evosuite_version"}


# -- the document ------------------------------------------------------------------------------------------
def _overview(data) -> list[Block]:
    status = data.status or {}
    state = status.get("state", "unknown")
    budget = data.config.get("budget")
    failed = sum(1 for r in data.evaluations if r.get("error") or r.get("fitness") is None)
    seconds = sum(float(r.get("seconds") or 0) for r in data.evaluations)
    optimizer = data.config.get("optimizer") or {}
    rows = [
        ["state", state + (f": {status['error']}" if status.get("error") else "")],
        ["benchmark", f"`{data.benchmark}` (search fitness and held-out metric: `{data.metric}`)"],
        ["merge space", f"`{data.space_name}`" + (f" (stages: {', '.join(data.stage_labels)})"
                                                  if len(data.stage_labels) > 1 else "")],
        ["optimizer", f"`{optimizer.get('name', '?') if isinstance(optimizer, dict) else optimizer}`"],
        ["evaluations", f"{len(data.evaluations)} of a budget of {budget}" + (f", {failed} failed" if failed else "")
         + f"; {seconds:.0f} s of scoring"],
        ["seed", str(data.config.get("seed"))],
        ["sources", "; ".join(f"{s.get('name')}: `{s.get('model')}`" for s in data.config.get("sources") or [])],
    ]
    if data.config.get("base_model"):
        rows.append(["base model", f"`{data.config['base_model']}`"])
    if data.config.get("evosuite_version"):
        rows.append(["evosuite", str(data.config["evosuite_version"])])
    blocks: list[Block] = [("table", ["", ""], rows)]
    if state == "running":
        blocks.insert(0, ("p", f"**This run has not finished**: it is still running, or it was killed (a `kill -9` "
                               f"leaves it marked running). The report shows the {len(data.evaluations)} "
                               f"evaluations logged so far; `evosuite resume {data.path}` continues it."))
    elif state in ("failed", "interrupted"):
        blocks.insert(0, ("p", f"**This run stopped ({state})**; the report shows what it logged. "
                               + (status.get("fix") or f"`evosuite resume {data.path}` continues it.")))
    return blocks


def _verdict(data) -> str | None:
    scores = {n: float(r["score"]) for n, r in data.finals.items()
              if isinstance(r.get("score"), (int, float)) and math.isfinite(r["score"])}
    sources = {n: scores[n] for n in data.sources if n in scores}
    merges = {n: v for n, v in scores.items() if data.kind(n) == "merge"}
    if not sources or not merges:
        return None
    final = data.stage_labels[-1] if data.stage_labels[-1] in merges else list(merges)[-1]
    best_source = max(sources, key=sources.get)
    gain = merges[final] - sources[best_source]
    word = "above" if gain > 0 else "below" if gain < 0 else "level with"
    text = (f"The final merge (`{final}`) scores {merges[final]:.4f} on the held-out split, "
            f"{abs(gain):.4f} {word} the best source (`{best_source}`, {sources[best_source]:.4f}).")
    summary = data.summary or {}
    baseline = summary.get("best_baseline")
    if baseline in scores:  # the fixed hand recipes (reference rows): did evolution pay off?
        margin = merges[final] - scores[baseline]
        word = "above" if margin > 0 else "below" if margin < 0 else "level with"
        text += (f" It is {abs(margin):.4f} {word} the best baseline recipe (`{baseline}`, "
                 f"{scores[baseline]:.4f}).")
    if summary.get("best_genome_on_bound"):
        text += (" The best genome sits on a bound of its box (" + ", ".join(summary.get("genes_on_bound") or [])
                 + "): the search may have wanted to go further.")
    return text


def _results(data, figures: dict[str, str], folder: str) -> list[Block]:
    blocks: list[Block] = [("h", 2, f"Held-out results ({data.benchmark}, {data.split} split)")]
    if not data.finals:
        return blocks + [("p", "No held-out scores yet: the final table is scored after the search.")]
    verdict = _verdict(data)
    if verdict:
        blocks.append(("p", verdict))
    rows = []
    for name, row in data.finals.items():
        interval = data.interval(name)
        others = ", ".join(f"{k} {fmt(v)}" for k, v in (row.get("metrics") or {}).items()
                           if k != data.metric and not k.endswith(("_low", "_high")) and isinstance(v, (int, float)))
        rows.append([name, data.kind(name), fmt(row.get("score")),
                     f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "-", others or "-"])
    blocks.append(("table", ["model", "kind", data.metric, "95% interval", "other metrics"], rows))
    if "final.png" in figures:
        blocks.append(("img", f"{folder}/final.png", figures["final.png"]))
    return blocks


def _search(data, figures: dict[str, str], folder: str) -> list[Block]:
    blocks: list[Block] = [("h", 2, "Search")]
    rows = []
    for stage in data.stage_labels:
        records = [r for r in data.evaluations if r.get("stage") == stage]
        if not records:
            continue
        ok = [(k, r) for k, r in enumerate(records, start=1) if r.get("fitness") is not None and not r.get("error")]
        best_k, best = max(ok, key=lambda kr: kr[1]["fitness"]) if ok else (None, None)
        rows.append([stage, str(len(records)), str(len({r.get("generation") for r in records})),
                     str(len(records) - len(ok)), fmt(best["fitness"]) if best else "-",
                     f"#{best_k} (generation {best.get('generation')}"
                     + (f", baseline {best['baseline']})" if best.get("baseline") else ")") if best else "-"])
    if rows:
        blocks.append(("table", ["stage", "evaluations", "generations", "failed", "best fitness",
                                 "best found at"], rows))
    blocks.append(("img", f"{folder}/fitness.png", figures["fitness.png"]))
    errors = [r["error"] for r in data.evaluations if r.get("error")]
    if errors:
        blocks.append(("p", f"{len(errors)} candidates failed; the last error: `{errors[-1][:300]}`"))
    return blocks


def _recipes(data, figures: dict[str, str], folder: str) -> list[Block]:
    blocks: list[Block] = [("h", 2, "Best recipe")]
    recipes = data.stage_recipes()
    if not recipes:
        return blocks + [("p", "No recipe yet: best_recipe.yaml is written when the search ends.")]
    for label, recipe in recipes.items():
        space = recipe.get("space")
        blocks.append(("h", 3, f"Stage `{label}` ({space})"))
        blocks.extend(data.space_class(space).describe(recipe))  # each space describes its own recipes
        figure = recipe_figure_name(space, label)
        if figure in figures:
            blocks.append(("img", f"{folder}/{figure}", figures[figure]))
    return blocks


def build_document(data, figures: dict[str, str], folder: str) -> list[Block]:
    """The report of one run; ``figures``: PNG file name -> caption, the PNGs being under ``folder``."""
    blocks: list[Block] = [
        ("h", 1, f"Evolution report: {data.path.name}"),
        ("p", f"Run directory `{data.path}`; report written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}."),
        *_overview(data),
        *_results(data, figures, folder),
        *_search(data, figures, folder),
        *_recipes(data, figures, folder),
        ("h", 2, "Reproduce"),
        ("p", "Save the configuration below as `config.yaml` and run `evosuite run --config config.yaml` "
              "(the same seed and budget give the same search). A stopped run continues with "
              f"`evosuite resume {data.path}`."),
        ("code", yaml.safe_dump(_config_for_rerun(data.config), sort_keys=False, allow_unicode=True), "yaml"),
    ]
    model_dir = data.path / "model"
    if model_dir.is_dir():
        blocks.insert(-3, ("p", f"The merged model is in `{model_dir}` (its README is a Hugging Face model card)."))
    return blocks


# -- Markdown ---------------------------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"{'#' * block[1]} {block[2]}")
        elif kind == "p":
            out.append(block[1])
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            headers, rows = block[1], block[2]
            lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{block[2]}]({block[1]})\n\n*{block[2]}*")
        elif kind == "code":
            fence = "````" if "```" in block[1] else "```"
            out.append(f"{fence}{block[2]}\n{block[1].rstrip()}\n{fence}")
    return "\n\n".join(out) + "\n"


# -- HTML -------------------------------------------------------------------------------------------------
def _inline(text: str) -> str:
    """Escape, then `code` and **bold** spans."""
    escaped = html.escape(str(text))
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def _numeric(cell: str) -> bool:
    return bool(re.fullmatch(r"-?\d+(\.\d+)?", str(cell)))


def to_html(blocks: list[Block], images: dict[str, bytes]) -> str:
    """One HTML file: styles inline, figures as ``data:`` URIs (``images``: file name -> PNG bytes)."""
    title = next((b[2] for b in blocks if b[0] == "h" and b[1] == 1), "evosuite report")
    body: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            body.append(f"<h{block[1]}>{_inline(block[2])}</h{block[1]}>")
        elif kind == "p":
            body.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_inline(h)}</th>" for h in block[1]) if any(block[1]) else ""
            rows = "".join("<tr>" + "".join(f"<td class=\"num\">{_inline(c)}</td>" if _numeric(c)
                                            else f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block[2])
            body.append(f"<table>{f'<thead><tr>{head}</tr></thead>' if head else ''}<tbody>{rows}</tbody></table>")
        elif kind == "img":
            name = block[1].rsplit("/", 1)[-1]
            data = images.get(name)
            if data is None:
                continue
            encoded = base64.b64encode(data).decode("ascii")
            body.append(f"<figure><img alt=\"{html.escape(block[2])}\" src=\"data:image/png;base64,{encoded}\">"
                        f"<figcaption>{_inline(block[2])}</figcaption></figure>")
        elif kind == "code":
            body.append(f"<pre><code>{html.escape(block[1].rstrip())}</code></pre>")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
