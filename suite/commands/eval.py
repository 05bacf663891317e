"""``evosuite eval`` (score models on benchmarks) and ``evosuite score`` (score predictions made elsewhere).

Both print the same table and write the same JSON: one result per (model, benchmark) with the headline
score, its interval, every metric, and per-item prompts, predictions, references and scores.
"""

from __future__ import annotations

import csv
import datetime as _dt
import gc
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import click
import yaml

from evosuite import __version__
from evosuite.cli import cli
from evosuite.errors import ConfigError, DataError
from evosuite.plugin_manager import get_host


# -- options ------------------------------------------------------------------------------------------
def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _parse_options(pairs: Iterable[str]) -> list[tuple[str | None, str, Any]]:
    """``[NAME:]KEY=VALUE`` strings -> (benchmark name or None, key, value parsed as YAML)."""
    parsed = []
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"option {pair!r} is not KEY=VALUE",
                              "write e.g. -O num_beams=1 or -O mgsm-ja:max_new_tokens=64")
        key, value = pair.split("=", 1)
        target, _, key = key.rpartition(":")
        parsed.append((target or None, key.strip(), _parse_value(value)))
    return parsed


def _parse_data_dirs(values: Iterable[str], names: Sequence[str]) -> dict[str, str]:
    """``--data-dir PATH`` (one benchmark) or ``--data-dir NAME=PATH`` -> {benchmark: path}."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if sep and name in names:
            out[name] = path
        elif sep and not Path(value).exists():
            raise ConfigError(f"--data-dir {value!r} names benchmark {name!r}, which is not evaluated here",
                              f"use one of {', '.join(names)}")
        elif len(names) == 1:
            out[names[0]] = value
        else:
            raise ConfigError(f"--data-dir {value!r} given for several benchmarks",
                              "say which one: --data-dir NAME=PATH")
    return out


def _read_config(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist", "check the path") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path!r} is not UTF-8 text", "save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path!r} is not valid YAML: {str(exc).splitlines()[0]}",
                          "fix the YAML syntax") from None
    allowed = {"models", "benchmarks", "benchmark", "split", "limit", "seed", "device", "dtype"}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path!r} must be a mapping", f"keys: {', '.join(sorted(allowed))}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {path!r}", f"valid keys: {', '.join(sorted(allowed))}")
    return dict(data)


def _benchmark_specs(cli_names: Sequence[str], config: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Benchmarks from the config (names or {name, options}) then the command line, each once."""
    raw = config.get("benchmarks", config.get("benchmark", []))
    raw = [raw] if isinstance(raw, (str, Mapping)) else list(raw or [])
    specs: dict[str, dict[str, Any]] = {}
    for entry in raw:
        if isinstance(entry, str):
            specs.setdefault(entry, {})
        elif isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
            specs.setdefault(entry["name"], {}).update(dict(entry.get("options") or {}))
        else:
            raise ConfigError(f"benchmark entry {entry!r} in the config is not a name or {{name, options}}",
                              "write benchmarks: [NAME, {name: NAME, options: {...}}]")
    for name in cli_names:
        specs.setdefault(name, {})
    if not specs:
        raise ConfigError("no benchmark given", "pass --benchmark NAME (see `evosuite eval --help`)")
    return list(specs.items())


def _make_benchmarks(specs, data_dirs: Sequence[str], option_pairs: Sequence[str], batch_size: int | None):
    registry = get_host().registry("benchmarks")
    names = [name for name, _ in specs]
    classes = {name: registry.get(name) for name in names}
    options = {name: dict(opts) for name, opts in specs}
    for name, path in _parse_data_dirs(data_dirs, names).items():
        options[name]["data_dir"] = path
    for target, key, value in _parse_options(option_pairs):
        if target is not None and target not in classes:
            raise ConfigError(f"option {target}:{key} names benchmark {target!r}, which is not evaluated here",
                              f"use one of {', '.join(names)}")
        targets = [target] if target else [n for n in names if key in classes[n].options]
        if not targets:
            valid = sorted({k for cls in classes.values() for k in cls.options})
            raise ConfigError(f"no benchmark here takes option {key!r}", f"valid options: {', '.join(valid)}")
        for name in targets:
            options[name][key] = value
    if batch_size is not None:
        for name in names:
            if "batch_size" in classes[name].options:
                options[name]["batch_size"] = batch_size
    return {name: classes[name](**options[name]) for name in names}


# -- results ------------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "item"):  # numpy / torch scalars
        try:
            return _jsonable(value.item())
        except Exception:  # noqa: BLE001
            pass
    return str(value)


