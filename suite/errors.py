"""The exceptions evosuite raises for failures a user can fix.

The CLI prints them as one line, ``Error: <what> (<how to fix>)``, and exits 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations


class EvosuiteError(Exception):
    """A failure the user can act on: ``what`` went wrong and ``fix`` says what to do about it."""

    def __init__(self, what: str, fix: str | None = None):
        super().__init__(what)
        self.what = what
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.what} ({self.fix})" if self.fix else self.what


class ConfigError(EvosuiteError):
    """A configuration, option or argument is wrong."""


class PluginError(EvosuiteError):
    """A plugin failed to load or register, or two plugins clash."""


class ModelError(EvosuiteError):
    """A model cannot be loaded, or models cannot be merged together."""


class DataError(EvosuiteError):
    """A benchmark's data cannot be found or read."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: raised in the main thread so that cleanup runs as it does for Ctrl-C."""
