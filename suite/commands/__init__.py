"""Core CLI commands, one module each; importing this package attaches them to ``evosuite.cli.cli``."""

from evosuite.commands import run  # noqa: F401
from evosuite.commands import eval  # noqa: F401,E402  (eval and score)