def result_record(model: str, adapter: str | None, benchmark, result) -> dict[str, Any]:
    metric = benchmark.metric
    low, high = result.metrics.get(f"{metric}_low"), result.metrics.get(f"{metric}_high")
    return {
        "model": model,
        "adapter": adapter,
        "benchmark": benchmark.name,
        "split": result.split,
        "metric": metric,
        "score": result.score,
        "interval": [low, high] if low is not None and high is not None else None,
        "metrics": result.metrics,
        "n_items": len(result.items),
        "seconds": round(result.seconds, 3),
        "options": {k: v for k, v in benchmark.settings.items()},
        "items": [{k: v for k, v in item.items() if k != "image"} for item in result.items],
    }


def _pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def matrix(records: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str], dict[tuple[str, str], Mapping]]:
    models = list(dict.fromkeys(r["model"] for r in records))
    benches = list(dict.fromkeys(f"{r['benchmark']} ({r['metric']})" for r in records))
    cells = {(r["model"], f"{r['benchmark']} ({r['metric']})"): r for r in records}
    return models, benches, cells


def table_markdown(records: Sequence[Mapping[str, Any]]) -> str:
    """Models by benchmarks, scores x 100, as a Markdown table (the paper's result tables' shape)."""
    models, benches, cells = matrix(records)
    lines = ["| model | " + " | ".join(benches) + " |", "|---|" + "---:|" * len(benches)]
    for model in models:
        row = [_pct(cells[(model, b)]["score"]) if (model, b) in cells else "-" for b in benches]
        lines.append(f"| {model} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def table_csv(records: Sequence[Mapping[str, Any]]) -> str:
    models, benches, cells = matrix(records)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["model", *benches])
    for model in models:
        writer.writerow([model, *(_pct(cells[(model, b)]["score"]) if (model, b) in cells else "" for b in benches)])
    return buffer.getvalue()


def print_tables(records: Sequence[Mapping[str, Any]], console, title: str) -> None:
    from rich.table import Table

    table = Table(title=f"{title} (scores x 100)")
    for column, justify in (("model", "left"), ("benchmark", "left"), ("split", "left"), ("metric", "left"),
                            ("score", "right"), ("95% interval", "right"), ("items", "right"), ("time", "right")):
        table.add_column(column, justify=justify)
    for r in records:
        interval = f"[{_pct(r['interval'][0])}, {_pct(r['interval'][1])}]" if r["interval"] else "-"
        table.add_row(r["model"], r["benchmark"], r["split"], r["metric"], _pct(r["score"]), interval,
                      str(r["n_items"]), f"{r['seconds']:.1f}s")
    console.print(table)
    models, benches, cells = matrix(records)
    if len(models) > 1 or len(benches) > 1:
        grid = Table(title="models x benchmarks (scores x 100)")
        grid.add_column("model")
        for bench in benches:
            grid.add_column(bench, justify="right")
        for model in models:
            grid.add_row(model, *(_pct(cells[(model, b)]["score"]) if (model, b) in cells else "-" for b in benches))
        console.print(grid)


def _default_output(command: str) -> Path:
    return Path(f"evosuite-{command}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json")


def check_outputs(output: str | None, table_path: str | None) -> None:
    """Check before any work that the results can be written: a bad path fails in a second, not after hours."""
    if table_path and Path(table_path).suffix.lower() not in (".md", ".csv"):
        raise ConfigError(f"--table {table_path!r} must end in .md or .csv", "choose Markdown or CSV")
    for option, value in (("--output", output), ("--table", table_path)):
        if not value:
            continue
        target = Path(value)
        if target.is_dir():
            raise ConfigError(f"{option} {value!r} is a directory", "give a file path")
        folder = next((p for p in [target.parent, *target.parent.parents] if p.exists()), Path("."))
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK) or (
                target.exists() and not os.access(target, os.W_OK)):
            raise ConfigError(f"{option} {value!r} cannot be written", "choose a writable path")


