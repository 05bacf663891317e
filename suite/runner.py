"""One evolution run from a configuration to a summary: plugins resolved, models loaded, the evolver run,
the held-out table scored and the best merge exported, all recorded in the run store.

Everything model- or task-specific happens behind the plugin objects; this module only wires them.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evosuite import __version__
from evosuite.api import check_options
from evosuite.baselines import baseline_summary, bound_check, bound_summary, warm_start_from_baselines
from evosuite.config import RunConfig, parse_config
from evosuite.errors import ConfigError, DataError, EvosuiteError
from evosuite.evolver import Evolver
from evosuite.fitness import parse_fitness
from evosuite.models import check_mergeable, config_differences, load_model
from evosuite.plugin_manager import get_host
from evosuite.run_store import RunStore
from evosuite.tui import Reporter
from evosuite.vocab_alignment import align_to_carrier

MERGED = "merged"


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
    """What a configuration names, resolved (and options checked) before any work.

    ``space: {name: "ps+dfs", options: {ps: {...}, dfs: {...}, partners: [...], budgets: {...},
    optimizers: {...}}}`` is a pipeline: each stage after the first merges the previous stage's best model
    (as the first source, and the carrier) with the ``partners`` sources (default: every source but the
    carrier), as the paper's PS-then-DFS did. Without budgets, the run's budget is split evenly over the
    stages; ``optimizers: {dfs: {popsize: 128}}`` sets one stage's optimizer options (the paper's DFS ran
    population 128 for 100 generations after about 1000 PS trials).
    """

    def __init__(self, config: RunConfig):
        host = get_host()
        self.config = config
        self.benchmark_cls = host.registry("benchmarks").get(config.benchmark.name)
        self.optimizer_cls = host.registry("optimizers").get(config.optimizer.name)
        self.benchmark = self.benchmark_cls(**config.benchmark.options)
        self.fitness = parse_fitness(config.fitness)  # cheaper fitness settings (evosuite.fitness)
        check_options("optimizer", config.optimizer.name, config.optimizer.options, self.optimizer_cls.options)
        self.optimizer_cls(2, seed=config.seed, **config.optimizer.options)  # its option checks, before any work
        names = config.space.name.split("+")
        spaces = host.registry("spaces")
        pipeline_options = dict(config.space.options) if len(names) > 1 else {}
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
        if len(names) > 1:
            unknown = sorted(set(pipeline_options) - set(names))
            if unknown:
                raise ConfigError(f"unknown key {unknown[0]!r} in the options of space {config.space.name!r}",
                                  f"give options per stage ({', '.join(names)}), partners, budgets or optimizers")
            for key, per_stage in (("budgets", budgets), ("optimizers", stage_optimizers)):
                stray = sorted(set(per_stage) - set(names))
                if stray:
                    raise ConfigError(f"{key} names {stray[0]!r}, which is not a stage of {config.space.name!r}",
                                      f"name stages: {', '.join(names)}")
            missing = [p for p in self.partners if p not in {s.name for s in config.sources}]
            if missing:
                raise ConfigError(f"partner {missing[0]!r} is not one of the sources", "name sources as partners")
        self.stages: list[Stage] = []
        for k, name in enumerate(names):
            cls = spaces.get(name)
            options = dict(pipeline_options.get(name) or {}) if len(names) > 1 else dict(config.space.options)
            check_options("merge space", name, options, cls.options)
            if hasattr(cls, "validate_options"):  # a space's own checks that need no model
                cls.validate_options({**cls.options, **options})
            share = config.budget // len(names) + (config.budget % len(names) if k == len(names) - 1 else 0)
            optimizer_options = {**config.optimizer.options, **(stage_optimizers.get(name) or {})}
            self.optimizer_cls(2, seed=config.seed, **optimizer_options)  # this stage's options, checked now
            self.stages.append(Stage("+".join(names[:k + 1]), cls, options, int(budgets.get(name, share)),
                                     optimizer_options))
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


def _load_models(config: RunConfig, reporter: Reporter, notes: list[str] | None = None):
    """The sources and base, checked and given the carrier's vocabulary; what loading found (image modes,
    carrier, vocabulary alignment, config differences) is reported and appended to ``notes`` for the summary."""
    kwargs = dict(dtype=config.dtype, device=config.device, trust_remote_code=config.trust_remote_code,
                  allow_pickle=config.allow_pickle)
    models, lines = {}, []
    for spec in config.sources:
        reporter.message(f"loading {spec.name}: {spec.model}")
        models[spec.name] = load_model(spec.model, adapter=spec.adapter, options=spec.options, **kwargs)
        if models[spec.name].describe():  # e.g. a VLM's image mode and image tokens per image
            lines.append(f"{spec.name}: {models[spec.name].describe()}")
    base = None
    if config.base_model:
        reporter.message(f"loading base model: {config.base_model}")
        base = load_model(config.base_model, **kwargs)
    everything = {**models, **({"base model": base} if base is not None else {})}
    carrier = config.carrier_name()
    if config.carrier is None:
        lines.append(f"carrier: {carrier} (none named, so the last source; the result keeps its tokenizer, "
                     f"config and unmerged parts; set carrier: to choose)")
    check_mergeable(everything, ignore_vocab_rows=True)
    # The result keeps the carrier's tokenizer: every other model is re-indexed to it.
    aligned = align_to_carrier(everything, carrier, base="base model" if base is not None else None)
    lines += [alignment.describe(carrier) for alignment in aligned]
    lines += config_differences(everything, carrier)
    check_mergeable(everything)
    for line in lines:
        reporter.message(line)
    if notes is not None:
        notes.extend(lines)
    return models, base


def run_experiment(config: RunConfig, run_dir: str | Path, reporter: Reporter, *, resume: bool = False,
                   save_model: bool = True) -> dict[str, Any]:
    """Run (or resume) one evolution and return its summary; every result is also in ``run_dir``."""
    plan = Plan(config)
    store = RunStore(run_dir)
    if not resume:
        store.create({**config.to_dict(), "evosuite_version": __version__})
    else:
        store.set_status("running", resumed=True)
    try:
        summary = _execute(plan, store, reporter, save_model=save_model)
    except BaseException as exc:  # every way out leaves status.json true
        _record_exit(store, exc)
        raise
    store.set_status("finished")
    return summary


def _record_exit(store: RunStore, exc: BaseException) -> None:
    from evosuite.errors import Terminated

    resume_command = f"evosuite resume {store.path}"
    if isinstance(exc, Terminated):
        state, details = "terminated", {"error": "stopped by SIGTERM", "fix": resume_command}
    elif isinstance(exc, KeyboardInterrupt):
        state, details = "interrupted", {"fix": resume_command}
    elif isinstance(exc, EvosuiteError):
        state, details = "failed", {"error": str(exc)}
    else:
        state, details = "failed", {"error": f"{type(exc).__name__}: {exc}", "fix": resume_command}
    try:
        store.set_status(state, **details)
    except OSError:  # the disk is full or gone: the original error is what matters
        pass


def _execute(plan: Plan, store: RunStore, reporter: Reporter, *, save_model: bool) -> dict[str, Any]:
    config, benchmark = plan.config, plan.benchmark
    # The data first: a missing or empty data set fails before minutes of model loading.
    search_items = benchmark.items(benchmark.search_split, limit=config.search_limit, seed=config.seed)
    test_items = benchmark.items(benchmark.test_split, limit=config.test_limit, seed=config.seed)
    if not search_items or not test_items:
        raise DataError(f"benchmark {benchmark.name!r} has no items to score",
                        "check its data (--data-dir, the benchmark's options) and search_limit / test_limit")
    if benchmark.contaminated:
        reporter.message(f"contaminated: {benchmark.name} searches on its held-out split ({benchmark.test_split}), "
                         "so the held-out table scores items the search saw")
    reporter.stage("loading models")
    load_notes: list[str] = []
    models, base = _load_models(config, reporter, load_notes)
    carrier = models[config.carrier_name()]
    if not carrier.supports(benchmark.modality):
        raise ConfigError(f"benchmark {benchmark.name!r} takes {benchmark.modality} models but the carrier "
                          f"{config.carrier_name()!r} is {carrier.modality}",
                          "set carrier to a source of the benchmark's kind (for images: the VLM source)")

    results: dict[str, tuple[Any, Any]] = {}  # stage label -> (space, best evaluation)
    evaluations = 0
    pool = _make_pool(config, reporter)  # --- parallel evaluation (evosuite.parallel): None in-process
    parallel_stats: dict[str, Any] = {}
    try:
        for k, stage in enumerate(plan.stages):
            previous = None
            if results:  # a later stage: the previous best (as source A and carrier) with the partners
                previous_space, previous_best = results[list(results)[-1]]
                previous = (previous_space, previous_best.genome)
            space = stage_space(plan, k, models, base, carrier, previous)
            if pool is not None:
                pool.set_stage(k, [b.genome for _, b in results.values()])
            best, count, stats = _search(stage, space, benchmark, search_items, store, reporter, plan, pool,
                                         warm=k == 0)
            stats.update(bound_check(stage.label, space, best.genome, reporter))
            results[stage.label] = (space, best)
            evaluations += count
            parallel_stats[stage.label] = stats
    finally:
        if pool is not None:
            pool.close()
    final_label = list(results)[-1]
    final_space, final_best = results[final_label]
    store.write_yaml("best_recipe.yaml", {
        **_mergekit_form(final_space, final_best.genome),
        "fitness": final_best.fitness, "genome": final_best.genome, "recipe": final_space.recipe(final_best.genome),
        "stages": {label: {"genome": b.genome, "fitness": b.fitness, "recipe": s.recipe(b.genome)}
                   for label, (s, b) in results.items()},
    })

    # The held-out table: each source as it is (in the carrier, so a text LM sees through the VLM's vision
    # tower on an image task), the first space's references, and each stage's best merge.
    reporter.stage(f"held-out table on {benchmark.name}/{benchmark.test_split}")
    builders = {name: _source_in_carrier(carrier, model) for name, model in models.items()}
    baselines = results[plan.stages[0].label][0].references(config.baselines)
    builders.update(baselines)
    genomes: dict[str, list[float]] = {}
    for label, (space, best) in results.items():
        key = MERGED if len(results) == 1 else label
        builders[key] = (lambda s=space, b=best: s.candidate(b.genome))
        genomes[key] = best.genome
    finals = store.finals()
    for name, build in builders.items():
        # A row is reused only if it scored this very model: a resume that searched on (a larger budget)
        # scores its new best again instead of reporting the old one.
        if name in finals and finals[name].get("genome") == genomes.get(name):
            continue
        reporter.message(f"scoring {name} on the test split")
        start = time.perf_counter()
        result = benchmark.evaluate(build(), benchmark.test_split, items=test_items,
                                    progress=reporter.item_progress)
        record = {"name": name, "score": result.score, "metrics": result.metrics,
                  "seconds": time.perf_counter() - start, "genome": genomes.get(name)}
        store.log_final(record)
        finals[name] = record
    test_scores = {name: finals[name]["score"] for name in builders}
    test_metrics = {name: finals[name]["metrics"] for name in builders}
    if len(results) > 1:
        test_scores[MERGED], test_metrics[MERGED] = test_scores[final_label], test_metrics[final_label]

    summary = {
        "benchmark": benchmark.name,
        "metric": benchmark.metric,
        "split": benchmark.test_split,
        "search_split": benchmark.search_split,
        "contaminated": benchmark.contaminated,  # True: the search saw the held-out items
        "test_scores": test_scores,
        "test_metrics": test_metrics,
        "search_fitness": final_best.fitness,
        "best_genome": final_best.genome,
        "recipe": final_space.recipe(final_best.genome),
        "stages": {label: {"best_genome": b.genome, "search_fitness": b.fitness, "recipe": s.recipe(b.genome)}
                   for label, (s, b) in results.items()},
        "evaluations": evaluations,
        "seed": config.seed,
        "sources": [s.name for s in config.sources],
        "workers": config.workers,
        "evaluation": parallel_stats,  # per stage: worker utilization, items scored (cheaper fitness)
        "loading": load_notes,  # carrier choice, vocabulary alignment, config differences: one line each
        **baseline_summary(list(baselines), test_scores, MERGED),
        **bound_summary(parallel_stats[final_label]),
    }
    if save_model:
        reporter.message("saving the merged model")
        _save_atomically(final_space, final_best.genome, store.path / "model", summary, config)
        summary["model_dir"] = str(store.path / "model")
    store.write_json("summary.json", summary)
    kinds = {**{n: "source" for n in models}, **{n: "reference" for n in baselines}}
    rows = [{"name": name, "score": score, "detail": _detail(test_metrics[name]), "kind": kinds.get(name, "merge")}
            for name, score in test_scores.items() if not (name == MERGED and len(results) > 1)]
    reporter.final_table(f"{benchmark.name} ({benchmark.test_split}, {benchmark.metric})", rows, str(store.path))
    return summary


def _search(stage: Stage, space, benchmark, search_items, store: RunStore, reporter: Reporter, plan: Plan,
            pool=None, warm: bool = False):
    from evosuite.fitness import ItemScorer, Schedule

    config = plan.config
    fitness = ItemScorer(space.candidate, benchmark, search_items, plan.fitness, config.seed)
    schedule = Schedule(plan.fitness, len(search_items)) if plan.fitness.active else None

    def make_optimizer(x0=None):
        return plan.optimizer_cls(space.dimension, seed=config.seed, x0=x0 or space.initial_genome(),
                                  **stage.optimizer_options)

    reporter.stage(f"{stage.label} search on {benchmark.name}/{benchmark.search_split} "
                   f"({len(search_items)} items, {space.dimension} genes)")
    warm_start = None  # the first stage starts at the best baseline (evosuite.baselines)
    if warm and config.warm_start:
        warm_start = warm_start_from_baselines(space, config.baselines, reporter, make_optimizer)
    evolver = Evolver(stage=stage.label, optimizer=None if warm_start else make_optimizer(), evaluate=fitness,
                      store=store, budget=stage.budget, events=reporter,
                      max_consecutive_failures=config.max_consecutive_failures, pool=pool, schedule=schedule,
                      warm_start=warm_start)
    best = evolver.run()
    stats: dict[str, Any] = {"workers": pool.workers if pool is not None else 1}
    if evolver.start is not None:
        start = evolver.start
        stats["warm_start"] = {"baseline": start.extra.get("baseline"), "genome": start.genome,
                               "search_fitness": start.fitness}
    if pool is not None:
        stats.update(pool.utilization().to_dict())
        reporter.message(f"{stage.label}: {stats['workers']} workers, utilization "
                         f"{(stats['utilization'] or 0) * 100:.1f}% over {stats['wall_seconds']:.1f} s")
    if schedule is not None:
        stats.update(schedule.stats())
        reporter.message(f"{stage.label}: scored {stats['items_scored']} of {stats['items_full_evaluation']} "
                         f"items a full evaluation would ({(stats['fraction'] or 0) * 100:.1f}%)")
    return best, len(evolver.history), stats


# --- shared by the in-process run and the workers of evosuite.ray_pool ----------------------------------
def stage_space(plan: Plan, k: int, models: dict[str, Any], base, carrier, previous=None):
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


class _Quiet:
    def message(self, text: str) -> None: ...


def search_setup(config_data: dict[str, Any], k: int, previous_genomes, loaded=None):
    """What a worker needs to score stage ``k``'s genomes: ``(plan, space, search_items, loaded)``.

    ``previous_genomes`` are the best genomes of the stages before ``k``; ``loaded`` (``(models, base)``
    from an earlier call) avoids loading the sources again.
    """
    plan = Plan(parse_config(config_data))
    config = plan.config
    models, base = loaded if loaded is not None else _load_models(config, _Quiet())
    carrier = models[config.carrier_name()]
    previous = None
    for j in range(k + 1):
        space = stage_space(plan, j, models, base, carrier, previous)
        if j < k:
            previous = (space, previous_genomes[j])
    benchmark = plan.benchmark
    items = benchmark.items(benchmark.search_split, limit=config.search_limit, seed=config.seed)
    return plan, space, items, (models, base)


def _make_pool(config: RunConfig, reporter: Reporter):
    if config.workers <= 1 and not config.ray_address:
        return None
    from evosuite.parallel import InProcessEvaluator, make_evaluator

    pool = make_evaluator(workers=config.workers, config=config.to_dict(), stage=0, previous=[],
                          evaluate=None, address=config.ray_address, message=reporter.message)
    if isinstance(pool, InProcessEvaluator):
        return None
    reporter.message(f"evaluating on {pool.workers} Ray workers ({pool.describe()})")
    return pool
# --- end of the shared part ------------------------------------------------------------------------------


def _detail(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v))


def _source_in_carrier(carrier, model):
    """A source as it is, inside the carrier: a text LM facing an image task sees through its vision tower."""
    if model is carrier:
        return lambda: carrier

    def build():
        shell = carrier.clone()
        target = shell.mergeable_parameters()
        for name, tensor in model.mergeable_parameters().items():
            target[name].copy_(tensor)
        return shell

    return build


def _mergekit_form(space, genome) -> dict[str, Any]:
    """The best merge as mergekit-style keys (``evosuite merge best_recipe.yaml`` rebuilds the exported model
    from them), or ``no_mergekit_recipe``: why the space's merges have no such form."""
    form = getattr(space, "mergekit_recipe", None)
    if form is None:
        return {"no_mergekit_recipe": f"the {space.name} space's merges are not a mergekit recipe"}
    recipe, why = form(genome)
    return recipe if recipe is not None else {"no_mergekit_recipe": why}


def _save_atomically(space, genome, out_dir: Path, summary: dict[str, Any], config: RunConfig) -> None:
    """Export the best merge beside ``out_dir``, then rename it into place."""
    from evosuite.model_card import model_card

    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        space.export(genome, tmp, model_card=model_card(summary, config))
    except BaseException:  # disk full, Ctrl-C, SIGTERM: leave no half-written model behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)


def config_from_store(store: RunStore) -> RunConfig:
    data = store.config()
    if isinstance(data, dict):
        data.setdefault("warm_start", False)  # written before the warm start existed: its log has none to replay
    return parse_config(data)
