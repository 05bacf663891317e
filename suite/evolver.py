"""The evolver: an ask/tell loop over an optimizer plugin, logging every evaluation to the run store.

It knows nothing about models or benchmarks: it sees genomes, a function that scores one, and an
optimizer. Resuming replays the logged history: the optimizer is rebuilt from its seed and asked again,
and every genome already logged gets its logged fitness instead of a new evaluation, so a resumed run
ends exactly where an uninterrupted one would. Logged failures are evaluated again (the user may have
fixed their cause), so a run stopped by too many failures can be resumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from evosuite.api import Optimizer, Progress
from evosuite.errors import EvosuiteError
from evosuite.parallel import InProcessEvaluator, Task
from evosuite.run_store import RunStore

#: ``evaluate(genome, progress) -> fitness``; raising or returning NaN marks the candidate failed.
Evaluate = Callable[[Sequence[float], Progress], float]


@dataclass
class Evaluation:
    stage: str
    generation: int
    index: int
    genome: list[float]
    fitness: float
    seconds: float
    error: str | None = None
    replayed: bool = False
    #: More fields for the log record (items scored, racing...), given by the fitness function.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def record(self) -> dict[str, Any]:
        return {"stage": self.stage, "generation": self.generation, "index": self.index, "genome": self.genome,
                "fitness": None if self.failed else self.fitness, "seconds": round(self.seconds, 4),
                "error": self.error, **self.extra}

    @classmethod
    def from_record(cls, record: dict[str, Any], genome: list[float] | None = None) -> Evaluation:
        """The evaluation a log ``record`` holds (``record()``'s inverse), replayed; a failure's fitness is -inf.
        ``genome``: the genome to carry instead of the logged one (the optimizer's own, equal to it)."""
        failed = record["error"] is not None
        return cls(record["stage"], record["generation"], record["index"],
                   list(record["genome"]) if genome is None else genome,
                   -math.inf if failed else record["fitness"], record["seconds"], record["error"], replayed=True,
                   extra={k: v for k, v in record.items() if k not in _RECORD_KEYS})


class EvolutionEvents:
    """What the evolver reports; the terminal UI implements these. All are optional no-ops here."""

    def evaluation_started(self, generation: int, index: int, count: int, budget: int) -> None: ...

    def item_progress(self, done: int, total: int) -> None: ...

    def evaluation_finished(self, evaluation: Evaluation, best: Evaluation | None, count: int, budget: int) -> None: ...


class TooManyFailures(EvosuiteError):
    pass


@dataclass
class WarmStart:
    """Fixed genomes scored first, as generation 0 (logged and replayed like any other), before the optimizer
    exists; ``make_optimizer`` then builds it at the best of them (None when every one failed)."""

    genomes: list[tuple[str, list[float]]]  # (label for the log, genome)
    make_optimizer: Callable[[list[float] | None], Optimizer]


class Evolver:
    """Scores each generation's candidates through ``evaluator`` (an ``evosuite.parallel.Evaluator``: in this
    process or on several workers at once); ``evaluate`` alone is shorthand for an in-process evaluator of it.
    ``schedule`` (optional, see ``evosuite.fitness.Schedule``) gives each generation a context passed to the
    scorer, sees every evaluation in ask order, and may name the best one.
    Evaluations are logged in ask order whatever order they complete in, so replaying the log on resume works
    the same for any evaluator.
    With ``warm_start`` (then ``optimizer`` is None) its genomes are generation 0, each logged with its label
    as ``baseline``, and the optimizer, built at the best of them, asks generations 1, 2...; they all count
    towards ``budget``.
    """

    def __init__(self, *, stage: str, optimizer: Optimizer | None, store: RunStore, budget: int,
                 evaluator=None, evaluate: Evaluate | None = None, events: EvolutionEvents | None = None,
                 max_consecutive_failures: int = 10, schedule=None, warm_start: WarmStart | None = None):
        self.stage = stage
        self.optimizer = optimizer
        self.evaluator = evaluator if evaluator is not None else InProcessEvaluator(evaluate)
        self.store = store
        self.budget = budget
        self.events = events or EvolutionEvents()
        self.max_consecutive_failures = max_consecutive_failures
        self.schedule = schedule
        self.warm_start = warm_start
        #: The best genome of the warm start's generation 0, where the optimizer started (None without one).
        self.start: Evaluation | None = None
        self.history: list[Evaluation] = []
        self._cache: dict[tuple, Evaluation] = {}

    def _logged(self) -> dict[tuple[int, int], dict[str, Any]]:
        return {(r["generation"], r["index"]): r for r in self.store.evaluations(self.stage)}

    def _evaluation(self, generation, index, genome, outcome) -> Evaluation:
        value, error, extra = outcome.value, outcome.error, {}
        if error is None:
            if hasattr(value, "fitness"):
                value, extra = value.fitness, dict(value.extra)
            fitness = float(value)
            error = None if math.isfinite(fitness) else f"fitness is {fitness}"
        if error is not None:
            fitness = -math.inf
        return Evaluation(self.stage, generation, index, genome, fitness, outcome.seconds, error, extra=extra)

    def run(self) -> Evaluation:
        """Evaluate ``budget`` candidates (replaying logged ones) and return the best."""
        logged = self._logged()
        self._best: Evaluation | None = None
        self._failures_in_a_row = 0
        count = generation = 0
        if self.warm_start is not None:
            labels = [label for label, _ in self.warm_start.genomes]
            genomes = [list(map(float, g)) for _, g in self.warm_start.genomes]
            take = min(len(genomes), self.budget)
            self._generation(0, genomes, take, count, logged, labels)
            count += take
            self.start = self._best
            self.optimizer = self.warm_start.make_optimizer(None if self._best is None else list(self._best.genome))
            generation = 1
        while count < self.budget:
            genomes = [list(map(float, g)) for g in self.optimizer.ask()]
            take = min(len(genomes), self.budget - count)
            ready = self._generation(generation, genomes, take, count, logged)
            count += take
            if take == len(genomes):
                self.optimizer.tell(genomes, [ready[i].fitness for i in range(take)])
            generation += 1
        best = self.schedule.best() if self.schedule is not None else None
        best = best or self._best
        if best is None:
            raise TooManyFailures("every candidate failed", f"see {self.store.path / 'evaluations.jsonl'}")
        return best

    def _generation(self, generation: int, genomes: list[list[float]], take: int, count: int,
                    logged: dict[tuple[int, int], dict[str, Any]], labels: list[str] | None = None
                    ) -> dict[int, Evaluation]:
        """Score (or replay) the first ``take`` genomes of one generation; return them by index."""
        context = self.schedule.context(generation) if self.schedule is not None else None
        ready: dict[int, Evaluation] = {}
        pending = []
        #: A genome asked twice in this generation (a warm start's baselines that land on one genome) is
        #: scored once: key -> the indices asking it, the first one pending, the others taking its result.
        asking: dict[tuple, list[int]] = {}
        for index, genome in enumerate(genomes[:take]):
            record = logged.get((generation, index))
            if record is not None and not _same_genome(record["genome"], genome):
                raise EvosuiteError(
                    f"the run directory's log differs from what the optimizer asks at generation {generation}",
                    "resume with the same configuration and evosuite version, or start a new run directory",
                )
            key = _cache_key(genome, context)
            if record is not None and record["error"] is None:
                ready[index] = Evaluation.from_record(record, genome)
                self._cache.setdefault(key, ready[index])  # its twins reuse it, as in an uninterrupted run
            # A logged failure is tried again: its cause (memory, a bug) may have been fixed since.
            elif (hit := self._cache.get(key)) is not None:
                ready[index] = self._reused(hit, generation, index, genome)
            elif key in asking:
                asking[key].append(index)
            else:
                asking[key] = [index]
                pending.append(index)
        self._count = count
        state = {"flushed": 0, "take": take, "ready": ready, "context": context, "labels": labels}
        self._flush(state)

        def started(task) -> None:
            self.events.evaluation_started(generation, task.key[1], count + state["flushed"], self.budget)

        tasks = [Task((generation, i), genomes[i], context) for i in pending]
        for outcome in self.evaluator.run(tasks, self.events.item_progress, started):
            _, index = outcome.key
            ready[index] = self._evaluation(generation, index, genomes[index], outcome)
            for twin in asking[_cache_key(genomes[index], context)][1:]:
                ready[twin] = self._reused(ready[index], generation, twin, genomes[twin])
            self._flush(state)
        return ready

    def _reused(self, hit: Evaluation, generation: int, index: int, genome: list[float]) -> Evaluation:
        """The evaluation of ``genome``, equal to the already scored ``hit``'s: its result, no time, marked
        ``cached`` (a failure is copied too: the same genome fails the same way)."""
        extra = {k: v for k, v in hit.extra.items() if k != "baseline"}  # the twin's own label is set on flush
        return Evaluation(self.stage, generation, index, genome, hit.fitness, 0.0, hit.error,
                          extra={**extra, "cached": True})

    def _flush(self, state: dict[str, Any]) -> None:
        """Log and report, in ask order, every evaluation of the generation whose predecessors are done."""
        ready = state["ready"]
        while state["flushed"] < state["take"] and state["flushed"] in ready:
            evaluation = ready[state["flushed"]]
            if state["labels"] is not None and not evaluation.replayed:  # the warm start names its genomes
                evaluation.extra["baseline"] = state["labels"][state["flushed"]]
            if not evaluation.replayed:
                self.store.log_evaluation(evaluation.record())
            state["flushed"] += 1
            self._finish(evaluation, self._count + state["flushed"], state["context"])

    def _finish(self, evaluation: Evaluation, count: int, context) -> None:
        self.history.append(evaluation)
        if not evaluation.failed:
            self._cache.setdefault(_cache_key(evaluation.genome, context), evaluation)
            if self._best is None or evaluation.fitness > self._best.fitness:
                self._best = evaluation
        if self.schedule is not None:
            self.schedule.observe(evaluation)
        self._failures_in_a_row = self._failures_in_a_row + 1 if evaluation.failed else 0
        self.events.evaluation_finished(evaluation, self._best, count, self.budget)
        if self._failures_in_a_row >= self.max_consecutive_failures:
            raise TooManyFailures(
                f"{self._failures_in_a_row} candidates in a row failed; the last: {evaluation.error}",
                f"see {self.store.path / 'evaluations.jsonl'}; fix the cause and `evosuite resume`",
            )


_RECORD_KEYS = {"stage", "generation", "index", "genome", "fitness", "seconds", "error"}


def _cache_key(genome: Sequence[float], context) -> tuple:
    frozen = tuple(sorted((k, v) for k, v in (context or {}).items()))
    return tuple(round(float(x), 12) for x in genome), frozen


def _same_genome(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= 1e-12 for x, y in zip(a, b))
