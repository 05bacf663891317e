"""Checks a plugin author runs in their own tests: are my registrations sound, does my benchmark score?

Both helpers collect every problem they find and raise one ``AssertionError`` listing them all, so a
failing test says everything that is wrong at once; on success they return what they saw.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from evosuite import hookspecs
from evosuite.api import (
    Benchmark,
    BenchmarkResult,
    Experiment,
    LoadedModel,
    MergeMethod,
    MergeSpace,
    ModelAdapter,
    Optimizer,
)

#: Registry kind -> (base class, registered as a class (True) or as an instance (False), methods to override).
CONTRACTS: dict[str, tuple[type, bool, tuple[str, ...]]] = {
    "models": (ModelAdapter, False, ("detect", "load")),
    "methods": (MergeMethod, False, ("merge",)),
    "spaces": (MergeSpace, True, ("dimension", "candidate", "recipe")),
    "benchmarks": (Benchmark, True, ("items", "predict", "score")),
    "optimizers": (Optimizer, True, ("popsize", "ask", "tell")),
    "experiments": (Experiment, False, ("config",)),
}



@dataclass
class PluginReport:
    """What ``check_plugin_registrations`` found in a sound plugin."""

    name: str
    #: The evosuite hooks the plugin implements, e.g. ``["register_benchmarks"]``.
    hooks: list[str]
    #: Registry kind -> names registered, e.g. ``{"benchmarks": ["unit-conversion"]}``.
    registers: dict[str, list[str]] = field(default_factory=dict)
    #: The plugin's ``EVOSUITE_HOOKS`` declaration, if any.
    hooks_api: str | None = None


def _fail(subject: str, problems: Sequence[str]) -> None:
    if problems:
        lines = "\n".join(f"- {p}" for p in problems)
        raise AssertionError(f"{subject}: {len(problems)} problem(s)\n{lines}")


@contextmanager
def _only_builtin_entry_points() -> Iterator[None]:
    """Load no third-party plugin while building the reference host (it may be the plugin under test)."""
    saved = os.environ.get("EVOSUITE_LOAD_PLUGINS")
    os.environ["EVOSUITE_LOAD_PLUGINS"] = ""
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("EVOSUITE_LOAD_PLUGINS", None)
        else:
            os.environ["EVOSUITE_LOAD_PLUGINS"] = saved


def _hook_api_problems(declared: Any) -> list[str]:
    if declared is None:
        return []
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    if not isinstance(declared, str):
        return [f"EVOSUITE_HOOKS must be a version specifier string such as '>=1,<2', not {declared!r}"]
    try:
        supported = SpecifierSet(declared)
    except InvalidSpecifier:
        return [f"EVOSUITE_HOOKS = {declared!r} is not a valid version specifier (write e.g. '>=1,<2')"]
    if str(hookspecs.HOOKS_VERSION) not in supported:
        return [f"EVOSUITE_HOOKS = {declared!r} excludes this evosuite's hook API version {hookspecs.HOOKS_VERSION}"]
    return []


def _object_problems(kind: str, obj: Any) -> list[str]:
    base, as_class, required = CONTRACTS[kind]
    label = f"{kind[:-1] if kind != 'models' else 'model adapter'} {getattr(obj, 'name', obj)!r}"
    if as_class:
        if not (isinstance(obj, type) and issubclass(obj, base)):
            return [f"{label} must be registered as a subclass of evosuite.api.{base.__name__} "
                    f"(the class itself), got {obj!r}"]
        cls = obj
    else:
        if isinstance(obj, type):
            return [f"{label} must be registered as an instance of evosuite.api.{base.__name__}, got the class "
                    f"{obj.__name__}: call register({obj.__name__}())"]
        if not isinstance(obj, base):
            return [f"{label} must be an instance of evosuite.api.{base.__name__}, got {type(obj).__name__}"]
        cls = type(obj)
    problems = []
    name = getattr(obj, "name", "")
    if not isinstance(name, str) or not name or name != name.strip() or any(ch.isspace() for ch in name):
        problems.append(f"{label} needs a non-empty `name` without spaces (it is typed on the command line)")
    description = getattr(obj, "description", "")
    if not isinstance(description, str) or not description.strip():
        problems.append(f"{label} needs a one-line `description` (shown by `evosuite plugins` and --help)")
    missing = [m for m in required if getattr(cls, m, None) is getattr(base, m, None)]
    if missing:
        problems.append(f"{label} does not implement {', '.join(missing)} "
                        f"(required by evosuite.api.{base.__name__})")
    options = getattr(obj, "options", {})
    if not isinstance(options, Mapping):
        problems.append(f"{label}: `options` must be a mapping of option name -> default")
    if kind == "benchmarks":
        problems += _benchmark_attribute_problems(cls, label)
    if kind == "methods":
        for attr in ("global_parameters", "model_parameters"):
            if not isinstance(getattr(obj, attr, {}), Mapping):
                problems.append(f"{label}: `{attr}` must be a mapping of parameter -> default")
        unknown = sorted(set(getattr(obj, "search_parameters", ())) - set(getattr(obj, "model_parameters", {})))
        if unknown:
            problems.append(f"{label}: search_parameters {unknown} are not among its model_parameters")
    return problems


def _benchmark_attribute_problems(cls: type, label: str) -> list[str]:
    problems = []
    if not isinstance(cls.metric, str) or not cls.metric:
        problems.append(f"{label} needs a `metric`: the name of the metric its score is")
    if not isinstance(cls.modality, str) or not cls.modality:
        problems.append(f"{label}: modality {cls.modality!r} must be a non-empty string (e.g. text, image-text)")
    splits = cls.splits
    if isinstance(splits, str) or not splits or not all(isinstance(s, str) for s in splits):
        problems.append(f"{label}: `splits` must be a non-empty tuple of split names, got {splits!r}")
    else:
        for attr in ("search_split", "test_split"):
            if getattr(cls, attr) not in splits:
                problems.append(f"{label}: {attr} {getattr(cls, attr)!r} is not one of its splits {tuple(splits)}")
        unknown = [s for s in getattr(cls, "split_sources", None) or {} if s not in splits]
        if unknown:
            problems.append(f"{label}: split_sources names {unknown[0]!r}, which is not one of its splits "
                            f"{tuple(splits)}")
    return problems


def check_plugin_registrations(plugin: Any, *, name: str | None = None,
                               expect: Mapping[str, Sequence[str]] | None = None) -> PluginReport:
    """Check a plugin module or object the way evosuite will load it, and return what it registers.

    The plugin is registered on a private host beside evosuite's built-in plugins (no other third-party
    plugin is loaded, and the process-wide host is left alone). Checked: the declared ``EVOSUITE_HOOKS``
    range includes this evosuite's hook API; every ``@hookimpl`` is an evosuite hook with the right
    arguments, and no ``register_*`` function lacks the decorator; each hook runs; everything registered
    has a name (unique, also against the built-ins), a description, the right base class (a class or an
    instance, as the hook asks) and overrides the methods that base class leaves unimplemented; a
    benchmark has a metric, a known modality and its search and test splits among its splits.
    ``expect``, e.g. ``{"benchmarks": ["unit-conversion"]}``, must then be exactly what it registers.
    """
    import pluggy

    from evosuite.plugin_manager import KINDS, Host

    plugin_name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    subject = f"evosuite plugin {plugin_name!r}"
    declared = getattr(plugin, "EVOSUITE_HOOKS", None)
    problems = _hook_api_problems(declared)

    host = Host()
    with _only_builtin_entry_points():
        host.load_entry_points()
    existing = host.pm.get_name(plugin) if host.pm.is_registered(plugin) else None
    if existing is not None:  # a built-in plugin, already loaded by its entry point
        plugin_name = existing
    else:
        try:
            host.add_plugin(plugin, plugin_name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            _fail(subject, [*problems, f"cannot be registered: {exc}"])
    try:
        host.pm.check_pending()
    except pluggy.PluginValidationError as exc:
        problems.append(f"implements a hook evosuite does not have: {exc}")

    hooks = host.hooks_of(plugin_name)
    spec_names = {hook for hook, _ in KINDS.values()} | {"register_commands"}
    for attr in sorted(set(dir(plugin)) & spec_names):
        if attr not in hooks and callable(getattr(plugin, attr, None)):
            problems.append(f"{attr} is not decorated with @evosuite.hookimpl, so evosuite never calls it")
    if not hooks:
        problems.append("implements no evosuite hook (decorate functions such as register_benchmarks "
                        "with @evosuite.hookimpl)")

    registers: dict[str, list[str]] = {}
    for kind, (hook_name, _label) in KINDS.items():
        if hook_name not in hooks:
            continue
        warnings_before = len(host.warnings)
        try:
            registry = host.registry(kind)
        except Exception as exc:  # noqa: BLE001 - a clash or a nameless object: report, go on
            problems.append(f"{hook_name}: {exc}")
            continue
        problems += [w for w in host.warnings[warnings_before:] if f"plugin {plugin_name!r}" in w]
        objects = [obj for obj_name, obj in registry if registry.plugin_of(obj_name) == plugin_name]
        registers[kind] = sorted(obj.name for obj in objects)
        for obj in objects:
            problems += _object_problems(kind, obj)
    if expect is not None:
        wanted = {kind: sorted(names) for kind, names in expect.items() if names}
        got = {kind: names for kind, names in registers.items() if names}
        if wanted != got:
            problems.append(f"registers {got}, expected {wanted}")
    _fail(subject, problems)
    return PluginReport(plugin_name, hooks, registers, declared)


def _as_benchmark(benchmark: Any, options: Mapping[str, Any] | None) -> Benchmark:
    if isinstance(benchmark, Benchmark):
        if options:
            raise TypeError("options are for a benchmark class or name; this benchmark is already built")
        return benchmark
    if isinstance(benchmark, str):
        from evosuite.plugin_manager import get

        benchmark = get("benchmarks", benchmark)
    return benchmark(**dict(options or {}))


def _as_model(model: Any) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, Path)):
        from evosuite.models import load_model

        return load_model(str(model))
    raise TypeError(f"model must be a LoadedModel or a model path, got {type(model).__name__}")


def check_benchmark(benchmark: Any, model: Any, *, split: str | None = None, limit: int | None = 4,
                    options: Mapping[str, Any] | None = None, seed: int = 0, repeat: bool = True,
                    expected_score: float | None = None, tolerance: float = 1e-6) -> BenchmarkResult:
    """Run a benchmark end to end on a model and check every step's contract; return the result.

    ``benchmark``: a ``Benchmark`` subclass (built with ``options``), an instance, or a registered name.
    ``model``: a ``LoadedModel`` or a model directory / hub id (loaded with ``evosuite.models.load_model``),
    e.g. the ``evosuite_tiny_llm`` fixture. Checked: ``items`` returns at most ``limit`` dicts with unique
    ``id``\\ s, the same ones again for the same ``seed``; ``predict`` returns one string per item;
    ``score`` returns a ``BenchmarkResult`` for this benchmark and split whose score is a number in
    [0, 1] equal to ``metrics[metric]``; with ``repeat``, predicting and scoring again gives the same
    score (generation is greedy); with ``expected_score``, the score is that (within ``tolerance``).
    """
    bench = _as_benchmark(benchmark, options)
    subject = f"benchmark {bench.name!r}"
    split = split or bench.test_split
    if split not in bench.splits:
        _fail(subject, [f"split {split!r} is not one of its splits {tuple(bench.splits)}"])
    loaded = _as_model(model)
    if not loaded.supports(bench.modality):
        raise ValueError(f"{subject} needs an {bench.modality} model; {loaded.name_or_path} is a "
                         f"{loaded.modality} model (use a model of that kind, e.g. evosuite_tiny_vlm for images)")

    problems: list[str] = []
    items = bench.items(split, limit=limit)
    if not isinstance(items, list) or not items:
        _fail(subject, [f"items({split!r}, limit={limit}) must return a non-empty list, got {items!r:.80}"])
    if limit is not None and len(items) > limit:
        problems.append(f"items({split!r}, limit={limit}) returned {len(items)} items")
    if not all(isinstance(item, Mapping) and "id" in item for item in items):
        _fail(subject, [*problems, "every item must be a dict with an 'id'"])
    ids = [item["id"] for item in items]
    if len(set(map(repr, ids))) != len(ids):
        problems.append(f"item ids are not unique: {ids}")
    first = [item["id"] for item in bench.items(split, limit=limit, seed=seed)]
    again = [item["id"] for item in bench.items(split, limit=limit, seed=seed)]
    if first != again:
        problems.append(f"items(..., seed={seed}) is not deterministic: {first} then {again}")

    calls: list[tuple[int, int]] = []
    predictions = list(bench.predict(loaded, items, progress=lambda done, total: calls.append((done, total))))
    if len(predictions) != len(items):
        problems.append(f"predict returned {len(predictions)} predictions for {len(items)} items")
    if not all(isinstance(p, str) for p in predictions):
        problems.append(f"predict must return strings, got {sorted({type(p).__name__ for p in predictions})}")
    if any(done > total for done, total in calls):
        problems.append(f"predict reported progress past its total: {calls[-1]}")
    _fail(subject, problems)

    result = bench.score(items, predictions, split=split)
    if not isinstance(result, BenchmarkResult):
        _fail(subject, [f"score must return an evosuite.api.BenchmarkResult, got {type(result).__name__}"])
    if result.benchmark != bench.name:
        problems.append(f"result.benchmark is {result.benchmark!r}, not the benchmark's name {bench.name!r}")
    if result.split != split:
        problems.append(f"result.split is {result.split!r} for split {split!r}")
    score = result.score
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) \
            or not 0.0 <= score <= 1.0:
        problems.append(f"score must be a finite number in [0, 1], got {score!r}")
    elif bench.metric not in result.metrics:
        problems.append(f"metrics {sorted(result.metrics)} lack the headline metric {bench.metric!r}")
    elif not math.isclose(result.metrics[bench.metric], score, rel_tol=1e-9, abs_tol=1e-12):
        problems.append(f"metrics[{bench.metric!r}] = {result.metrics[bench.metric]!r} differs from score {score!r}")
    if result.items and len(result.items) != len(items):
        problems.append(f"result.items has {len(result.items)} records for {len(items)} items")
    _fail(subject, problems)

    if repeat:
        second = bench.score(items, list(bench.predict(loaded, items)), split=split).score
        if second != score:
            problems.append(f"scoring the same model twice gave {score!r} then {second!r} (is generation greedy?)")
    if expected_score is not None and abs(score - expected_score) > tolerance:
        problems.append(f"score {score!r} is not the expected {expected_score!r} (tolerance {tolerance})")
    _fail(subject, problems)
    return result
