"""A run's baselines in the search and the summary: the warm start, the bound warning, the best baseline.

Generic: the merge space builds and encodes the fixed recipes (``MergeSpace.references``,
``baseline_genomes``, ``gene_names``); this module only decides where the search starts, what to warn
about and what the summary says.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from evosuite.evolver import WarmStart

#: A gene this close to 0 or 1 sits on a bound of the box.
BOUND_TOLERANCE = 1e-3


def warm_start_from_baselines(space, baselines, reporter, make_optimizer: Callable) -> WarmStart | None:
    """The baselines' genomes, scored first so that the optimizer starts at the best (None: nothing to score)."""
    genomes = space.baseline_genomes(baselines)
    if not genomes:
        return None
    for name, _, notes in genomes:
        if notes:
            reporter.message(f"warm start: baseline {name}: {'; '.join(notes)}")
    reporter.message(f"warm start: scoring {len(genomes)} baselines on the search split first (generation 0)")

    def make_started_optimizer(x0):
        if x0 is None:
            reporter.message("warm start: every baseline failed; the optimizer starts at the space's initial genome")
        else:
            name = next(n for n, genome, _ in genomes if list(map(float, genome)) == x0)
            reporter.message(f"warm start: the optimizer starts at baseline {name}")
        return make_optimizer(x0)

    return WarmStart([(name, genome) for name, genome, _ in genomes], make_started_optimizer)


def bound_check(label: str, space, genome: Sequence[float], reporter) -> dict[str, Any]:
    """Warn when the best genome sits on a bound of its box: the search may have wanted to go further."""
    on_bound = [f"{name} at {'top' if g > 0.5 else 'bottom'}" for g, name in zip(genome, space.gene_names())
                if name is not None and min(g, 1 - g) <= BOUND_TOLERANCE]
    if on_bound:
        reporter.message(f"warning: {label}: the best genome sits on a bound of its box ({', '.join(on_bound)}): "
                         f"the search may want to go further; widen the space's ranges if the values allow it")
    return {"genes_on_bound": on_bound}


def bound_summary(stats: dict[str, Any]) -> dict[str, Any]:
    on_bound = stats.get("genes_on_bound") or []
    return {"best_genome_on_bound": bool(on_bound), "genes_on_bound": on_bound}


def baseline_summary(names: list[str], test_scores: dict[str, float], merged: str) -> dict[str, Any]:
    """The best baseline on the held-out split and the merge's margin over it (None without baselines)."""
    if not names:
        return {"baselines": [], "best_baseline": None, "margin_over_best_baseline": None}
    best = max(names, key=lambda n: test_scores[n])
    return {"baselines": names, "best_baseline": best,
            "margin_over_best_baseline": test_scores[merged] - test_scores[best]}
