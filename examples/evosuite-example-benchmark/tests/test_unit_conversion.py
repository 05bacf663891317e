"""Tests of the example plugin, written with evosuite's testing kit.

The fixtures (``evosuite_tiny_llm``, ``evosuite_tiny_run_dir``, ``evosuite_plugin_host``) come from
evosuite's pytest plugin, loaded automatically in any environment where evosuite is installed; the
checks come from ``evosuite.testing``. Run with the plugin installed: ``pip install -e . && pytest``.
"""

from __future__ import annotations

from importlib import metadata

import pytest
from evosuite import plugin_manager
from evosuite.errors import DataError
from evosuite.testing import check_benchmark, check_plugin_registrations

import evosuite_example_benchmark
from evosuite_example_benchmark import UnitConversion, load_data
from evosuite_example_benchmark.metric import char_f1, exact_match, first_number


def test_registrations_are_sound():
    report = check_plugin_registrations(evosuite_example_benchmark, expect={"benchmarks": ["unit-conversion"]})
    assert report.hooks == ["register_benchmarks"]
    assert report.hooks_api == ">=1,<2"


def test_installed_entry_point_makes_evosuite_find_it():
    names = {ep.value for ep in metadata.entry_points(group="evosuite")}
    assert "evosuite_example_benchmark" in names
    plugin_manager.reset_host()
    try:
        assert plugin_manager.get("benchmarks", "unit-conversion") is UnitConversion
    finally:
        plugin_manager.reset_host()


def test_registered_at_run_time_on_a_fresh_host(evosuite_plugin_host):
    assert "unit-conversion" not in evosuite_plugin_host.registry("benchmarks")  # installed copy not loaded
    evosuite_plugin_host.register(evosuite_example_benchmark)
    assert evosuite_plugin_host.get("benchmarks", "unit-conversion") is UnitConversion


def test_scores_a_tiny_model(evosuite_tiny_llm):
    result = check_benchmark(UnitConversion, evosuite_tiny_llm, limit=4)
    assert set(result.metrics) == {"exact_match", "char_f1"}
    assert len(result.items) == 4


def test_scores_the_model_a_run_left(evosuite_tiny_run_dir):
    check_benchmark(UnitConversion, evosuite_tiny_run_dir / "model", split="search", limit=2, options={"shots": 1})


def test_data_ships_with_the_package():
    data = load_data()
    assert len(data["shots"]) == 3
    for split in ("search", "test"):
        rows = data["splits"][split]
        assert len(rows) == 24 and [row["id"] for row in rows] == list(range(24))
        assert all(first_number(row["answer"]) is not None for row in rows)
    questions = [row["question"] for split in data["splits"].values() for row in split]
    assert len(set(questions)) == len(questions)  # no question in both splits


def test_perfect_and_wrong_answers_score_one_and_zero():
    bench = UnitConversion()
    items = bench.items("test", limit=5)
    perfect = bench.score(items, [f" {item['answer']} units" for item in items], split="test")
    assert perfect.score == 1.0 and perfect.metrics["exact_match"] == 1.0
    wrong = bench.score(items, ["no idea"] * len(items), split="test")
    assert wrong.score == 0.0


@pytest.mark.parametrize(("prediction", "reference", "em"), [
    ("300", "300", 1.0), (" 1,200 grams", "1200", 1.0), ("300.0", "300", 1.0), ("30", "300", 0.0), ("", "3", 0.0),
])
def test_exact_match(prediction, reference, em):
    assert exact_match(prediction, reference) == em


def test_char_f1_gives_partial_credit():
    assert char_f1("300", "300") == 1.0
    assert 0 < char_f1("30", "300") < 1
    assert char_f1("abc", "300") == 0.0


def test_prompt_has_the_shots_and_ends_with_the_question():
    prompt = UnitConversion(shots=2).prompt("How many grams are in 2 kilograms?")
    assert prompt.count("Q: ") == 3 and prompt.endswith("Q: How many grams are in 2 kilograms?\nA:")


def test_unknown_split_and_option_are_clear_errors():
    with pytest.raises(DataError, match="no split 'dev'"):
        UnitConversion().items("dev")
    with pytest.raises(Exception, match="unknown option 'shot'"):
        UnitConversion(shot=2)
