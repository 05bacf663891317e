"""The run's search pipeline: the ``ps+dfs`` syntax, the plan of stages, each stage's space and scorer.

One place for all of it, used alike by the driver (``evosuite.runner``) and by the Ray workers
(``evosuite.ray_pool``): a worker rebuilds exactly the stage space and scorer the driver would.

``space: {name: "ps+dfs", options: {ps: {...}, dfs: {...}, partners: [...], budgets: {...},
optimizers: {...}}}`` is a pipeline: each stage after the first merges the previous stage's best model
(as the first source, and the carrier) with the ``partners`` sources (default: every source but the
carrier), as the paper's PS-then-DFS did. Without budgets, the run's budget is split evenly over the
stages; ``optimizers: {dfs: {popsize: 128}}`` sets one stage's optimizer options (the paper's DFS ran
population 128 for 100 generations after about 1000 PS trials).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from evosuite.api import MergeSpace, check_options
from evosuite.config import DEFAULT_SPACE, RunConfig
from evosuite.errors import ConfigError
from evosuite.fitness import ItemScorer, parse_fitness
from evosuite.plugin_manager import get_host

#: Joins the stage names of a pipeline: ``ps+dfs``.
SEPARATOR = "+"
#: Keys of a pipeline's options that are not a stage's own.
PIPELINE_KEYS = ("partners", "budgets", "optimizers")


def stage_names(space_name: str) -> list[str]:
    """The merge spaces of a pipeline, in order: ``"ps+dfs"`` -> ``["ps", "dfs"]``."""
    return str(space_name).split(SEPARATOR)


def stage_labels(space_name: str) -> list[str]:
    """Each stage's label (its name in the logs): ``"ps+dfs"`` -> ``["ps", "ps+dfs"]``."""
    names = stage_names(space_name)
    return [SEPARATOR.join(names[:k + 1]) for k in range(len(names))]


def set_stage_option(space: Any, stage: str, key: str, value: Any) -> dict[str, Any]:
    """The ``space`` spec (a name or ``{name, options}``) with option ``key`` of stage ``stage`` set to ``value``:
    the space's own options for a single space, ``options[stage]`` for a pipeline."""
    spec = {"name": space} if isinstance(space, str) else dict(space or {"name": DEFAULT_SPACE})
    names = stage_names(spec["name"])
    if stage not in names:
        raise ConfigError(f"an option is given for stage {stage!r}, but the run's space is {spec['name']!r}",
                          f"name one of its stages ({', '.join(names)}), or choose a space with that stage (--space)")
    options = dict(spec.get("options") or {})
    if len(names) == 1:
        options[key] = value
    else:
        options[stage] = {**(options.get(stage) or {}), key: value}
    spec["options"] = options
    return spec


@dataclass
class Stage:
    """One search of a run: a merge space, its options and its share of the evaluation budget."""

    label: str  # "ps", or "ps+dfs" for the second stage of a pipeline: also the stage's name in the logs
    space_cls: Any
    options: dict[str, Any]
    budget: int
    #: The optimizer's options for this stage: the run's, updated by the pipeline's ``optimizers: {stage: ...}``.
    optimizer_options: dict[str, Any]


