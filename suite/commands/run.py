"""``evosuite run`` and ``evosuite resume``."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from evosuite.cli import cli
from evosuite.config import DEFAULT_SPACE, parse_config
from evosuite.errors import ConfigError
from evosuite.pipeline import set_stage_option, stage_names
from evosuite.plugin_manager import get_host
from evosuite.run_store import RunStore, default_run_dir
from evosuite.runtime import configure_threads, quiet_library_progress
from evosuite.tui import make_reporter


def _experiment_config(plugin: str | None, config_path: str | None, reporter, space: str | None) -> dict:
    if plugin and config_path:
        raise ConfigError("--plugin and --config both given", "use one: a plugin's default experiment or a config")
    if config_path:
        try:
            data = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {config_path!r} does not exist", "check the path") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {config_path!r} is not UTF-8 text", "save it as UTF-8") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {config_path!r} is not valid YAML: {str(exc).splitlines()[0]}",
                              "fix the YAML syntax") from None
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"config file {config_path!r} holds a {type(data).__name__}, not a mapping",
                              "write the run configuration as key: value pairs (sources, benchmark...)")
        data = dict(data or {})
        if space:
            current = data.get("space")
            current_name = current.get("name") if isinstance(current, dict) else current
            data["space"] = current if current_name == space else {"name": space}
        return data
    registry = get_host().registry("experiments")
    if not plugin:
        raise ConfigError("nothing to run", f"give --plugin NAME (one of: {', '.join(registry.names())}) "
                                            "or --config FILE")
    experiment = registry.get(plugin)
    return dict(experiment.config(progress=reporter.message, space=space))


def _parse_stage_options(pairs, space_flags) -> list[tuple[str, str, object]]:
    """``-S STAGE.KEY=VALUE`` strings (value parsed as YAML), then the spaces' own flags, as (stage, key, value)."""
    parsed = []
    for pair in pairs:
        target, sep, value = pair.partition("=")
        stage, dot, key = target.partition(".")
        if not sep or not dot or not stage.strip() or not key.strip():
            raise ConfigError(f"-S {pair!r} is not STAGE.KEY=VALUE", "write e.g. -S dfs.scales=off")
        parsed.append((stage.strip(), key.strip(), parse_value(value)))
    return parsed + list(space_flags)


def parse_value(text: str):
    """``text`` parsed as YAML, except that only true/false are flags: YAML 1.1 reads off, on, yes and no as
    booleans, but ``-S dfs.scales=off`` means the string."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
        return text.strip()
    return value


def add_space_flags(command: click.Command) -> None:
    """Give ``command`` a ``--<space>-<option>`` flag for each option a registered space offers on the command
    line (``MergeSpace.cli_options``), the same as ``-S <space>.<option>=VALUE``."""
    taken = {opt for param in command.params for opt in getattr(param, "opts", ())}
    for name, space in get_host().registry("spaces"):
        for option, (help_text, choices) in (getattr(space, "cli_options", None) or {}).items():
            flag = f"--{name}-{option}".replace("_", "-")
            if flag in taken:
                continue

            def remember(ctx, param, value, stage=name, key=option):
                if value is not None:
                    ctx.meta.setdefault("evosuite.space_flags", []).append((stage, key, value))
                return value

            command.params.append(click.Option([flag], type=click.Choice(list(choices)) if choices else str,
                                               expose_value=False, callback=remember, help=help_text))
            taken.add(flag)


def _set_data_dir(data: dict, value: str) -> None:
    """``--data-dir [NAME=]PATH``: the run's benchmark reads its data from PATH (its ``data_dir`` option)."""
    benchmark = data.get("benchmark")
    spec = {"name": benchmark} if isinstance(benchmark, str) else dict(benchmark or {})
    name, sep, path = value.partition("=")
    if sep and not Path(value).exists():  # NAME=PATH, unless the whole value is a path with "=" in it
        if name != spec.get("name"):
            raise ConfigError(f"--data-dir {value!r} names benchmark {name!r}, but this run's benchmark is "
                              f"{spec.get('name')!r}", "give --data-dir PATH")
        value = path
    # Absolute, so that `evosuite resume` finds the data from any directory.
    spec["options"] = {**(spec.get("options") or {}), "data_dir": str(Path(value).expanduser().absolute())}
    data["benchmark"] = spec


