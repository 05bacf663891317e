"""Merge parameters: the forms a value takes, their validation, and their value for one tensor.

A parameter value is a scalar, a list of numbers (a gradient interpolated over the layers at
t = idx / (num_layers - 1), each module's layers by their own count, 0 outside the layers, as
``evosuite.architectures`` finds them), a list of booleans or strings (the item at int(t * (len - 1)), no
interpolation), or a list of ``{filter: SUBSTRING, value: ...}`` items where the first item whose filter
occurs in the tensor name (or is ``"*"``, or is absent) gives the value. A model's parameter is looked up
in its own ``parameters``, then its slice's, then its module's, then the global ones. As mergekit 0.1.5, a
parameter the method does not use is ignored with a warning (``_Unused``; an error with ``strict``); a name
no registered method uses is refused as a typo.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from evosuite.api import REQUIRED
from evosuite.errors import ConfigError

#: mergekit's match-all filter (any other filter is a plain substring: no wildcards).
MATCH_ALL = "*"

_MISSING = object()


def evaluate(value: Any, tensor_name: str, t: float) -> Any:
    """A parameter's value for one tensor at layer position t in [0, 1] (``_MISSING`` if no filter matches)."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for item in value:
            pattern = item.get("filter")
            if pattern is None or pattern == MATCH_ALL or pattern in tensor_name:
                return evaluate(item["value"], tensor_name, t)
        return _MISSING
    if isinstance(value, list):
        if len(value) == 1:
            return value[0]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return value[int(t * (len(value) - 1))]  # booleans and strings are picked, not interpolated
        scaled = t * (len(value) - 1)
        i0 = min(len(value) - 1, math.floor(scaled))
        i1 = min(len(value) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * value[i0] + frac * value[i1]
    return value


def resolve_parameters(defaults: Mapping[str, Any], scopes: Sequence[Mapping[str, Any]], tensor_name: str,
                       t: float, *, owner: str) -> dict[str, Any]:
    """Each parameter of ``defaults`` for one tensor: the first scope that gives it a value, else the default."""
    resolved = {}
    for name, default in defaults.items():
        value = _MISSING
        for scope in scopes:
            if name in scope:
                value = evaluate(scope[name], tensor_name, t)
                if value is not _MISSING:
                    break
        if value is _MISSING:
            if default is REQUIRED:
                raise ConfigError(f"parameter {name!r} has no value for {owner} on tensor {tensor_name}",
                                  f"give `{name}` in the parameters (a filter list needs a catch-all item)")
            value = default
        resolved[name] = value
    return resolved



def _check_value(value: Any, where: str, default: Any = None) -> None:
    # Strings only where the parameter's default is one: a number parameter given "abc" would fail mid-merge.
    ok_scalar = (int, float, bool, str) if isinstance(default, str) else (int, float, bool)
    if isinstance(value, ok_scalar) or value is None:
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: {value!r} is not a finite number", "give a finite number")
        return
    if isinstance(value, list) and value:
        if all(isinstance(v, dict) for v in value):
            for item in value:
                extra = set(item) - {"filter", "value"}
                if "value" not in item or extra:
                    raise ConfigError(f"{where}: a filter item must have `value` and optionally `filter`",
                                      "write items like {filter: self_attn, value: 0.5}")
                if item.get("filter") is not None and not isinstance(item["filter"], str):
                    raise ConfigError(f"{where}: filter {item['filter']!r} is not a string",
                                      "a filter is a substring of tensor names, e.g. self_attn")
                _check_value(item["value"], where, default)
            return
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return
        if all(isinstance(v, bool) for v in value) or (isinstance(default, str) and all(isinstance(v, str)
                                                                                        for v in value)):
            return
    raise ConfigError(f"{where}: {value!r} is not a parameter value",
                      "use a number, a list of numbers (gradient), a list of booleans, "
                      "or a list of {filter, value} items")


class _Unused:
    """Collects the parameters a method does not use: warnings, or the first one as an error (``strict``)."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.lines: list[str] = []

    def __call__(self, message: str, fix: str) -> None:
        if self.strict:
            raise ConfigError(message, f"{fix} (or drop --strict: mergekit ignores it)")
        self.lines.append(f"{message}; ignored, as mergekit ignores it")


def _known_parameters() -> set[str]:
    """Every parameter name some registered merge method uses (others are typos: refused, not ignored)."""
    from evosuite import plugin_manager

    names: set[str] = set()
    for method_name in plugin_manager.get_host().registry("methods").names():
        method = plugin_manager.get("methods", method_name)
        names.update(method.global_parameters, method.model_parameters)
    return names


def _check_params(params: Any, valid: Mapping[str, Any], where: str, method: str, unused: _Unused) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: `parameters` must be a mapping", "write `parameters: {name: value}`")
    kept = {}
    for name, value in params.items():
        if name not in valid and name not in _known_parameters():  # a typo, not another method's parameter
            raise ConfigError(f"unknown parameter {name!r} for merge method {method!r} in {where}",
                              f"valid parameters: {', '.join(sorted(valid)) or 'none'}")
        if name not in valid:
            unused(f"merge method {method!r} does not use parameter {name!r} ({where})",
                   f"remove it; parameters used here: {', '.join(sorted(valid)) or 'none'}")
            continue
        _check_value(value, f"{where}, parameter {name!r}", valid[name])
        kept[name] = value
    return kept

