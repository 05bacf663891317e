"""Process-wide runtime settings: torch's CPU thread count, chosen deliberately.

On small shared machines torch's default (one thread per core, OpenMP spin-waiting) can be many times
slower than one thread when another process is busy, so evosuite uses ``$EVOSUITE_THREADS`` or 1 unless
told otherwise. On a GPU the setting hardly matters.
"""

from __future__ import annotations

import os


def configure_threads(threads: int | None = None) -> int:
    import torch

    if threads is None:
        text = os.environ.get("EVOSUITE_THREADS", "1")
        try:
            threads = int(text)
        except ValueError:
            from evosuite.errors import ConfigError

            raise ConfigError(f"EVOSUITE_THREADS={text!r} is not a number",
                              "set it to a thread count, e.g. 1") from None
    threads = max(1, threads)
    torch.set_num_threads(threads)
    return threads


def quiet_library_progress() -> None:
    """Turn off transformers' and datasets' own progress bars: evosuite draws its own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass
