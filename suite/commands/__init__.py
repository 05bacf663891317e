"""Core CLI commands, one module each; importing this package attaches them to ``evosuite.cli.cli``."""

from evosuite.commands import eval, merge, plugins_install, report, run  # noqa: F401  (eval also adds `score`)
