"""What `evosuite resume` does when a run's config.yaml no longer matches the configuration its logs were
computed with: it refuses, showing the difference, unless each changed key is allowed by
``--allow-config-change KEY`` and is one that can change without making the logs wrong.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from evosuite.errors import ConfigError

#: Keys that may change on resume. Anything else (seed, sources, space, optimizer, search items...) changes
#: what a logged genome scores, so the logged fitness values would no longer be true.
CHANGEABLE = {
    "budget": "may grow: the search goes on and the summary is rewritten",
    "max_consecutive_failures": "how many failures in a row stop the run",
    "device": "where the rest is computed",
    "batch_size": "retired: ignored (a benchmark's own batch_size option sets its batches)",
}
_IGNORED = {"evosuite_version"}


def config_diff(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Top-level key -> (recorded value, current value) for every key whose value differs."""
    keys = (set(recorded) | set(current)) - _IGNORED
    return {k: (recorded.get(k), current.get(k)) for k in sorted(keys) if recorded.get(k) != current.get(k)}


def _describe(diff: Mapping[str, tuple[Any, Any]]) -> str:
    return "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in diff.items())


def check_config_change(recorded: Mapping[str, Any], current: Mapping[str, Any], allowed: Iterable[str], *,
                        stages: int) -> dict[str, tuple[Any, Any]]:
    """The accepted difference between the two configurations; ``ConfigError`` when it may not be resumed."""
    allowed = set(allowed)
    unknown = sorted(allowed - set(CHANGEABLE))
    if unknown:
        raise ConfigError(f"--allow-config-change {unknown[0]}: {unknown[0]!r} cannot change in a run (its logged "
                          f"evaluations were computed with the old value)",
                          f"keys that may change: {', '.join(CHANGEABLE)}; for anything else start a new run")
    diff = config_diff(recorded, current)
    refused = {k: v for k, v in diff.items() if k not in allowed}
    if refused:
        if set(refused) <= set(CHANGEABLE):
            fix = "restore config.yaml, or resume with " + " ".join(f"--allow-config-change {k}" for k in refused)
        else:
            fix = "restore config.yaml, or start a new run with the new configuration"
        raise ConfigError(f"config.yaml changed since the run started ({_describe(refused)})", fix)
    if "budget" in diff:
        old, new = diff["budget"]
        if not isinstance(old, int) or not isinstance(new, int) or new < old:
            raise ConfigError(f"budget may only grow on resume (was {old!r}, now {new!r})",
                              "give a budget at least as large, or start a new run")
        if stages > 1:
            raise ConfigError("the budget of a pipeline (ps+dfs) cannot change on resume: a later stage's logs "
                              "were computed on the earlier stage's old best",
                              "start a new run with the larger budget")
    return diff
