"""Candidate evaluation on Ray actors (``pip install 'evosuite[ray]'``); Ray is imported only here, and only
when a pool is made (``make_evaluator`` falls back to in-process evaluation without it).

Each actor is built from the run configuration (a ``RunConfig``), loads the sources once and keeps them,
and builds the current stage's space and scorer the way the driver does (``evosuite.pipeline``), then
scores the genomes it is sent: only genomes, contexts and scores travel. A later pipeline stage (ps+dfs)
is set up on the same actors from the earlier stages' best genomes (``set_stage``), without loading the
sources again.

Dispatch is dynamic: each actor holds one task at a time and gets the next pending one the moment it
returns, so within a generation no worker waits while work is left. Results are handed to the evolver
as they complete; it logs them in ask order.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

from evosuite.parallel import Evaluator, InProcessEvaluator, Outcome, Task, Utilization, run_one

#: Set by Ray itself for each worker (its GPUs, its session): never copied from the driver.
_RAY_OWNED = ("CUDA_VISIBLE_DEVICES", "RAY_")


def _worker_env() -> dict[str, str]:
    """The driver's whole environment (plugin paths, thread limits, caches, any plugin's settings), so a worker
    builds what the driver would; one torch thread each unless the driver says otherwise."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_RAY_OWNED)}
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class _Worker:
    """The actor's body (wrapped by ``ray.remote`` in ``RayEvaluator``)."""

    def __init__(self, config, worker: int, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.config = config
        self.worker = worker
        self.loaded = None
        self.scorer = None
        self.stage = None

    def set_stage(self, stage: int, previous: Sequence[Sequence[float]]) -> float:
        from evosuite.loading import load_sources
        from evosuite.pipeline import Plan, replay_stage_space, stage_scorer

        start = time.perf_counter()
        plan = Plan(self.config)
        if self.loaded is None:
            self.loaded = load_sources(plan.config)[:2]
        models, base = self.loaded
        space = replay_stage_space(plan, stage, models, base, previous)
        self.scorer = stage_scorer(plan, space, plan.search_items())
        self.stage = stage
        return time.perf_counter() - start

    def evaluate(self, task: Task) -> Outcome:
        return run_one(self.scorer, task, None, self.worker)

    def pid(self) -> int:
        return os.getpid()


class RayEvaluator(Evaluator):
    """``workers`` Ray actors, on a local Ray started here (default) or the cluster at ``address``."""

    parallel = True

    def __init__(self, config, *, workers: int = 2, address: str | None = None,
                 threads_per_worker: int | None = None, num_gpus_per_worker: float | None = None):
        import ray

        self.ray = ray
        self.workers = workers
        self._started_ray = False
        if not ray.is_initialized():
            env = {"env_vars": _worker_env()}
            if address:
                ray.init(address=address, runtime_env=env, log_to_driver=False, logging_level="ERROR")
            else:
                ray.init(num_cpus=max(workers, os.cpu_count() or 1), include_dashboard=False, runtime_env=env,
                         log_to_driver=False, logging_level="ERROR", configure_logging=False)
            self._started_ray = True
        if num_gpus_per_worker is None:
            num_gpus_per_worker = (1.0 / workers) if str(config.device).startswith("cuda") else 0
        threads = threads_per_worker or int(os.environ.get("EVOSUITE_THREADS", "1") or 1)
        actor = ray.remote(num_cpus=1, num_gpus=num_gpus_per_worker)(_Worker)
        self._actors = [actor.remote(config, i, threads) for i in range(workers)]
        self.address = address
        self._stage = None
        self._reset_counts()
        self.setup_seconds = 0.0

    def describe(self) -> str:
        return f"Ray at {self.address}" if self.address else "local Ray"

    def _reset_counts(self) -> None:
        self._busy = [0.0] * self.workers
        self._tasks = 0
        self._first: float | None = None
        self._last: float | None = None

    def set_stage(self, stage: int, previous: Sequence[Sequence[float]], scorer: Callable | None = None) -> None:
        """Each actor rebuilds the stage's scorer itself (the driver's ``scorer`` stays in the driver)."""
        if self._stage == (stage, [list(g) for g in previous]):
            return
        start = time.perf_counter()
        self.ray.get([a.set_stage.remote(stage, [list(g) for g in previous]) for a in self._actors])
        self.setup_seconds += time.perf_counter() - start
        self._stage = (stage, [list(g) for g in previous])
        self._reset_counts()  # utilization is per stage

    def run(self, tasks, progress=None, started=None):
        ray = self.ray
        queue = list(tasks)
        if not queue:
            return
        if started is not None:
            started(queue[0])
        if self._first is None:
            self._first = time.perf_counter()
        in_flight: dict[Any, int] = {}
        idle = list(range(self.workers))
        try:
            while queue or in_flight:
                while queue and idle:
                    worker = idle.pop(0)
                    in_flight[self._actors[worker].evaluate.remote(queue.pop(0))] = worker
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    worker = in_flight.pop(ref)
                    idle.append(worker)
                    outcome = ray.get(ref)
                    outcome.worker = worker
                    self._busy[worker] += outcome.seconds
                    self._tasks += 1
                    yield outcome
        finally:
            self._last = time.perf_counter()

    def utilization(self) -> Utilization:
        """Busy time against the whole span from the stage's first dispatch to its last result: the gaps
        between generations (the driver logging, telling and asking) count as idle."""
        wall = (self._last - self._first) if self._first is not None and self._last is not None else 0.0
        return Utilization(self.workers, list(self._busy), wall, self._tasks)

    def close(self) -> None:
        for a in self._actors:
            try:
                self.ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._actors = []
        if self._started_ray:
            self.ray.shutdown()
            self._started_ray = False


def make_evaluator(*, workers: int, config=None, address: str | None = None, evaluate: Callable | None = None,
                   message: Callable[[str], None] = print) -> Evaluator:
    """A Ray pool of ``workers`` actors built from the run configuration ``config`` (a ``RunConfig``) when asked
    for and Ray is installed, else the in-process evaluator (scoring with ``evaluate`` until ``set_stage``)."""
    if workers <= 1 and not address:
        return InProcessEvaluator(evaluate)
    try:
        import ray  # noqa: F401
    except ImportError:
        message(f"--workers {workers}: Ray is not installed (pip install 'evosuite[ray]'); evaluating in-process")
        return InProcessEvaluator(evaluate)
    return RayEvaluator(config, workers=max(1, workers), address=address)
