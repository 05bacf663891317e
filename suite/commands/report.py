"""``evosuite report RUN_DIR``: write report.md and a self-contained report.html into a run directory."""

from __future__ import annotations

import click

from evosuite.cli import cli
from evosuite.errors import ConfigError
from evosuite.run_store import RunStore


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
def report(run_dir):
    """Explain a run: fitness over evaluations, the best recipe, the held-out table, as Markdown and HTML.

    Works on a finished run and on one still running or killed: it reads only the run directory.
    """
    if not RunStore(run_dir).exists():
        raise ConfigError(f"{run_dir!r} is not a run directory evosuite made (no .evosuite-run marker)",
                          "give the directory `evosuite run` made")
    from evosuite.report import write_report

    md_path, html_path = write_report(run_dir)
    click.echo(f"report: {md_path}")
    click.echo(f"report: {html_path}")


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
def compare(run_dirs):
    """One Markdown table from several finished runs on one benchmark: the sources once, then each run's
    merges (e.g. runs with --space ps, dfs, ps+dfs and --dfs-scales off)."""
    from evosuite.report.compare import comparison_markdown

    click.echo(comparison_markdown(list(run_dirs)), nl=False)
