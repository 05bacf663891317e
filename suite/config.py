"""The run configuration (``evosuite run --config exp.yaml``): parsed, defaulted and checked before any work.

Every mistake is reported as one ``ConfigError`` line naming the key and the fix.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from evosuite.errors import ConfigError

#: The merge space and optimizer of a configuration that names none (the README's defaults).
DEFAULT_SPACE, DEFAULT_OPTIMIZER = "ps", "cmaes"


@dataclass
class SourceSpec:
    name: str
    model: str
    adapter: str | None = None
    #: The adapter's own options (e.g. ``image_mode`` of the vlm adapter), checked when the model loads.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PluginSpec:
    """A registered thing (benchmark, space, optimizer) by name, with its options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    sources: list[SourceSpec]
    benchmark: PluginSpec
    base_model: str | None = None
    #: Source whose non-mergeable parts (a VLM's vision tower and projector) the result keeps.
    carrier: str | None = None
    space: PluginSpec = field(default_factory=lambda: PluginSpec(DEFAULT_SPACE))
    optimizer: PluginSpec = field(default_factory=lambda: PluginSpec(DEFAULT_OPTIMIZER))
    #: Candidate evaluations of the search (the final table's evaluations come on top).
    budget: int = 60
    #: Items of the search split scored per candidate (None: all), and of the held-out test split.
    search_limit: int | None = None
    test_limit: int | None = None
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    trust_remote_code: bool = False
    allow_pickle: bool = False
    #: Stop after this many failed candidates in a row.
    max_consecutive_failures: int = 10
    #: Cheaper fitness (``evosuite.fitness``): {subset, grow, racing, chunk}; None scores every item.
    fitness: dict[str, Any] | None = None
    #: Candidates evaluated at once on Ray workers (``evosuite.parallel``); 1 evaluates in-process.
    workers: int = 1
    #: An existing Ray cluster (``ray://host:10001`` or ``auto``); None starts a local Ray when workers > 1.
    ray_address: str | None = None
    #: Fixed recipes scored beside the merge (``{name, method, parameters, method_options}``, mergekit style);
    #: None: the first space's defaults (a PS run: equal-weight, task arithmetic, TIES, DARE-TIES); []: none.
    baselines: list[dict[str, Any]] | None = None
    #: Score the baselines' genomes first (generation 0) and start the optimizer at the best one.
    warm_start: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def carrier_name(self) -> str:
        return self.carrier or self.sources[-1].name


_SCALARS = {
    "base_model": (str, type(None)), "carrier": (str, type(None)), "budget": int, "search_limit": (int, type(None)),
    "test_limit": (int, type(None)), "seed": int, "device": str, "dtype": str, "trust_remote_code": bool,
    "allow_pickle": bool, "max_consecutive_failures": int,
    "fitness": (dict, type(None)), "workers": int, "ray_address": (str, type(None)),
    "baselines": (list, type(None)), "warm_start": bool,
}
#: Keys that configurations once took and that no longer do anything: accepted (every run directory written
#: before keeps them in its config.yaml, so it still resumes) and dropped, with a warning unless the value is
#: the old default. A benchmark's own ``batch_size`` option sets its generation batches.
_RETIRED = {"batch_size": 32}
_TOP_KEYS = {"sources", "benchmark", "space", "optimizer", *_SCALARS, *_RETIRED}


def _plugin_spec(key: str, value: Any, default: str | None = None) -> PluginSpec:
    if value is None and default is not None:
        return PluginSpec(default)
    if isinstance(value, str):
        return PluginSpec(value)
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"name", "options"})
        if unknown:
            raise ConfigError(f"unknown key {key}.{unknown[0]!r}", f"{key} takes 'name' and 'options'")
        if not isinstance(value.get("name"), str):
            raise ConfigError(f"{key}.name is missing", f"name the {key} to use, e.g. {key}: {{name: ...}}")
        options = value.get("options") or {}
        if not isinstance(options, Mapping):
            raise ConfigError(f"{key}.options must be a mapping", "write options as key: value pairs")
        return PluginSpec(value["name"], dict(options))
    raise ConfigError(f"{key} must be a name or a mapping with 'name' and 'options'", f"got {value!r}")


