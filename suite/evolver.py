"""The evolver: an ask/tell loop over an optimizer plugin, logging every evaluation to the run store.

It knows nothing about models or benchmarks: it sees genomes, a function that scores one, and an
optimizer. Resuming replays the logged history: the optimizer is rebuilt from its seed and asked again,
and every genome already logged gets its logged fitness instead of a new evaluation, so a resumed run
ends exactly where an uninterrupted one would.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from evosuite.api import Optimizer, Progress
from evosuite.errors import EvosuiteError
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

    @property
    def failed(self) -> bool:
        return self.error is not None

    def record(self) -> dict[str, Any]:
        return {"stage": self.stage, "generation": self.generation, "index": self.index, "genome": self.genome,
                "fitness": None if self.failed else self.fitness, "seconds": round(self.seconds, 4),
                "error": self.error}


class EvolutionEvents:
    """What the evolver reports; the terminal UI implements these. All are optional no-ops here."""

    def evaluation_started(self, generation: int, index: int, count: int, budget: int) -> None: ...

    def item_progress(self, done: int, total: int) -> None: ...

    def evaluation_finished(self, evaluation: Evaluation, best: Evaluation | None, count: int, budget: int) -> None: ...


class TooManyFailures(EvosuiteError):
    pass


class Evolver:
    def __init__(self, *, stage: str, optimizer: Optimizer, evaluate: Evaluate, store: RunStore, budget: int,
                 events: EvolutionEvents | None = None, max_consecutive_failures: int = 10):
        self.stage = stage
        self.optimizer = optimizer
        self.evaluate = evaluate
        self.store = store
        self.budget = budget
        self.events = events or EvolutionEvents()
        self.max_consecutive_failures = max_consecutive_failures
        self.history: list[Evaluation] = []

    def _logged(self) -> dict[tuple[int, int], dict[str, Any]]:
        return {(r["generation"], r["index"]): r for r in self.store.evaluations(self.stage)}

    def _score(self, generation: int, index: int, genome: list[float]) -> Evaluation:
        start = time.perf_counter()
        try:
            fitness = float(self.evaluate(genome, self.events.item_progress))
            error = None if math.isfinite(fitness) else f"fitness is {fitness}"
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # any failing candidate is logged and ranked last; the run goes on
            fitness, error = -math.inf, f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, EvosuiteError):
                error += " | " + traceback.format_exc(limit=-1).strip().splitlines()[-1]
        if error is not None:
            fitness = -math.inf
        return Evaluation(self.stage, generation, index, genome, fitness, time.perf_counter() - start, error)

    def run(self) -> Evaluation:
        """Evaluate ``budget`` candidates (replaying logged ones) and return the best."""
        logged = self._logged()
        best: Evaluation | None = None
        count = generation = failures_in_a_row = 0
        while count < self.budget:
            genomes = [list(map(float, g)) for g in self.optimizer.ask()]
            fitnesses: list[float] = []
            for index, genome in enumerate(genomes):
                if count >= self.budget:
                    break
                self.events.evaluation_started(generation, index, count, self.budget)
                record = logged.get((generation, index))
                if record is not None and _same_genome(record["genome"], genome):
                    evaluation = Evaluation(self.stage, generation, index, genome,
                                            -math.inf if record["fitness"] is None else record["fitness"],
                                            record["seconds"], record["error"], replayed=True)
                elif record is not None:
                    raise EvosuiteError(
                        f"the run directory's log differs from what the optimizer asks at generation {generation}",
                        "resume with the same configuration and evosuite version, or start a new run directory",
                    )
                else:
                    evaluation = self._score(generation, index, genome)
                    self.store.log_evaluation(evaluation.record())
                count += 1
                self.history.append(evaluation)
                fitnesses.append(evaluation.fitness)
                if not evaluation.failed and (best is None or evaluation.fitness > best.fitness):
                    best = evaluation
                failures_in_a_row = failures_in_a_row + 1 if evaluation.failed else 0
                self.events.evaluation_finished(evaluation, best, count, self.budget)
                if failures_in_a_row >= self.max_consecutive_failures:
                    raise TooManyFailures(
                        f"{failures_in_a_row} candidates in a row failed; the last: {evaluation.error}",
                        f"see {self.store.path / 'evaluations.jsonl'}; fix the cause and `evosuite resume`",
                    )
            if len(fitnesses) == len(genomes):
                self.optimizer.tell(genomes, fitnesses)
            generation += 1
        if best is None:
            raise TooManyFailures("every candidate failed", f"see {self.store.path / 'evaluations.jsonl'}")
        return best


def _same_genome(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= 1e-12 for x, y in zip(a, b))
