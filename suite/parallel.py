"""Where candidates are evaluated: in this process, or on a pool of workers (``evosuite.ray_pool``, whose
``make_evaluator`` chooses).

The evolver hands a pool one generation's pending candidates at once as ``Task``s and receives
``Outcome``s as they complete, in any order; it logs them in ask order itself. A pool only moves genomes,
contexts and scores: each worker built its models, merge space and benchmark once, when it started.

Workers pull the next task as soon as they finish one (dynamic dispatch), so a slow candidate never
holds up a fast worker within a generation; the only idle time is the tail of each generation, while the
last candidates finish before the optimizer can be told and asked again. ``Utilization`` measures it.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from evosuite.errors import EvosuiteError


@dataclass
class Task:
    key: Any  # the evolver's (generation, index)
    genome: list[float]
    context: dict[str, Any] | None = None


@dataclass
class Outcome:
    key: Any
    value: Any  # a float or a ``fitness.Scored``, or None when the evaluation raised
    seconds: float
    error: str | None = None
    worker: int = 0


@dataclass
class Utilization:
    """Busy seconds per worker against the wall time the pool was in use (from first dispatch to last result)."""

    workers: int
    busy: list[float] = field(default_factory=list)
    wall: float = 0.0
    tasks: int = 0

    @property
    def fraction(self) -> float:
        if self.wall <= 0 or not self.workers:
            return math.nan
        return sum(self.busy) / (self.wall * self.workers)

    def to_dict(self) -> dict[str, Any]:
        return {"workers": self.workers, "utilization": None if math.isnan(self.fraction) else round(self.fraction, 4),
                "busy_seconds": [round(b, 3) for b in self.busy], "wall_seconds": round(self.wall, 3),
                "tasks": self.tasks}


def call_evaluate(evaluate: Callable, genome, progress, context):
    """Call ``evaluate`` with the context when it takes one (the plain ``evaluate(genome, progress)`` still works)."""
    if context is None:
        return evaluate(genome, progress)
    return evaluate(genome, progress, context)


def run_one(evaluate: Callable, task: Task, progress=None, worker: int = 0) -> Outcome:
    start = time.perf_counter()
    try:
        value = call_evaluate(evaluate, task.genome, progress, task.context)
        error = None
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a failing candidate is reported, never fatal to the pool
        value, error = None, f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, EvosuiteError):
            error += " | " + traceback.format_exc(limit=-1).strip().splitlines()[-1]
    return Outcome(task.key, value, time.perf_counter() - start, error, worker)


class Evaluator:
    """A pool of ``workers`` evaluators. ``run(tasks)`` yields one ``Outcome`` per task as each completes.

    ``set_stage`` points it at the stage being searched before that stage's first ``run``; ``parallel`` says
    whether candidates are scored outside this process (the run then reports the pool's utilization).
    """

    workers: int = 1
    parallel: bool = False

    def set_stage(self, stage: int, previous: Sequence[Sequence[float]], scorer: Callable) -> None:
        """Score stage ``stage`` from now on: ``scorer`` is the driver's scorer of it; a pool whose workers hold
        their own models rebuilds the same one from the best genomes of the stages before (``previous``)."""

    def run(self, tasks: Sequence[Task], progress=None, started: Callable[[Task], None] | None = None
            ) -> Iterator[Outcome]:
        """Yield one ``Outcome`` per task as each completes; ``started(task)`` is called as work on a task begins
        (a pool of several workers calls it for the first task of the batch only)."""
        raise NotImplementedError

    def utilization(self) -> Utilization:
        raise NotImplementedError

    def describe(self) -> str:
        return "in-process"

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class InProcessEvaluator(Evaluator):
    """Evaluates tasks one after another in this process (the default, and the fallback without Ray)."""

    def __init__(self, evaluate: Callable | None = None):
        self.evaluate = evaluate
        self.workers = 1
        self._reset_counts()

    def _reset_counts(self) -> None:
        self._busy = 0.0
        self._wall = 0.0
        self._tasks = 0

    def set_stage(self, stage, previous, scorer) -> None:
        self.evaluate = scorer
        self._reset_counts()  # utilization is per stage

    def run(self, tasks, progress=None, started=None):
        for task in tasks:
            if started is not None:
                started(task)
            start = time.perf_counter()
            outcome = run_one(self.evaluate, task, progress)
            self._busy += outcome.seconds
            self._tasks += 1
            yield outcome
            self._wall += time.perf_counter() - start

    def utilization(self) -> Utilization:
        return Utilization(1, [self._busy], max(self._wall, self._busy), self._tasks)
