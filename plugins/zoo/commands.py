"""``evosuite zoo build|list|path``: the tiny offline model zoo (added by ``evosuite.plugins.zoo.plugin``)."""

from __future__ import annotations

import json

import click

VARIANTS = ("full", "test")


def add_zoo_command(cli):
    @cli.group()
    def zoo():
        """The tiny, seeded model zoo that lets evosuite run offline (built once, cached)."""

    @zoo.command()
    @click.option("--variant", type=click.Choice(VARIANTS), default="full", show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--force", is_flag=True, help="Rebuild even when a cached zoo exists.")
    def build(variant, seed, force):
        """Build the zoo (a few CPU minutes) and print its score table."""
        from evosuite.plugins.zoo.build import build_zoo
        from evosuite.runtime import quiet_library_progress

        quiet_library_progress()
        root = build_zoo(variant, seed=seed, force=force, progress=click.echo)
        click.echo(f"zoo: {root}")

    @zoo.command(name="list")
    @click.option("--variant", type=click.Choice(VARIANTS), default="full", show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    def list_(variant, seed):
        """The zoo's models and tasks, with their paths."""
        from evosuite.plugins.zoo.build import zoo_path

        root = zoo_path(variant, seed)
        manifest = root / "zoo.json"
        if not manifest.is_file():
            click.echo(f"not built yet: {root} (run `evosuite zoo build --variant {variant}`)")
            return
        meta = json.loads(manifest.read_text())
        for name, model in meta["models"].items():
            click.echo(f"model  {name:<12} {model['role']:<5} {model['kind']:<10} {root / model['path']}")
        for task, splits in meta["tasks"].items():
            for split, path in splits.items():
                click.echo(f"task   {task:<12} {split:<16} {root / path}")

    @zoo.command()
    @click.option("--variant", type=click.Choice(VARIANTS), default="full", show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    def path(variant, seed):
        """Where the zoo is (or will be) cached."""
        from evosuite.plugins.zoo.build import zoo_path

        click.echo(zoo_path(variant, seed))