def write_outputs(records, skipped, *, command: str, output: str | None, table_path: str | None, console) -> Path:
    path = Path(output) if output else _default_output(command)
    payload = {"evosuite_version": __version__, "command": command,
               "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
               "results": list(records), "skipped": list(skipped)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(payload), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    console.print(f"results: {path}")
    if table_path:
        target = Path(table_path)
        if target.suffix.lower() not in (".md", ".csv"):
            raise ConfigError(f"--table {table_path!r} must end in .md or .csv", "choose Markdown or CSV")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(table_csv(records) if target.suffix.lower() == ".csv" else table_markdown(records),
                          encoding="utf-8")
        console.print(f"table: {target}")
    return path


# -- the commands -------------------------------------------------------------------------------------
class _ListsBenchmarks(click.Command):
    """A command whose --help ends with the installed benchmarks."""

    def format_epilog(self, ctx, formatter):
        super().format_epilog(ctx, formatter)
        try:
            registry = get_host().registry("benchmarks")
            rows = [(name, f"[{cls.modality}] {cls.description}") for name, cls in registry]
        except Exception as exc:  # noqa: BLE001 - help must still print
            rows = [("?", f"cannot list benchmarks: {exc}")]
        with formatter.section("Benchmarks"):
            formatter.write_dl(rows or [("(none)", "no benchmark plugin installed")])


_common = [
    click.option("--split", default=None, help="Split to score (default: each benchmark's test split)."),
    click.option("--data-dir", "data_dirs", multiple=True, metavar="[NAME=]PATH",
                 help="Local copy of a benchmark's data (a save_to_disk directory or its hub parquet files)."),
    click.option("-O", "--option", "option_pairs", multiple=True, metavar="[NAME:]KEY=VALUE",
                 help="Benchmark option (value parsed as YAML), e.g. -O num_beams=1; repeatable."),
    click.option("--output", type=click.Path(dir_okay=False),
                 help="JSON file of results (default: ./evosuite-<command>-<time>.json)."),
    click.option("--table", "table_path", type=click.Path(dir_okay=False),
                 help="Also write the models x benchmarks table as Markdown (.md) or CSV (.csv)."),
    click.option("--quiet", is_flag=True, help="Print only the table."),
]


def _with_common(func):
    for decorator in reversed(_common):
        func = decorator(func)
    return func


def _console(quiet: bool):
    from rich.console import Console

    from evosuite.runtime import quiet_library_progress

    quiet_library_progress()
    out = Console()
    if not out.is_terminal:  # files and pipes: wide enough that the table is not cut
        out = Console(width=160)
    return out, Console(stderr=True, quiet=quiet, markup=False, highlight=False)


@cli.command(name="eval", cls=_ListsBenchmarks)
@click.option("--model", "models", multiple=True, metavar="PATH_OR_ID", help="Model to score; repeatable.")
@click.option("--benchmark", "benchmark_names", multiple=True, metavar="NAME", help="Benchmark; repeatable.")
@click.option("--limit", type=click.IntRange(min=1), help="Score only N items of each benchmark (quick runs).")
@click.option("--seed", "subset_seed", type=int, help="With --limit: a seeded random subset instead of the first N.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML with models, benchmarks (names or {name, options}), split, limit, seed, device, dtype.")
@click.option("--adapter", help="Model adapter to use (default: the one that detects each model).")
@click.option("--device", default=None, help="cpu (default), cuda, cuda:1...")
@click.option("--dtype", default=None, help="float32 (default), bfloat16, float16.")
@click.option("--batch-size", type=int, help="Generation batch size (overrides the benchmarks' defaults).")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the hub.")
@click.option("--allow-pickle", is_flag=True, help="Allow .bin (pickle) weights.")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: $EVOSUITE_THREADS or 1).")
@_with_common
def eval_command(models, benchmark_names, limit, subset_seed, config_path, adapter, device, dtype, batch_size,
                 trust_remote_code, allow_pickle, threads, split, data_dirs, option_pairs, output, table_path, quiet):
    """Score models on benchmarks: one table, models by benchmarks, and a JSON file with every item.

    Each model is loaded once and run on every benchmark it can take (a text-only model skips image
    benchmarks). Generation follows each benchmark's defaults (the paper's settings); -O overrides them.
    """
    from evosuite.models import load_model
    from evosuite.runtime import configure_threads

    out, err = _console(quiet)
    check_outputs(output, table_path)
    configure_threads(threads)
    config = _read_config(config_path)
    model_list = list(dict.fromkeys([*(config.get("models") or []), *models]))
    if not model_list:
        raise ConfigError("no model given", "pass --model PATH_OR_ID (repeatable)")
    specs = _benchmark_specs(benchmark_names, config)
    benchmarks = _make_benchmarks(specs, data_dirs, option_pairs, batch_size)
    limit = limit if limit is not None else config.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigError(f"limit {limit!r} is not a positive number of items", "give limit: N with N >= 1")
    subset_seed = subset_seed if subset_seed is not None else config.get("seed")
    split = split or config.get("split")

    # Data first: a missing dataset fails before any model is loaded.
    items = {}
    for name, bench in benchmarks.items():
        err.print(f"loading {name} data")
        items[name] = bench.items(split or bench.test_split, limit=limit, seed=subset_seed)
        if not items[name]:
            raise DataError(f"benchmark {name!r} has no items to score", "check --limit and the data")

    records, skipped = [], []
    for model_name in model_list:
        err.print(f"loading model {model_name}")
        model = load_model(model_name, adapter=adapter, dtype=dtype or config.get("dtype", "float32"),
                           device=device or config.get("device", "cpu"), trust_remote_code=trust_remote_code,
                           allow_pickle=allow_pickle)
        for name, bench in benchmarks.items():
            if not model.supports(bench.modality):
                reason = f"{name} takes {bench.modality} models; {model_name} is a {model.modality} model"
                err.print(f"skipped: {reason}")
                skipped.append({"model": model_name, "benchmark": name, "reason": reason})
                continue
            records.append(_evaluate(model_name, model, bench, items[name], split or bench.test_split, err))
        del model
        gc.collect()
    if not records:
        raise ConfigError("no model could take any of the benchmarks",
                          "give a vision-language model for image benchmarks")
    print_tables(records, out, "evosuite eval")
    write_outputs(records, skipped, command="eval", output=output, table_path=table_path, console=out)


