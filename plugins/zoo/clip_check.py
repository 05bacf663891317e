"""The CLIP zoo builder's self-check: does the zoo show the phenomenon it exists for?

On its own ``check`` split (never the search or test split) the builder scores the experts, the symmetric
hand recipes (equal-weight average, task arithmetic (1, 1)) and a small grid of uniform task-arithmetic
weights: the merge a person finds by trying a few weights. The zoo passes (``ok``) when the best of those
merges beats each expert by ``MERGE_MARGIN``: it knows both label subsets, each expert one. Whether it also
beats the hand recipes by ``HAND_MARGIN`` (``hand_recipes_off_optimum``: the experts' task vectors are long
and their halves unequally hard, so the best weights are small and uneven) is recorded beside it, not
required: on 480 check images that margin is often inside the noise, and a per-layer search finds more than
a uniform grid. Both go into ``zoo.json`` (``checks``) and the build log.
"""

from __future__ import annotations

import itertools

#: The best simple merge must beat each expert by this much (accuracy on the check split).
MERGE_MARGIN = 0.10
#: Recorded: does the best simple merge beat the best symmetric hand recipe by this much?
HAND_MARGIN = 0.03
#: Uniform task-arithmetic weights tried per expert (both experts from the same list).
GRID_WEIGHTS = (0.25, 0.5, 0.75, 1.0)
EXPERTS = ("A", "B")
HAND_RECIPES = {"average (0.5, 0.5)": (0.5, 0.5), "task arithmetic (1, 1)": (1.0, 1.0)}


def grid() -> dict[str, tuple[float, float]]:
    """Name -> (weight of A, weight of B) of every merge the check scores: the hand recipes and the grid."""
    pairs = [w for w in itertools.product(GRID_WEIGHTS, repeat=2) if w not in HAND_RECIPES.values()]
    return {**HAND_RECIPES, **{f"task arithmetic ({a:g}, {b:g})": (a, b) for a, b in pairs}}


def verdict(scores: dict[str, float]) -> dict:
    """The check's result from union accuracies by name: the experts (``A``, ``B``) and every ``grid()`` merge."""
    merges = {name: scores[name] for name in grid()}
    best = max(merges, key=lambda name: merges[name])
    over_experts = merges[best] - max(scores[e] for e in EXPERTS)
    over_hand = merges[best] - max(scores[name] for name in HAND_RECIPES)
    return {"split": "check", "best_simple_merge": best, "best_simple_merge_score": round(merges[best], 4),
            "merge_over_experts": round(over_experts, 4), "merge_over_hand_recipes": round(over_hand, 4),
            "hand_recipes_off_optimum": over_hand >= HAND_MARGIN, "ok": over_experts >= MERGE_MARGIN}


def describe(checks: dict) -> str:
    """One log line: the verdict, and what it means when the zoo fails."""
    line = (f"clip zoo check: best simple merge {checks['best_simple_merge']} "
            f"{checks['best_simple_merge_score']:.3f}: {checks['merge_over_experts']:+.3f} over the best expert, "
            f"{checks['merge_over_hand_recipes']:+.3f} over the hand recipes")
    if checks["ok"]:
        return line
    return (line + f"; WARNING: less than {MERGE_MARGIN:.2f} over an expert: this zoo shows the phenomenon "
            "weakly (a merge has little to gain over its sources); try another EVOSUITE_ZOO_SEED")
