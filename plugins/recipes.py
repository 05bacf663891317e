"""Fixed merge recipes (a run's ``baselines:``): what a person would try by hand, scored beside the evolved merge.

A recipe is mergekit-style: ``{name, method, parameters, method_options}``. ``parameters`` gives each
per-model parameter either one value for every source or a mapping ``source name -> value``; a parameter
left out takes the method's default. ``method_options`` are the method's global parameters (``normalize``,
``lambda``...). Without ``baselines:`` a PS run scores mergekit's usual hand recipes (``DEFAULT_BASELINES``);
those needing a base only when the run has one.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from evosuite.api import REQUIRED
from evosuite.errors import ConfigError
from evosuite.plugin_manager import get

#: mergekit's usual hand recipes: the equal-weight average (``linear``, weights 1, normalized), task
#: arithmetic with weight 1, TIES and DARE-TIES with weight 1 and density 0.5.
DEFAULT_BASELINES = (
    {"name": "equal-weight", "method": "linear", "parameters": {"weight": 1.0}},
    {"name": "task-arithmetic", "method": "task_arithmetic", "parameters": {"weight": 1.0}},
    {"name": "ties-0.5", "method": "ties", "parameters": {"weight": 1.0, "density": 0.5}},
    {"name": "dare-ties-0.5", "method": "dare_ties", "parameters": {"weight": 1.0, "density": 0.5}},
)

RECIPE_KEYS = ("name", "method", "parameters", "method_options")


def resolve_baselines(baselines: Sequence[Mapping[str, Any]] | None, source_names: Sequence[str],
                      has_base: bool) -> list[dict[str, Any]]:
    """The run's recipes checked and normalized (``None``: the defaults the run can build)."""
    if baselines is None:
        baselines = [r for r in DEFAULT_BASELINES if has_base or not get("methods", r["method"]).requires_base]
    if not isinstance(baselines, (list, tuple)):
        raise ConfigError("baselines must be a list of recipes",
                          "e.g. baselines: [{name: ties-0.5, method: ties, parameters: {weight: 1, density: 0.5}}]")
    recipes, names = [], set()
    for i, raw in enumerate(baselines):
        recipe = _check_recipe(i, raw, source_names, has_base)
        if recipe["name"] in names or recipe["name"] in source_names:
            raise ConfigError(f"baselines[{i}] reuses the name {recipe['name']!r}",
                              "give every baseline a name distinct from the other baselines and the sources")
        names.add(recipe["name"])
        recipes.append(recipe)
    return recipes


def _check_recipe(i: int, raw: Any, source_names: Sequence[str], has_base: bool) -> dict[str, Any]:
    where = f"baselines[{i}]"
    if not isinstance(raw, Mapping) or not isinstance(raw.get("method"), str):
        raise ConfigError(f"{where} has no method", "give each baseline as {name: ..., method: ..., parameters: {...}}")
    unknown = sorted(set(raw) - set(RECIPE_KEYS))
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]!r}", f"a baseline takes {', '.join(RECIPE_KEYS)}")
    method = get("methods", raw["method"])
    if method.requires_base and not has_base:
        raise ConfigError(f"{where}: merge method {method.name!r} needs a base model",
                          "set base_model, or choose a method without one (linear)")
    for key in ("parameters", "method_options"):
        if not isinstance(raw.get(key) or {}, Mapping):
            raise ConfigError(f"{where}.{key} must be a mapping", "write it as name: value pairs")
    recipe = {"name": str(raw.get("name") or method.name), "method": method.name,
              "parameters": dict(raw.get("parameters") or {}), "method_options": dict(raw.get("method_options") or {})}
    per_source_params(recipe, source_names)  # every per-model parameter known and given
    global_params(recipe)
    return recipe


def per_source_params(recipe: Mapping[str, Any], source_names: Sequence[str]) -> list[dict[str, float]]:
    """Each source's per-model parameters, in source order, defaults filled in."""
    method = get("methods", recipe["method"])
    given = recipe["parameters"]
    unknown = sorted(set(given) - set(method.model_parameters))
    if unknown:
        raise ConfigError(f"baseline {recipe['name']!r}: merge method {method.name!r} has no per-model parameter "
                          f"{unknown[0]!r}", f"choose from {', '.join(method.model_parameters) or 'none'}")
    out = []
    for source in source_names:
        params = {}
        for p, default in method.model_parameters.items():
            value = given.get(p, default)
            if isinstance(value, Mapping):
                stray = sorted(set(value) - set(source_names))
                if stray:
                    raise ConfigError(f"baseline {recipe['name']!r}: {p} names {stray[0]!r}, not a source",
                                      f"name sources: {', '.join(source_names)}")
                value = value.get(source, default)
            if value is REQUIRED:
                raise ConfigError(f"baseline {recipe['name']!r}: merge method {method.name!r} needs {p!r} for "
                                  f"{source!r}", f"give it under the baseline's parameters, e.g. {p}: 1")
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"baseline {recipe['name']!r}: {p} is {value!r}, not a number", "give a number")
            params[p] = float(value)
        out.append(params)
    return out


def global_params(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The method's global parameters: its defaults, updated by the recipe's ``method_options``."""
    method = get("methods", recipe["method"])
    given = recipe["method_options"]
    unknown = sorted(set(given) - set(method.global_parameters))
    if unknown:
        raise ConfigError(f"baseline {recipe['name']!r}: unknown option {unknown[0]!r} for merge method "
                          f"{method.name!r}", f"valid: {', '.join(method.global_parameters) or 'none'}")
    params = {k: v for k, v in method.global_parameters.items() if v is not REQUIRED}
    params.update(given)
    missing = [k for k in method.global_parameters if k not in params]
    if missing:
        raise ConfigError(f"baseline {recipe['name']!r}: merge method {method.name!r} needs {missing[0]!r}",
                          "give it under the baseline's method_options")
    return params