def _evaluate(model_name, model, bench, items, split, err) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    start = time.perf_counter()
    with Progress(TextColumn(f"{model_name} on {bench.name}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("generate", total=len(items))
        predictions = bench.predict(model, items, progress=lambda done, total: bar.update(task, completed=done))
    result = bench.score(items, predictions, split=split)
    result.seconds = time.perf_counter() - start
    err.print(f"{model_name} on {bench.name}: {bench.metric} {_pct(result.score)} ({len(items)} items, "
              f"{result.seconds:.1f}s)")
    return result_record(model_name, getattr(model, "adapter", None), bench, result)


def read_predictions(path: str) -> list[tuple[int, str]]:
    """``{"id": int, "prediction": str}`` per line -> sorted (id, prediction) pairs, with one-line errors."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"predictions file {path!r} does not exist", "check the path") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"predictions file {path!r} is not UTF-8 (byte {exc.start})", "save it as UTF-8") from None
    seen: dict[int, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number} is not JSON ({exc.msg})", "write one JSON object per line") from None
        if not isinstance(record, Mapping) or "id" not in record or "prediction" not in record:
            raise DataError(f"{path}:{number} lacks 'id' or 'prediction'",
                            'write {"id": <0-based row index>, "prediction": "..."} per line')
        item_id, prediction = record["id"], record["prediction"]
        if not isinstance(item_id, int) or isinstance(item_id, bool) or not isinstance(prediction, str):
            raise DataError(f"{path}:{number}: id must be an integer and prediction a string", "fix that line")
        if item_id in seen:
            raise DataError(f"{path}:{number}: id {item_id} appears twice", "give one prediction per item")
        seen[item_id] = prediction
    if not seen:
        raise DataError(f"predictions file {path!r} is empty", "write one JSON object per line")
    return sorted(seen.items())


@cli.command(name="score", cls=_ListsBenchmarks)
@click.option("--benchmark", "benchmark_name", required=True, metavar="NAME", help="Benchmark the predictions answer.")
@click.option("--predictions", "predictions_path", required=True, type=click.Path(dir_okay=False),
              help='JSONL: {"id": <0-based row index in the split>, "prediction": "..."} per line.')
@click.option("--name", "label", default=None, help="Label of these predictions in the table (default: file name).")
@_with_common
def score_command(benchmark_name, predictions_path, label, split, data_dirs, option_pairs, output, table_path, quiet):
    """Score predictions made elsewhere with a benchmark's metric: same table and JSON as `eval`."""
    out, _ = _console(quiet)
    check_outputs(output, table_path)
    bench = _make_benchmarks([(benchmark_name, {})], data_dirs, option_pairs, None)[benchmark_name]
    split = split or bench.test_split
    pairs = read_predictions(predictions_path)
    ids = [item_id for item_id, _ in pairs]
    all_items = bench.items(split)
    if len(ids) < len(all_items):  # a partial file scores only its items: say so, on screen and in the JSON
        click.echo(f"Warning: {Path(predictions_path).name} has predictions for {len(ids)} of the {len(all_items)} "
                   f"items of {benchmark_name}/{split}; the score covers those {len(ids)} only", err=True)
    items = bench.items_by_id(split, ids)
    start = time.perf_counter()
    result = bench.score(items, [prediction for _, prediction in pairs], split=split)
    result.seconds = time.perf_counter() - start
    records = [result_record(label or Path(predictions_path).name, None, bench, result)]
    records[0]["split_items"] = len(all_items)
    print_tables(records, out, "evosuite score")
    write_outputs(records, [], command="score", output=output, table_path=table_path, console=out)