class Plan:
    """What a configuration names, resolved (and options checked) before any work."""

    def __init__(self, config: RunConfig):
        host = get_host()
        self.config = config
        self.benchmark_cls = host.registry("benchmarks").get(config.benchmark.name)
        self.optimizer_cls = host.registry("optimizers").get(config.optimizer.name)
        self.benchmark = self.benchmark_cls(**config.benchmark.options)
        self.fitness = parse_fitness(config.fitness)  # cheaper fitness settings (evosuite.fitness)
        check_options("optimizer", config.optimizer.name, config.optimizer.options, self.optimizer_cls.options)
        self.optimizer_cls(2, seed=config.seed, **config.optimizer.options)  # its option checks, before any work
        names = stage_names(config.space.name)
        pipeline = len(names) > 1
        pipeline_options = dict(config.space.options) if pipeline else {}
        self.partners = list(pipeline_options.pop("partners", None) or
                             [s.name for s in config.sources if s.name != config.carrier_name()])
        budgets = pipeline_options.pop("budgets", None) or {}
        if not isinstance(budgets, dict) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                    for v in budgets.values()):
            raise ConfigError(f"budgets {budgets!r} is not a mapping of stage names to evaluation counts",
                              "write e.g. budgets: {ps: 40, dfs: 60}")
        stage_optimizers = pipeline_options.pop("optimizers", None) or {}
        if not isinstance(stage_optimizers, dict) or not all(isinstance(v, dict) for v in stage_optimizers.values()):
            raise ConfigError(f"optimizers {stage_optimizers!r} is not a mapping of stage names to options",
                              "write e.g. optimizers: {dfs: {popsize: 128}}")
        if pipeline:
            self._check_pipeline(names, pipeline_options, budgets, stage_optimizers)
        spaces = host.registry("spaces")
        self.stages: list[Stage] = []
        for k, (name, label) in enumerate(zip(names, stage_labels(config.space.name))):
            cls = spaces.get(name)
            options = dict(pipeline_options.get(name) or {}) if pipeline else dict(config.space.options)
            check_options("merge space", name, options, cls.options)
            cls.validate_options({**cls.options, **options})  # the space's own checks that need no model
            share = config.budget // len(names) + (config.budget % len(names) if k == len(names) - 1 else 0)
            optimizer_options = {**config.optimizer.options, **(stage_optimizers.get(name) or {})}
            self.optimizer_cls(2, seed=config.seed, **optimizer_options)  # this stage's options, checked now
            self.stages.append(Stage(label, cls, options, int(budgets.get(name, share)), optimizer_options))
        starved = next((stage for stage in self.stages if stage.budget < 1), None)
        if starved is not None:
            raise ConfigError(f"stage {starved.label!r} gets no evaluations of the budget {config.budget}",
                              f"give a budget of at least {len(self.stages)}, or set budgets per stage")
        if self.stages[0].space_cls.needs_base and not config.base_model:
            raise ConfigError(f"merge space {names[0]!r} needs a base model",
                              "set base_model to the sources' common ancestor")
        # The baselines are the first space's fixed recipes over the run's sources: checked before any work.
        self.stages[0].space_cls.check_baselines(config.baselines, [s.name for s in config.sources],
                                                 bool(config.base_model))

    def _check_pipeline(self, names: list[str], stage_options: Mapping[str, Any], budgets: Mapping[str, Any],
                        stage_optimizers: Mapping[str, Any]) -> None:
        config = self.config
        unknown = sorted(set(stage_options) - set(names))
        if unknown:
            raise ConfigError(f"unknown key {unknown[0]!r} in the options of space {config.space.name!r}",
                              f"give options per stage ({', '.join(names)}), {', '.join(PIPELINE_KEYS)}")
        for key, per_stage in (("budgets", budgets), ("optimizers", stage_optimizers)):
            stray = sorted(set(per_stage) - set(names))
            if stray:
                raise ConfigError(f"{key} names {stray[0]!r}, which is not a stage of {config.space.name!r}",
                                  f"name stages: {', '.join(names)}")
        missing = [p for p in self.partners if p not in {s.name for s in config.sources}]
        if missing:
            raise ConfigError(f"partner {missing[0]!r} is not one of the sources", "name sources as partners")

    def search_items(self) -> list[dict[str, Any]]:
        benchmark = self.benchmark
        return benchmark.items(benchmark.search_split, limit=self.config.search_limit, seed=self.config.seed)


def stage_space(plan: Plan, k: int, models: Mapping[str, Any], base, carrier, previous=None):
    """The merge space of stage ``k``; ``previous`` is ``(space, best genome)`` of stage ``k - 1``."""
    stage, config = plan.stages[k], plan.config
    stage_sources, stage_carrier = dict(models), carrier
    if previous is not None:  # the previous best (as source A and carrier) with the partners
        previous_space, previous_genome = previous
        # A copy: the previous space's candidate buffer is rewritten when the final table scores it.
        stage_carrier = previous_space.candidate(previous_genome).clone()
        stage_sources = {plan.stages[k - 1].label: stage_carrier, **{p: models[p] for p in plan.partners}}
    return stage.space_cls(list(stage_sources.values()), list(stage_sources), base, stage_carrier,
                           seed=config.seed, **stage.options)


def replay_stage_space(plan: Plan, k: int, models: Mapping[str, Any], base,
                       previous_genomes: Sequence[Sequence[float]]):
    """Stage ``k``'s space rebuilt from the sources and the best genomes of the stages before it (a worker's
    way to reach the stage the driver is searching)."""
    carrier = models[plan.config.carrier_name()]
    previous = None
    for j in range(k + 1):
        space = stage_space(plan, j, models, base, carrier, previous)
        if j < k:
            previous = (space, list(previous_genomes[j]))
    return space


def space_class(name: Any):
    """The registered merge space ``name``, or the base ``MergeSpace`` when no installed plugin registers it
    (its defaults: the recipe as YAML, no figure, the name as card tag), so an old run's report still renders."""
    spaces = get_host().registry("spaces")
    return spaces.get(name) if isinstance(name, str) and name in spaces else MergeSpace


def stage_scorer(plan: Plan, space, items: Sequence[Any]) -> ItemScorer:
    """The one way to score a stage's genomes, in this process or on a worker."""
    return ItemScorer(space.candidate, plan.benchmark, items, plan.fitness, plan.config.seed)