def parse_config(data: Mapping[str, Any]) -> RunConfig:
    """Build a ``RunConfig`` from a dict (YAML), checking keys and types."""
    if not isinstance(data, Mapping):
        raise ConfigError("the run configuration must be a mapping", "see the README's configuration section")
    # A run directory's config.yaml records the version that wrote it: informational, so a copy runs as is.
    data = {k: v for k, v in data.items() if k != "evosuite_version"}
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in the run configuration",
                          f"valid keys: {', '.join(sorted(_TOP_KEYS - set(_RETIRED)))}")
    for key, old_default in _RETIRED.items():
        if key in data and data.pop(key) != old_default:
            warnings.warn(f"the run configuration's {key} does nothing and is ignored; set the benchmark's own "
                          f"option instead (benchmark: {{name: ..., options: {{{key}: ...}}}})", stacklevel=2)
    for key, types in _SCALARS.items():
        if key not in data:
            continue
        value = data[key]
        wrong = not isinstance(value, types) or (types is int and isinstance(value, bool))
        if wrong:
            expected = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
            raise ConfigError(f"{key} has the wrong type ({type(value).__name__})", f"expected {expected}")
    raw_sources = data.get("sources")
    if not isinstance(raw_sources, list) or len(raw_sources) < 2:
        raise ConfigError("sources must list at least two models", "give each as {name: ..., model: PATH_OR_ID}")
    sources = []
    for i, raw in enumerate(raw_sources):
        if isinstance(raw, str):
            raw = {"name": Path(raw).name or raw, "model": raw}
        if not isinstance(raw, Mapping) or "model" not in raw:
            raise ConfigError(f"sources[{i}] has no model", "give each source as {name: ..., model: PATH_OR_ID}")
        extra = sorted(set(raw) - {"name", "model", "adapter", "options"})
        if extra:
            raise ConfigError(f"unknown key sources[{i}].{extra[0]!r}",
                              "a source takes name, model, adapter and options")
        if not isinstance(raw.get("options") or {}, Mapping):
            raise ConfigError(f"sources[{i}].options must be a mapping", "write options as key: value pairs")
        sources.append(SourceSpec(str(raw.get("name") or raw["model"]), str(raw["model"]), raw.get("adapter"),
                                  dict(raw.get("options") or {})))
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ConfigError("two sources share a name", "give every source a distinct name")
    if "benchmark" not in data:
        raise ConfigError("no benchmark in the run configuration", "add benchmark: NAME (see `evosuite plugins --all`)")
    config = RunConfig(
        sources=sources,
        benchmark=_plugin_spec("benchmark", data["benchmark"]),
        space=_plugin_spec("space", data.get("space"), DEFAULT_SPACE),
        optimizer=_plugin_spec("optimizer", data.get("optimizer"), DEFAULT_OPTIMIZER),
        **{k: data[k] for k in _SCALARS if k in data},
    )
    if config.carrier is not None and config.carrier not in names:
        raise ConfigError(f"carrier {config.carrier!r} is not one of the sources", f"choose one of {', '.join(names)}")
    if config.budget < 1:
        raise ConfigError("budget must be at least 1", "give the number of candidate evaluations")
    for key in ("seed", "max_consecutive_failures", "search_limit", "test_limit"):
        value, least = getattr(config, key), 0 if key == "seed" else 1
        if value is not None and value < least:
            raise ConfigError(f"{key} is {value}, below {least}", f"give {key} as an integer >= {least}")
    if config.seed >= 2**32:
        raise ConfigError(f"seed {config.seed} is too large", "give a seed below 2**32")
    check_device(config.device)
    if config.workers < 1:
        raise ConfigError("workers must be at least 1", "give the number of evaluation workers (1: in-process)")
    from evosuite.fitness import parse_fitness

    parse_fitness(config.fitness)
    return config


def check_device(device: str, *, cpu_fix: str = "use device: cpu") -> str:
    """A device torch knows and this machine has, found now, not after the models load; returns its type."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device {device!r} is not a torch device", "use cpu, cuda or cuda:N") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} is set but this machine has no CUDA GPU", cpu_fix)
    return kind
