"""One evolution run from a configuration to a summary: the plan checked, the models loaded, each stage of
the pipeline searched through one evaluator (in-process or Ray workers), then the end of the run
(``evosuite.summary``), all recorded in the run store.

Everything model- or task-specific happens behind the plugin objects; this module only wires them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evosuite import __version__
from evosuite.baselines import bound_check, warm_start_from_baselines
from evosuite.config import RunConfig, parse_config
from evosuite.errors import ConfigError, DataError, EvosuiteError
from evosuite.evolver import Evolver
from evosuite.fitness import Schedule
from evosuite.loading import load_sources
from evosuite.parallel import Evaluator
from evosuite.pipeline import Plan, Stage, stage_scorer, stage_space
from evosuite.ray_pool import make_evaluator
from evosuite.run_store import RunStore
from evosuite.summary import finish
from evosuite.tui import Reporter


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
    search_items = plan.search_items()
    test_items = benchmark.items(benchmark.test_split, limit=config.test_limit, seed=config.seed)
    if not search_items or not test_items:
        raise DataError(f"benchmark {benchmark.name!r} has no items to score",
                        "check its data (--data-dir, the benchmark's options) and search_limit / test_limit")
    if benchmark.contaminated:
        reporter.message(f"contaminated: {benchmark.name} searches on its held-out split ({benchmark.test_split}), "
                         "so the held-out table scores items the search saw")
    reporter.stage("loading models")
    models, base, load_notes = load_sources(config, reporter.message)
    carrier = models[config.carrier_name()]
    if not carrier.supports(benchmark.modality):
        raise ConfigError(f"benchmark {benchmark.name!r} takes {benchmark.modality} models but the carrier "
                          f"{config.carrier_name()!r} is {carrier.modality}",
                          "set carrier to a source of the benchmark's kind (for images: the VLM source)")

    results: dict[str, tuple[Any, Any]] = {}  # stage label -> (space, best evaluation)
    evaluations = 0
    stats: dict[str, Any] = {}
    evaluator = make_evaluator(workers=config.workers, config=config, address=config.ray_address,
                               message=reporter.message)
    if evaluator.parallel:
        reporter.message(f"evaluating on {evaluator.workers} Ray workers ({evaluator.describe()})")
    try:
        for k, stage in enumerate(plan.stages):
            previous = None
            if results:  # a later stage: the previous best (as source A and carrier) with the partners
                previous_space, previous_best = results[list(results)[-1]]
                previous = (previous_space, previous_best.genome)
            space = stage_space(plan, k, models, base, carrier, previous)
            if note := space.memory_note():
                reporter.message(f"{stage.label}: {note}")
            evaluator.set_stage(k, [b.genome for _, b in results.values()], stage_scorer(plan, space, search_items))
            best, count, stage_stats = _search(stage, space, len(search_items), store, reporter, plan, evaluator,
                                               warm=k == 0)
            stage_stats.update(bound_check(stage.label, space, best.genome, reporter))
            results[stage.label] = (space, best)
            evaluations += count
            stats[stage.label] = stage_stats
    finally:
        evaluator.close()
    return finish(plan, store, reporter, models=models, carrier=carrier, results=results, test_items=test_items,
                  evaluations=evaluations, stats=stats, load_notes=load_notes, save_model=save_model)


def _search(stage: Stage, space, item_count: int, store: RunStore, reporter: Reporter, plan: Plan,
            evaluator: Evaluator, warm: bool = False):
    config, benchmark = plan.config, plan.benchmark
    schedule = Schedule(plan.fitness, item_count) if plan.fitness.active else None

    def make_optimizer(x0=None):
        return plan.optimizer_cls(space.dimension, seed=config.seed, x0=x0 or space.initial_genome(),
                                  **stage.optimizer_options)

    reporter.stage(f"{stage.label} search on {benchmark.name}/{benchmark.search_split} "
                   f"({item_count} items, {space.dimension} genes)")
    warm_start = None  # the first stage starts at the best baseline (evosuite.baselines)
    if warm and config.warm_start:
        warm_start = warm_start_from_baselines(space, config.baselines, reporter, make_optimizer)
    evolver = Evolver(stage=stage.label, optimizer=None if warm_start else make_optimizer(), evaluator=evaluator,
                      store=store, budget=stage.budget, events=reporter,
                      max_consecutive_failures=config.max_consecutive_failures, schedule=schedule,
                      warm_start=warm_start)
    best = evolver.run()
    stats: dict[str, Any] = {"workers": evaluator.workers}
    if evolver.start is not None:
        start = evolver.start
        stats["warm_start"] = {"baseline": start.extra.get("baseline"), "genome": start.genome,
                               "search_fitness": start.fitness}
    if evaluator.parallel:
        stats.update(evaluator.utilization().to_dict())
        reporter.message(f"{stage.label}: {stats['workers']} workers, utilization "
                         f"{(stats['utilization'] or 0) * 100:.1f}% over {stats['wall_seconds']:.1f} s")
    if schedule is not None:
        stats.update(schedule.stats())
        reporter.message(f"{stage.label}: scored {stats['items_scored']} of {stats['items_full_evaluation']} "
                         f"items a full evaluation would ({(stats['fraction'] or 0) * 100:.1f}%)")
    return best, len(evolver.history), stats


def config_from_store(store: RunStore) -> RunConfig:
    data = store.config()
    if isinstance(data, dict):
        data.setdefault("warm_start", False)  # written before the warm start existed: its log has none to replay
    return parse_config(data)