@cli.command()
@click.option("--plugin", "plugin", metavar="NAME", help="Run this plugin's default experiment (e.g. vlm, llm).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="A run configuration (YAML).")
@click.option("--space", help="Merge space: ps (default), dfs, or a pipeline such as ps+dfs.")
@click.option("-S", "--stage-option", "stage_options", multiple=True, metavar="STAGE.KEY=VALUE",
              help="Set an option of a stage's merge space (value parsed as YAML), e.g. -S dfs.scales=off; "
                   "repeatable.")
@click.option("--seed", type=int, help="Override the seed.")
@click.option("--budget", type=int, help="Override the number of candidate evaluations.")
@click.option("--data-dir", metavar="[NAME=]PATH",
              help="Local copy of the benchmark's data (its data_dir option), as for `evosuite eval`.")
@click.option("--run-dir", type=click.Path(file_okay=False), help="Where to write the run (default: runs/<time>).")
@click.option("--device", help="Override the device (cpu, cuda, cuda:1...).")
@click.option("--threads", type=int, default=None,
              help="torch CPU threads (default: $EVOSUITE_THREADS or 1; 2 threads on 2 busy cores are slower).")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--plain", is_flag=True, help="Plain progress lines even on a terminal.")
@click.option("--no-save-model", is_flag=True, help="Do not export the merged model.")
@click.option("--report", "make_report", is_flag=True, help="Write report.md and report.html into the run directory.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Evaluate candidates on N Ray workers (pip install 'evosuite[ray]'; in-process without Ray).")
@click.option("--ray-address", default=None, help="Use this Ray cluster instead of starting a local Ray.")
@click.pass_context
def run(ctx, plugin, config_path, space, stage_options, seed, budget, data_dir, run_dir, device, threads, quiet, plain,
        no_save_model, make_report, workers, ray_address):
    """Evolve a merge: a plugin's default experiment (--plugin) or a configuration file (--config).

    Every evaluation is logged to the run directory; a killed run continues with `evosuite resume DIR`.
    """
    from evosuite.runner import run_experiment

    configure_threads(threads)
    quiet_library_progress()
    reporter = make_reporter(quiet=quiet, plain=True if plain else None)
    run_path = Path(run_dir) if run_dir else default_run_dir()
    if RunStore(run_path).exists():
        raise ConfigError(f"run directory {str(run_path)!r} already holds a run",
                          f"continue it with `evosuite resume {run_path}` or choose another --run-dir")
    if run_path.exists() and (not run_path.is_dir() or any(run_path.iterdir())):
        raise ConfigError(f"--run-dir {str(run_path)!r} is not empty and is not an evosuite run",
                          "choose a new or empty folder; evosuite never writes into a folder it did not make")
    with reporter:
        reporter.stage("preparing")
        data = _experiment_config(plugin, config_path, reporter, space)
        overrides = {"seed": seed, "budget": budget, "device": device, "workers": workers,
                     "ray_address": ray_address}
        data.update({k: v for k, v in overrides.items() if v is not None})
        for stage, key, value in _parse_stage_options(stage_options, ctx.meta.get("evosuite.space_flags", [])):
            data["space"] = set_stage_option(data.get("space") or DEFAULT_SPACE, stage, key, value)
        if data_dir and "benchmark" in data:
            _set_data_dir(data, data_dir)
        config = parse_config(data)
        summary = run_experiment(config, run_path, reporter, save_model=not no_save_model)
    _announce_results(run_path, make_report)
    return summary


def _announce_results(run_path: Path, make_report: bool) -> None:
    click.echo(f"summary: {run_path / 'summary.json'}")
    if make_report:
        from evosuite.report import write_report

        for path in write_report(run_path):
            click.echo(f"report: {path}")
    else:
        click.echo(f"report: run `evosuite report {run_path}` (or add --report)")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: $EVOSUITE_THREADS or 1).")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--plain", is_flag=True, help="Plain progress lines even on a terminal.")
@click.option("--no-save-model", is_flag=True, help="Do not export the merged model.")
@click.option("--report", "make_report", is_flag=True, help="Write report.md and report.html into the run directory.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Evaluate the rest on N Ray workers (the results do not depend on it; default: as the run).")
@click.option("--ray-address", default=None, help="Use this Ray cluster for the rest of the run.")
@click.option("--allow-config-change", "allowed_changes", multiple=True, metavar="KEY",
              help="Accept an edit of this key of the run's config.yaml (budget may grow); repeatable.")
def resume(run_dir, threads, quiet, plain, no_save_model, make_report, workers, ray_address, allowed_changes):
    """Continue a run that was stopped or killed, without redoing finished evaluations."""
    import dataclasses

    from evosuite.runner import config_from_store, run_experiment

    configure_threads(threads)
    quiet_library_progress()
    store = RunStore(run_dir)
    if not store.exists():
        raise ConfigError(f"{run_dir!r} is not a run directory evosuite made (no .evosuite-run marker)",
                          "give the directory `evosuite run` made")
    config = config_from_store(store)
    if _check_changes(store, config, allowed_changes) is None:
        click.echo(f"the run in {store.path} has already finished; nothing to do")
        _announce_results(store.path, make_report)
        return store.read_json("summary.json")
    reporter = make_reporter(quiet=quiet, plain=True if plain else None)
    with reporter:
        reporter.stage("resuming")
        # How candidates are evaluated is not part of the search: a run may resume on other hardware.
        overrides = {"workers": workers, "ray_address": ray_address}
        config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
        summary = run_experiment(config, store.path, reporter, resume=True, save_model=not no_save_model)
    _announce_results(store.path, make_report)
    return summary


def _check_changes(store: RunStore, config, allowed: tuple[str, ...]) -> dict | None:
    """Refuse an edited config.yaml unless allowed; None when the run is finished and nothing changed."""
    from evosuite.config_change import check_config_change

    recorded = store.recorded_config()
    if recorded is None:
        raise ConfigError(f"the marker {store.path / '.evosuite-run'} is unreadable",
                          "the configuration the run started with is unknown: start a new run")
    diff = check_config_change(recorded, store.config(), allowed, stages=len(stage_names(config.space.name)))
    if diff:
        store.record_config({**store.config()})  # the logs from here on are computed with the new values
        return diff
    finished = store.status().get("state") == "finished" and store.read_json("summary.json") is not None
    return None if finished else diff
