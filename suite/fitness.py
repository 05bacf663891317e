"""Cheaper fitness: seeded item subsets that grow per generation, racing against the elite, a genome cache.

Configured by the run configuration's ``fitness`` mapping (all optional; without it every candidate is
scored on every search item, exactly as before)::

    fitness:
      subset: 32      # items of generation 0 (None: all search items)
      grow: 1.5       # the subset is multiplied by this each generation, up to all items
      racing: true    # stop a candidate once even perfect answers on the rest cannot beat the elite
      chunk: 8        # items predicted per racing step

Two halves, so that the evolver stays generic and workers stay cheap:

* ``ItemScorer`` lives where the models are (in process or in a Ray actor): given a genome and a small,
  picklable *context* (how many items, which threshold) it predicts chunk by chunk and returns a
  ``Scored`` (the fitness and a few numbers for the log).
* ``Schedule`` lives in the driver: it draws each generation's context from what earlier generations
  logged (never from the order results arrive in), so a run is the same for any worker count, and it
  keeps the elite (``best``). It is rebuilt on resume from the logged evaluations, like the optimizer.

Subsets are prefixes of one seeded permutation of the search items: generation g scores the first
``ceil(subset * grow**g)`` items, so every subset contains the previous one. Racing needs per-item
scores whose mean is the headline: a benchmark offers them with ``Benchmark.item_scores``; for one that
does not, racing is skipped (subsets still work, scored with ``Benchmark.score`` on the subset).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from evosuite.errors import ConfigError

FITNESS_KEYS = {"subset": None, "grow": 1.0, "racing": False, "chunk": 8}


@dataclass(frozen=True)
class FitnessSettings:
    subset: int | None = None
    grow: float = 1.0
    racing: bool = False
    chunk: int = 8

    @property
    def active(self) -> bool:
        return self.subset is not None or self.racing

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_fitness(value: Any) -> FitnessSettings:
    """Check the ``fitness`` mapping of a run configuration; one ``ConfigError`` line per mistake."""
    if value is None:
        return FitnessSettings()
    if not isinstance(value, Mapping):
        raise ConfigError("fitness must be a mapping", "e.g. fitness: {subset: 32, grow: 1.5, racing: true}")
    unknown = sorted(set(value) - set(FITNESS_KEYS))
    if unknown:
        raise ConfigError(f"unknown key fitness.{unknown[0]!r}", f"valid keys: {', '.join(sorted(FITNESS_KEYS))}")
    subset, grow = value.get("subset"), value.get("grow", 1.0)
    racing, chunk = value.get("racing", False), value.get("chunk", 8)
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
        raise ConfigError("fitness.subset must be a positive integer or null", f"got {subset!r}")
    if isinstance(grow, bool) or not isinstance(grow, (int, float)) or grow < 1:
        raise ConfigError("fitness.grow must be a number >= 1", f"got {grow!r}")
    if not isinstance(racing, bool):
        raise ConfigError("fitness.racing must be true or false", f"got {racing!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ConfigError("fitness.chunk must be a positive integer", f"got {chunk!r}")
    return FitnessSettings(subset, float(grow), racing, chunk)


def item_order(items: Sequence[Any], settings: FitnessSettings, seed: int) -> list[Any]:
    """The search items in the order subsets take them: a seeded permutation when subsets are used."""
    items = list(items)
    if settings.subset is None:
        return items
    order = list(range(len(items)))
    random.Random(f"evosuite-fitness-{seed}").shuffle(order)
    return [items[i] for i in order]


def subset_size(settings: FitnessSettings, generation: int, total: int) -> int:
    if settings.subset is None:
        return total
    return max(1, min(total, math.ceil(settings.subset * settings.grow ** generation - 1e-9)))


@dataclass
class Scored:
    """What one evaluation returns: the fitness and extra fields for its log record."""

    fitness: float
    extra: dict[str, Any]


class ItemScorer:
    """Scores genomes on the search items: ``scorer(genome, progress, context) -> Scored | float``.

    ``candidate(genome)`` builds the model (a merge space's ``candidate``). Without active settings it is
    the plain fitness (``benchmark.score`` of all items); with them it follows ``context``:
    ``{"count": n, "threshold": t}`` scores the first ``n`` items of the order and, when ``t`` is not
    None and the benchmark offers ``item_scores``, stops as soon as the best possible mean is <= ``t``.
    """

    def __init__(self, candidate, benchmark, items: Sequence[Any], settings: FitnessSettings, seed: int):
        self.candidate = candidate
        self.benchmark = benchmark
        self.settings = settings
        self.items = item_order(items, settings, seed)
        self.per_item = callable(benchmark.item_scores)

    def __call__(self, genome, progress=None, context: Mapping[str, Any] | None = None):
        benchmark = self.benchmark
        model = self.candidate(genome)
        if not self.settings.active:
            predictions = benchmark.predict(model, self.items, progress=progress)
            return benchmark.score(self.items, predictions, split=benchmark.search_split).score
        context = dict(context or {})
        count = min(int(context.get("count") or len(self.items)), len(self.items))
        items = self.items[:count]
        threshold = context.get("threshold")
        if not self.per_item:  # no per-item scores: a subset, but no racing
            predictions = benchmark.predict(model, items, progress=progress)
            score = benchmark.score(items, predictions, split=benchmark.search_split).score
            return Scored(score, {"items": count, "of": count, "raced": False})
        step = self.settings.chunk if (self.settings.racing and threshold is not None) else count
        scores: list[float] = []
        raced = False
        while len(scores) < count:
            chunk = items[len(scores):len(scores) + step]
            done = len(scores)

            def chunk_progress(d, t, done=done):
                if progress is not None:
                    progress(done + d, count)

            predictions = benchmark.predict(model, chunk, progress=chunk_progress)
            scores.extend(float(s) for s in benchmark.item_scores(chunk, predictions))
            best_possible = (sum(scores) + (count - len(scores)) * 1.0) / count
            if len(scores) < count and threshold is not None and best_possible <= threshold:
                raced = True
                break
        fitness = sum(scores) / len(scores)
        return Scored(fitness, {"items": len(scores), "of": count, "raced": raced,
                                "item_scores": [round(s, 6) for s in scores]})


class Schedule:
    """Driver side: each generation's context, and the elite, from logged evaluations only.

    The threshold of generation g is the elite's mean over the same items when the elite was scored on
    them all, else over the prefix it was scored on (an estimate: documented in the README). A candidate
    scored on all of its generation's items that beats the threshold becomes the elite (the best such of a
    generation, in ask order for ties).
    """

    def __init__(self, settings: FitnessSettings, total_items: int):
        self.settings = settings
        self.total = total_items
        self._elite = None  # the Evaluation
        self._elite_scores: list[float] = []
        self._contexts: dict[int, dict[str, Any]] = {}
        self.items_scored = 0
        self.items_full = 0

    def context(self, generation: int) -> dict[str, Any]:
        if generation not in self._contexts:
            count = subset_size(self.settings, generation, self.total)
            threshold = None
            if self.settings.racing and self._elite is not None and self._elite_scores:
                known = self._elite_scores[:count]
                threshold = sum(known) / len(known)
            self._contexts[generation] = {"count": count, "threshold": threshold}
        return dict(self._contexts[generation])

    def observe(self, evaluation) -> None:
        """Called for every evaluation in ask order, replayed or new."""
        extra = evaluation.extra or {}
        self.items_scored += int(extra.get("items", 0) if not extra.get("cached") else 0)
        self.items_full += self.total
        if evaluation.failed or extra.get("raced") or "item_scores" not in extra and "items" not in extra:
            return
        context = self._contexts.get(evaluation.generation) or self.context(evaluation.generation)
        threshold = context["threshold"]
        if self._elite is None:
            better = True
        elif threshold is None:
            better = evaluation.fitness > self._elite_fitness_on(context["count"])
        else:
            better = evaluation.fitness > threshold
        if better and (self._elite is None or self._elite.generation != evaluation.generation
                       or evaluation.fitness > self._elite.fitness):
            self._elite = evaluation
            self._elite_scores = list(extra.get("item_scores") or [])

    def _elite_fitness_on(self, count: int) -> float:
        known = self._elite_scores[:count]
        return sum(known) / len(known) if known else self._elite.fitness

    def best(self):
        return self._elite

    def stats(self) -> dict[str, Any]:
        return {"items_scored": self.items_scored, "items_full_evaluation": self.items_full,
                "fraction": self.items_scored / self.items_full if self.items_full else None}
