"""Where evosuite keeps what it builds once and reuses: the tiny zoo, downloaded fixtures."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user cache directory: ``$EVOSUITE_CACHE``, else ``$XDG_CACHE_HOME/evosuite``, else ``~/.cache/evosuite``."""
    override = os.environ.get("EVOSUITE_CACHE")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "evosuite"
