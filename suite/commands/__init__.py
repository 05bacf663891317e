"""Core CLI commands, one module each; importing this package attaches them to ``evosuite.cli.cli``."""

from evosuite.commands import run  # noqa: F401
