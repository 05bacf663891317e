"""``evosuite merge``: a mergekit YAML recipe merged tensor by tensor into a Hugging Face model directory."""

from __future__ import annotations

import re

import click

from evosuite.cli import cli
from evosuite.errors import ConfigError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)I?B?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'5GB', '500M', '1e9' or a plain byte count -> bytes."""
    match = _SIZE.match(text)
    if match is None:
        try:
            return int(float(text))
        except ValueError:
            raise ConfigError(f"shard size {text!r} is not a size", "use e.g. 5GB, 500MB or a byte count") from None
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * 1024 ** " KMGT".index(unit or " "))


@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--dtype", help="Output dtype (float32, bfloat16, float16); default: the config's out_dtype or dtype, "
              "else the checkpoints'.")
@click.option("--compute-dtype", default=None,
              help="Dtype to compute in; default: mergekit's (the config's dtype, else the checkpoints', e.g. "
                   "bfloat16). float32 is the precise path.")
@click.option("--strict", is_flag=True, help="Refuse parameters the merge method does not use (default: warn).")
@click.option("--device", default="cpu", show_default=True, help="Where to compute (cpu, cuda...).")
@click.option("--shard-size", default="5GB", show_default=True, help="Largest safetensors shard.")
@click.option("--seed", type=int, default=None,
              help="Seed of random methods (DARE, DELLA); default: the recipe's `seed`, else 0.")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: $EVOSUITE_THREADS or 1).")
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it exists.")
@click.option("--dry-run", is_flag=True, help="Validate the config and print the plan; write nothing.")
def merge(config, out_dir, dtype, compute_dtype, strict, device, shard_size, seed, threads, force, dry_run):
    """Merge the models of a mergekit YAML CONFIG into OUT_DIR (a Hugging Face model directory).

    Methods: linear, slerp, task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs(_ties), della(_linear),
    model_stock, passthrough, and any a plugin adds. Sources are read from memory-mapped safetensors, one
    tensor at a time; OUT_DIR is written beside and renamed, so a failure leaves nothing half-written.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from evosuite.merge import merge_from_config
    from evosuite.runtime import configure_threads

    threads = configure_threads(threads)
    size = parse_size(shard_size)
    if dry_run:
        plan = merge_from_config(config, out_dir, dtype=dtype, device=device, shard_size=size, seed=seed,
                                 force=force, dry_run=True, compute_dtype=compute_dtype, strict=strict)
        click.echo(plan.describe())
        return
    with Progress(TextColumn("merging"), BarColumn(), MofNCompleteColumn(), TextColumn("tensors"),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task("merge", total=None)
        out = merge_from_config(config, out_dir, dtype=dtype, device=device, shard_size=size, seed=seed,
                                force=force, progress=lambda done, total: bar.update(task, completed=done,
                                                                                     total=total),
                                threads=threads, compute_dtype=compute_dtype, strict=strict)
    click.echo(f"merged model written to {out}")
