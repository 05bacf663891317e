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


def recipe_hash(settings, files) -> str:
    """A short hash of a build's ``settings`` (JSON-able) and the bytes of the ``files`` its code lives in,
    so that a cached build is never reused once its recipe or its code changes."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in files:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:10]


def build_atomically(root: Path, build_into, *, marker: str, say=None, label: str = "cache",
                     force: bool = False) -> Path:
    """Return ``root``, first calling ``build_into(tmp)`` when ``root/marker`` is missing (or ``force``).

    The build happens in a folder beside ``root`` that is renamed into place at the end, so a crash leaves
    only a ``.tmp-*`` folder (removed on the way out), never a half-built ``root``; if another process
    finishes the same build first, its copy is kept.
    """
    import os
    import shutil
    import time

    say = say or (lambda message: None)
    root = Path(root)
    if (root / marker).exists() and not force:
        say(f"{label}: reusing {root}")
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".tmp-{root.name}-{os.getpid()}-{time.time_ns()}"
    try:
        build_into(tmp)
        if root.exists():
            old = root.parent / f".old-{root.name}-{os.getpid()}-{time.time_ns()}"
            os.rename(root, old)
            os.rename(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, root)
            except OSError:
                if not (root / marker).exists():
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
