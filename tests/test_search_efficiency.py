"""P6 (perf/search_efficiency.py): the best-so-far genome at each checkpoint, items counted, warm start counted,
held-out scores computed once per genome, and the rebuilt space scoring as the run's own final table did."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "perf"))

import search_efficiency as p6  # noqa: E402


def record(generation, index, genome, fitness, error=None, **extra):
    return {"stage": "ps", "generation": generation, "index": index, "genome": genome, "fitness": fitness,
            "seconds": 1.0, "error": error, **extra}


def test_checkpoints_take_the_best_so_far_counting_the_warm_start_and_skipping_failures():
    records = [
        record(0, 0, [0.1, 0.1], 0.30, baseline="equal-weight"),  # the warm start: evaluations 1 and 2
        record(0, 1, [0.2, 0.2], 0.50, baseline="ties-0.5"),
        record(1, 0, [0.3, 0.3], 0.40),
        record(1, 1, [0.4, 0.4], None, error="out of memory"),
        record(1, 2, [0.5, 0.5], 0.50),  # ties with evaluation 2: the first one stays
        record(2, 0, [0.6, 0.6], 0.70),
        record(2, 1, [0.6, 0.6], 0.70, cached=True),  # the same genome again: no items scored
        record(2, 2, [0.8, 0.8], 0.65),
    ]
    points = p6.checkpoints(records, [1, 2, 5, 6, 7, 8, 20], None, total_items=10)
    # By hand: 10 items per scored evaluation, none for the failure or the cached genome; 20 is past the log.
    assert [(p.evaluations, p.genome, p.search_fitness, p.items) for p in points] == [
        (1, [0.1, 0.1], 0.30, 10), (2, [0.2, 0.2], 0.50, 20), (5, [0.2, 0.2], 0.50, 40),
        (6, [0.6, 0.6], 0.70, 50), (7, [0.6, 0.6], 0.70, 50), (8, [0.6, 0.6], 0.70, 60)]
    assert [p.seconds for p in points] == [1, 2, 5, 6, 7, 8]  # one logged second per evaluation


def test_checkpoints_with_cheaper_fitness_count_the_items_logged_and_never_pick_a_raced_candidate():
    fitness = {"subset": 2, "grow": 2, "racing": True, "chunk": 1}  # generation 0: 2 items, generation 1: 4
    records = [
        record(0, 0, [0.1], 0.5, items=2, of=2, raced=False, item_scores=[1, 0]),
        record(0, 1, [0.2], 1.0, items=2, of=2, raced=False, item_scores=[1, 1]),
        # generation 1 races against 1.0: a first wrong answer caps the mean at 0.75
        record(1, 0, [0.3], 0.0, items=1, of=4, raced=True, item_scores=[0]),
        record(1, 1, [0.2], 1.0, items=2, of=2, raced=False, item_scores=[1, 1], cached=True),
        record(1, 2, [0.4], 0.75, items=4, of=4, raced=False, item_scores=[1, 1, 1, 0]),
    ]
    points = p6.checkpoints(records, [1, 3, 5], fitness, total_items=8)
    assert [(p.evaluations, p.genome, p.items) for p in points] == [(1, [0.1], 2), (3, [0.2], 5), (5, [0.2], 9)]


def test_checkpoints_restart_with_each_stage_of_a_pipeline():
    second = [{**record(0, k, [g, g], g), "stage": "ps+dfs"} for k, g in enumerate((0.2, 0.3))]
    records = [record(0, 0, [0.9], 0.9), record(0, 1, [0.1], 0.1), *second]
    points = p6.checkpoints(records, [2, 3, 4], None, total_items=5)
    # The second stage's best so far, though the first stage's best fitness (0.9) was higher.
    assert [(p.stage, p.genome) for p in points] == [("ps", [0.9]), ("ps+dfs", [0.2, 0.2]), ("ps+dfs", [0.3, 0.3])]


def test_held_out_scores_are_computed_once_per_genome_and_reuse_known_ones():
    calls = []

    def score(stage, genome):
        calls.append((stage, list(genome)))
        return sum(genome)

    scores = p6.HeldOutScores(score)
    scores.known("ps", [0.5, 0.5], 0.25)  # what the run's final table measured
    assert scores("ps", [0.1, 0.2]) == 0.1 + 0.2
    assert scores("ps", [0.1, 0.2]) == 0.1 + 0.2
    assert scores("ps", [0.5, 0.5]) == 0.25
    assert scores("ps+dfs", [0.1, 0.2]) == 0.1 + 0.2  # another stage is another space
    assert calls == [("ps", [0.1, 0.2]), ("ps+dfs", [0.1, 0.2])] and scores.computed == 2


def test_overrides_set_top_level_keys_and_stage_options_as_yaml():
    base = {"budget": 8, "space": {"name": "ps", "options": {"method": "ties"}}, "warm_start": True}
    data = p6.apply_overrides(base, p6.PREVIOUS_DEFAULT + ["ps.ranges={weight: [0, 1.5]}", "budget=12"])
    assert data == {"budget": 12, "warm_start": False, "baselines": [],
                    "space": {"name": "ps", "options": {"method": "ties", "ranges": {"weight": [0, 1.5]}}}}
    assert base["space"]["options"] == {"method": "ties"} and base["warm_start"] is True  # a copy


def test_both_searches_end_to_end_on_tiny_models(tmp_path, evosuite_plugin_host):
    base = p6.quick_config(tmp_path / "models", seed=0)
    base["budget"] = 6
    runs = {}
    for variant, pairs in (("previous", p6.PREVIOUS_DEFAULT), ("current", [])):
        p6.run_search(p6.apply_overrides(base, pairs), tmp_path / variant)
        calls = []
        rebuilt = p6.run_scorer(tmp_path / variant)
        scorer = p6.HeldOutScores(lambda stage, genome, rebuilt=rebuilt, calls=calls:
                                  calls.append(tuple(genome)) or rebuilt(stage, genome))
        runs[variant] = (p6.measure_run(tmp_path / variant, [2, 4, 6], scorer), calls, rebuilt)

    import json

    from evosuite.run_store import RunStore

    for variant, (result, calls, rebuilt) in runs.items():
        records = RunStore(tmp_path / variant).evaluations()
        summary = json.loads((tmp_path / variant / "summary.json").read_text())
        assert len(records) == 6 and [c["evaluations"] for c in result["checkpoints"]] == [2, 4, 6]
        # 6 search items per scored evaluation. In the current search's warm start ties-0.5 lands on
        # dare-ties-0.5's genome (the DARE-TIES space has no magnitude trimming: density 0.5, weight 1 for
        # both), so that genome is scored once and its twin costs no items.
        expected = {"previous": [12, 24, 36], "current": [12, 18, 30]}[variant]
        assert [c["items"] for c in result["checkpoints"]] == expected
        final = result["checkpoints"][-1]
        assert final["genome"] == summary["best_genome"] and final["heldout"] == summary["test_scores"]["merged"]
        # The space rebuilt here scores the best genome exactly as the run's own final table did.
        assert rebuilt("ps", final["genome"]) == summary["test_scores"]["merged"]
        distinct = {tuple(c["genome"]) for c in result["checkpoints"]} - {tuple(final["genome"])}
        assert sorted(calls) == sorted(distinct)  # once each; the final best came from the run's table
        for point in result["checkpoints"]:  # the best so far by search fitness, read straight off the log
            seen = [r for r in records[:point["evaluations"]] if r["error"] is None]
            assert point["search_fitness"] == max(r["fitness"] for r in seen)
    previous_records = RunStore(tmp_path / "previous").evaluations()
    current_records = RunStore(tmp_path / "current").evaluations()
    assert not any("baseline" in r for r in previous_records) and not runs["previous"][0]["warm_start"]
    # The warm start's four default baselines are the first four evaluations, checkpoint 4 included.
    assert [r.get("baseline") for r in current_records[:4]] == ["equal-weight", "task-arithmetic", "ties-0.5",
                                                               "dare-ties-0.5"]
    assert current_records[3]["cached"] and current_records[3]["fitness"] == current_records[2]["fitness"]
    assert runs["current"][0]["checkpoints"][1]["search_fitness"] == max(r["fitness"] for r in current_records[:4])
