"""P6: held-out score reached per evaluation, the default search against the previous default search.

    python perf/search_efficiency.py [--quick] [--plugin llm clip] [--seeds 0 1 2] [--zoo-seeds]
                                     [--budget N] [--checkpoints 8 16 32] [--previous KEY=VALUE ...]
                                     [--current KEY=VALUE ...] [--keep DIR] [--details FILE] [--json FILE]

For each plugin's default experiment (its own config: the zoo is built or reused as ``evosuite run --plugin
P`` would, honouring ``EVOSUITE_ZOO_VARIANT``) and each seed, two searches run side by side with the same
budget and seed:

* ``current``: the experiment's configuration as it is (by default: warm start from the baselines);
* ``previous``: the same with ``--previous`` overrides, by default ``warm_start=false`` and ``baselines=[]``
  (CMA-ES from the space's initial genome, no baselines scored). ``KEY=VALUE`` sets a top-level key of the
  run configuration, ``STAGE.KEY=VALUE`` an option of a stage's merge space (as ``evosuite run -S``); values
  are YAML. ``--current`` takes the same overrides for the other side.

Each run is an ordinary run (``evosuite.runner.run_experiment``, model not saved). From its
``evaluations.jsonl``, at each checkpoint of the evaluation count the best-so-far genome is taken the way the
evolver picks its best (highest search fitness, the first on ties; with cheaper fitness the elite of
``evosuite.fitness.Schedule``, replayed from the log) and scored on the held-out split with the space rebuilt
as the runner builds it; a checkpoint whose best did not change costs nothing (scores are cached per genome,
and the run's own final table scored its last best). The warm start's baselines (generation 0) are
evaluations like any other: they cost the same. ``items`` is the number of search items scored up to the
checkpoint (cheaper fitness and racing change it; a cached genome costs none).

The table shows, per checkpoint, the median [min-max] over seeds of both held-out scores, the items scored and
the paired difference. The verdict figure is the held-out score at the full budget, current minus previous
(median over seeds of the paired differences), target >= 0; also reported: the first checkpoint at which the
current search's median reaches the previous search's final median. ``--seeds`` are the run seeds; with
``--zoo-seeds`` each seed is also the zoo's (``EVOSUITE_ZOO_SEED``, a zoo built per seed). ``--quick`` runs
a toy benchmark on tiny random Llamas (seconds; figures not meaningful).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ("previous", "current")
PREVIOUS_DEFAULT = ["warm_start=false", "baselines=[]"]


# -- the configurations ------------------------------------------------------------------------------------
def apply_overrides(data: dict[str, Any], pairs: Iterable[str]) -> dict[str, Any]:
    """A copy of the run configuration ``data`` with ``KEY=VALUE`` (a top-level key) and ``STAGE.KEY=VALUE``
    (a stage's merge-space option, as ``evosuite run -S``) applied; values are parsed as the CLI parses them."""
    from evosuite.commands.run import parse_value
    from evosuite.config import DEFAULT_SPACE
    from evosuite.errors import ConfigError
    from evosuite.pipeline import set_stage_option

    data = copy.deepcopy(data)
    for pair in pairs:
        target, sep, text = pair.partition("=")
        target = target.strip()
        if not sep or not target:
            raise ConfigError(f"override {pair!r} is not KEY=VALUE or STAGE.KEY=VALUE",
                              "write e.g. warm_start=false or ps.ranges={weight: [0, 1]}")
        stage, dot, key = target.partition(".")
        if dot:
            data["space"] = set_stage_option(data.get("space") or DEFAULT_SPACE, stage, key, parse_value(text))
        else:
            data[target] = parse_value(text)
    return data


# -- the best-so-far genome at each checkpoint ----------------------------------------------------------------
@dataclass
class Checkpoint:
    evaluations: int  # evaluations logged up to here, the warm start's included
    stage: str
    genome: list[float]  # the best-so-far genome of the stage being searched
    search_fitness: float
    items: int  # search items scored up to here
    seconds: float  # search time logged up to here


def checkpoints(records: Sequence[dict[str, Any]], counts: Iterable[int], fitness: Any,
                total_items: int) -> list[Checkpoint]:
    """The best-so-far genome after each of ``counts`` evaluations of the log ``records`` (in log order), as the
    evolver would return it had the run stopped there: per stage, the highest fitness (the first on ties), or
    with active cheaper ``fitness`` settings the schedule's elite when it has one. ``total_items``: the
    search items a full evaluation scores. A count past the log's end is left out."""
    from evosuite.evolver import Evaluation
    from evosuite.fitness import Schedule, parse_fitness

    settings = parse_fitness(fitness)
    wanted = sorted(set(int(c) for c in counts))
    out: list[Checkpoint] = []
    stage, best, schedule, items, seconds = None, None, None, 0, 0.0
    for n, record in enumerate(records, start=1):
        evaluation = Evaluation.from_record(record)
        if evaluation.stage != stage:  # a new stage: a new search, with its own best and schedule
            stage, best = evaluation.stage, None
            schedule = Schedule(settings, total_items) if settings.active else None
        extra = evaluation.extra
        seconds += evaluation.seconds
        if "items" in extra:
            items += 0 if extra.get("cached") else int(extra["items"])
        elif not (evaluation.failed or extra.get("cached")):
            items += total_items
        if not evaluation.failed and (best is None or evaluation.fitness > best.fitness):
            best = evaluation
        if schedule is not None:
            schedule.observe(evaluation)
        chosen = (schedule.best() if schedule is not None else None) or best
        if n in wanted and chosen is not None:
            out.append(Checkpoint(n, stage, list(chosen.genome), chosen.fitness, items, seconds))
    return out


def default_counts(budget: int, parts: int = 8) -> list[int]:
    """Checkpoints at each eighth of the budget."""
    return sorted({max(1, round(budget * k / parts)) for k in range(1, parts + 1)})


# -- the held-out scores --------------------------------------------------------------------------------------
class HeldOutScores:
    """Held-out scores per (stage, genome), each computed once by ``score(stage, genome)``."""

    def __init__(self, score: Callable[[str, Sequence[float]], float]):
        self._score = score
        self._cache: dict[tuple, float] = {}
        self.computed = 0

    @staticmethod
    def _key(stage: str, genome: Sequence[float]) -> tuple:
        return stage, tuple(round(float(x), 12) for x in genome)

    def known(self, stage: str, genome: Sequence[float], score: float) -> None:
        """A score computed elsewhere (the run's own final table)."""
        self._cache.setdefault(self._key(stage, genome), float(score))

    def __call__(self, stage: str, genome: Sequence[float]) -> float:
        key = self._key(stage, genome)
        if key not in self._cache:
            self._cache[key] = float(self._score(stage, genome))
            self.computed += 1
        return self._cache[key]


def run_scorer(run_dir: Path) -> Callable[[str, Sequence[float]], float]:
    """``score(stage, genome)``: a genome of the run in ``run_dir`` scored on the held-out items its final table
    used, in the stage's space rebuilt as the runner builds it (a later stage on the earlier stages' bests)."""
    from evosuite.loading import load_sources
    from evosuite.pipeline import Plan, replay_stage_space
    from evosuite.run_store import RunStore
    from evosuite.runner import config_from_store

    store = RunStore(run_dir)
    config = config_from_store(store)
    plan = Plan(config)
    benchmark = plan.benchmark
    test_items = benchmark.items(benchmark.test_split, limit=config.test_limit, seed=config.seed)
    models, base, _ = load_sources(config)
    stage_bests = store.read_json("summary.json")["stages"]
    labels = [stage.label for stage in plan.stages]
    spaces: dict[str, Any] = {}

    def score(stage: str, genome: Sequence[float]) -> float:
        if stage not in spaces:
            k = labels.index(stage)
            spaces[stage] = replay_stage_space(plan, k, models, base,
                                               [stage_bests[label]["best_genome"] for label in labels[:k]])
        return benchmark.evaluate(spaces[stage].candidate(list(genome)), benchmark.test_split,
                                  items=test_items).score

    return score


def measure_run(run_dir: Path, counts: Iterable[int], scorer: HeldOutScores | None = None) -> dict[str, Any]:
    """Checkpoints of a finished run, each with its held-out score; and what its final table says."""
    from evosuite.pipeline import Plan
    from evosuite.run_store import RunStore
    from evosuite.runner import config_from_store
    from evosuite.summary import MERGED

    store = RunStore(run_dir)
    config = config_from_store(store)
    summary = store.read_json("summary.json")
    total_items = len(Plan(config).search_items())
    scorer = scorer or HeldOutScores(run_scorer(run_dir))
    finals = store.finals()
    for label in summary["stages"]:  # the final table scored each stage's best already
        row = finals.get(MERGED if len(summary["stages"]) == 1 else label)
        if row is not None and row.get("genome") is not None:
            scorer.known(label, row["genome"], row["score"])
    records = store.evaluations()
    rows = []
    for point in checkpoints(records, counts, config.fitness, total_items):
        rows.append({"evaluations": point.evaluations, "stage": point.stage, "items": point.items,
                     "seconds": round(point.seconds, 3), "search_fitness": point.search_fitness, "genome": point.genome,
                     "heldout": scorer(point.stage, point.genome)})
    scores = summary["test_scores"]
    baselines = summary.get("baselines") or []
    last_stage = list(summary["stages"])[-1]
    return {
        "checkpoints": rows, "evaluations": len(records), "items_per_evaluation": total_items,
        "heldout_scored": scorer.computed, "final_heldout": scores[MERGED],
        "final_genome": summary["stages"][last_stage]["best_genome"],
        "best_baseline": max((scores[n] for n in baselines), default=None),
        "best_source": max(scores[n] for n in summary["sources"]),
        "warm_start": any("baseline" in r for r in records),
    }


# -- the runs --------------------------------------------------------------------------------------------------
def run_search(data: dict[str, Any], run_dir: Path) -> None:
    from evosuite.config import parse_config
    from evosuite.runner import run_experiment
    from evosuite.tui import make_reporter

    run_experiment(parse_config(data), run_dir, make_reporter(quiet=True), save_model=False)


def experiment_config(plugin: str, seed: int, zoo_seed: bool, quick_root: Path | None) -> dict[str, Any]:
    """The plugin's default experiment, with ``seed`` (and the zoo's seed too with ``zoo_seed``)."""
    if quick_root is not None:
        return quick_config(quick_root, seed)
    from evosuite.plugin_manager import get_host

    if zoo_seed:
        os.environ["EVOSUITE_ZOO_SEED"] = str(seed)
    say = lambda text: print(text, file=sys.stderr)  # noqa: E731
    data = dict(get_host().registry("experiments").get(plugin).config(progress=say))
    data["seed"] = seed
    return data


def quick_config(root: Path, seed: int) -> dict[str, Any]:
    """Two tiny random Llamas over a tiny base, on the tests' toy benchmark (registered here)."""
    from evosuite.plugin_manager import get_host
    from tests import toy_plugin
    from tests.factories import write_llm

    host = get_host()
    if not host.pm.has_plugin("perf-toy"):
        host.add_plugin(toy_plugin, "perf-toy")
    paths = {}
    for name, model_seed in (("base", 0), ("a", 1), ("b", 2)):
        paths[name] = root / name
        if not paths[name].exists():
            write_llm(paths[name], seed=model_seed)
    return {"sources": [{"name": "a", "model": str(paths["a"])}, {"name": "b", "model": str(paths["b"])}],
            "base_model": str(paths["base"]), "benchmark": "toy-echo", "budget": 8, "seed": seed}


# -- the figure ------------------------------------------------------------------------------------------------
def spread(values: Sequence[float | None], fmt: str = "{:.3f}") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    text = fmt.format(statistics.median(values))
    return text if len(values) == 1 else f"{text} [{fmt.format(min(values))}, {fmt.format(max(values))}]"


def compare(plugin: str, runs: dict[int, dict[str, dict[str, Any]]], budget: int) -> tuple[list[dict], list[dict]]:
    """Table rows and JSON figures of one plugin: ``runs[seed][variant]`` are ``measure_run`` results."""
    seeds = sorted(runs)
    counts = sorted({c["evaluations"] for seed in seeds for v in VARIANTS for c in runs[seed][v]["checkpoints"]})

    def at(seed: int, variant: str, n: int) -> dict[str, Any] | None:
        return next((c for c in runs[seed][variant]["checkpoints"] if c["evaluations"] == n), None)

    rows, medians = [], {}
    for n in counts:
        row = {"evaluations": n}
        for variant in VARIANTS:
            points = [p for p in (at(s, variant, n) for s in seeds) if p is not None]
            row[variant] = [p["heldout"] for p in points]
            row[f"{variant}_items"] = [p["items"] for p in points]
            medians[variant, n] = statistics.median(row[variant]) if row[variant] else None
        pairs = [(at(s, "previous", n), at(s, "current", n)) for s in seeds]
        row["difference"] = [c["heldout"] - p["heldout"] for p, c in pairs if p is not None and c is not None]
        rows.append(row)

    final = {v: [runs[s][v]["checkpoints"][-1]["heldout"] for s in seeds] for v in VARIANTS}
    differences = [c - p for p, c in zip(final["previous"], final["current"])]
    difference = statistics.median(differences)
    target = statistics.median(final["previous"])
    reached = next((n for n in counts if medians["current", n] is not None and medians["current", n] >= target),
                   None)
    reached_items = None
    if reached is not None:
        reached_items = statistics.median(at(s, "current", reached)["items"] for s in seeds
                                          if at(s, "current", reached) is not None)
    matches = all(runs[s][v]["checkpoints"][-1]["genome"] == runs[s][v]["final_genome"]
                  for s in seeds for v in VARIANTS)
    name = f"p6_{plugin}"
    figures = [
        {"name": f"{name}_heldout_at_budget_current_minus_previous", "value": round(difference, 4),
         "target": ">= 0", "met": difference >= 0},
        {"name": f"{name}_evaluations_for_current_to_reach_previous_final", "value": reached,
         "target": f"<= {budget}", "met": reached is not None},
        {"name": f"{name}_items_for_current_to_reach_previous_final", "value": reached_items, "target": None,
         "met": True},
        {"name": f"{name}_last_checkpoint_is_the_run_best", "value": matches, "target": True, "met": matches},
    ]
    for variant in VARIANTS:
        last = [runs[s][variant]["checkpoints"][-1] for s in seeds]
        figures += [{"name": f"{name}_heldout_at_budget_{variant}",
                     "value": round(statistics.median(final[variant]), 4), "target": None, "met": True},
                    {"name": f"{name}_items_scored_{variant}", "value": statistics.median(p["items"] for p in last),
                     "target": None, "met": True},
                    {"name": f"{name}_search_seconds_{variant}", "value": round(statistics.median(
                        p["seconds"] for p in last), 1), "target": None, "met": True}]
        for n in counts:
            if medians[variant, n] is not None:
                figures.append({"name": f"{name}_heldout_{variant}_at_{n}", "value": round(medians[variant, n], 4),
                                "target": None, "met": True})
    return rows, figures


def show(plugin: str, label: str, rows: list[dict], runs: dict, budget: int, figures: list[dict]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    seeds = sorted(runs)
    table = Table(title=escape(f"P6 search efficiency: {plugin} ({label}), budget {budget}, seeds "
                               f"{' '.join(map(str, seeds))}: held-out score, median [min, max] over seeds"))
    for head in ("evaluations", "previous held-out", "previous items", "current held-out", "current items",
                 "current - previous"):
        table.add_column(head, justify="right")
    for row in rows:
        table.add_row(str(row["evaluations"]), spread(row["previous"]), spread(row["previous_items"], "{:.0f}"),
                      spread(row["current"]), spread(row["current_items"], "{:.0f}"),
                      spread(row["difference"], "{:+.3f}"))
    for what in ("best_baseline", "best_source"):
        values = [runs[s]["current"][what] for s in seeds]
        if any(v is not None for v in values):
            table.add_row(what.replace("_", " "), "", "", spread(values), "", "")
    Console(width=140).print(table)
    for figure in figures[:3]:
        print(f"{figure['name']}: {figure['value']} (target {figure['target']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a toy benchmark on tiny random Llamas (seconds)")
    ap.add_argument("--plugin", nargs="+", default=None, help="default experiments to compare (default: llm clip)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="run seeds (default: 0 1 2; quick: 0)")
    ap.add_argument("--zoo-seeds", action="store_true", help="each seed is also the zoo's seed (EVOSUITE_ZOO_SEED)")
    ap.add_argument("--budget", type=int, default=None, help="evaluations per search (default: the experiment's)")
    ap.add_argument("--checkpoints", type=int, nargs="+", default=None,
                    help="evaluation counts to score at (default: each eighth of the budget; the budget always)")
    ap.add_argument("--previous", action="append", default=None, metavar="KEY=VALUE",
                    help="overrides making the previous default search (default: warm_start=false baselines=[]); "
                         "STAGE.KEY=VALUE sets a merge-space option, e.g. 'ps.ranges={weight: [0, 1.5]}'")
    ap.add_argument("--current", action="append", default=[], metavar="KEY=VALUE",
                    help="overrides of the current search (default: none)")
    ap.add_argument("--keep", default=None, help="keep the run directories here (default: a temporary folder)")
    ap.add_argument("--details", default=None, help="write every run's checkpoints (genomes included) here")
    ap.add_argument("--json", default=None, help="write [{name, value, target, met}] here")
    args = ap.parse_args()

    from evosuite.errors import EvosuiteError
    from evosuite.runtime import configure_threads, quiet_library_progress

    configure_threads(None)
    quiet_library_progress()
    plugins = ["toy"] if args.quick else (args.plugin or ["llm", "clip"])
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    previous = args.previous if args.previous is not None else PREVIOUS_DEFAULT
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="evosuite-p6-"))
    quick_root = work / "models" if args.quick else None
    figures, details = [], {}
    try:
        for plugin in plugins:
            runs: dict[int, dict[str, dict[str, Any]]] = {}
            budget, label = None, ""
            for seed in seeds:
                base = experiment_config(plugin, seed, args.zoo_seeds, quick_root)
                if args.budget:
                    base["budget"] = args.budget
                budget = base["budget"]
                counts = sorted({*(args.checkpoints or default_counts(budget)), budget})  # the verdict's row
                runs[seed] = {}
                for variant, pairs in (("previous", previous), ("current", args.current)):
                    run_dir = work / f"{plugin}-s{seed}-{variant}"
                    shutil.rmtree(run_dir, ignore_errors=True)
                    print(f"{plugin} seed {seed}: {variant} search ({budget} evaluations) in {run_dir}",
                          file=sys.stderr)
                    run_search(apply_overrides(base, pairs), run_dir)
                    runs[seed][variant] = measure_run(run_dir, counts)
                summary = json.loads((work / f"{plugin}-s{seed}-current" / "summary.json").read_text())
                label = f"{summary['benchmark']} {summary['split']}, {summary['metric']}"
            rows, plugin_figures = compare(plugin, runs, budget)
            show(plugin, label, rows, runs, budget, plugin_figures)
            figures += plugin_figures
            details[plugin] = {"budget": budget, "previous": previous, "current": args.current,
                               "runs": {str(s): v for s, v in runs.items()}}
    except EvosuiteError as exc:
        sys.exit(f"Error: {exc}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.details:
        Path(args.details).write_text(json.dumps(details, indent=2) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
