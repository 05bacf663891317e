"""Baselines (fixed hand recipes) in the final table, the bound warning and the warm start, on tiny models."""

from __future__ import annotations

import json
import math

import pytest
import torch

from evosuite.config import parse_config
from evosuite.errors import EvosuiteError
from evosuite.evolver import Evolver, WarmStart
from evosuite.models import load_model
from evosuite.plugin_manager import get, get_host
from evosuite.run_store import RunStore
from evosuite.runner import run_experiment
from evosuite.tui import QuietReporter
from tests import toy_plugin
from tests.factories import write_llm

DEFAULT_NAMES = ["equal-weight", "task-arithmetic", "ties-0.5", "dare-ties-0.5"]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines")
    return {name: str(write_llm(root / name, seed=seed)) for name, seed in (("base", 0), ("a", 1), ("b", 2))}


@pytest.fixture(scope="module")
def models(paths):
    return {name: load_model(path) for name, path in paths.items()}


class Recorder(QuietReporter):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []
        self.rows: list[dict] = []

    def message(self, text):
        self.messages.append(text)

    def final_table(self, title, rows, run_dir):
        self.rows = rows


def run(paths, tmp_path, register_plugin, **extra):
    if not get_host().pm.has_plugin("toy"):
        register_plugin(toy_plugin, "toy")
    save = extra.pop("save", False)
    data = {"sources": [{"name": "a", "model": paths["a"]}, {"name": "b", "model": paths["b"]}],
            "base_model": paths["base"], "carrier": "b", "benchmark": {"name": "toy-echo", "options": {"items": 4}},
            "budget": 6, "seed": 3, **extra}
    reporter = Recorder()
    summary = run_experiment(parse_config(data), tmp_path / "run", reporter, save_model=save)
    return summary, reporter


def score_of(tensors, models):
    """The toy benchmark's held-out score of the carrier (b) holding ``tensors``: scored independently."""
    shell = models["b"].clone()
    for name, tensor in shell.mergeable_parameters().items():
        tensor.copy_(tensors[name])
    bench = get("benchmarks", "toy-echo")(items=4)
    return bench.evaluate(shell, "test", items=bench.items("test", seed=3)).score


def test_default_baselines_are_scored_like_the_same_merge_built_by_hand(paths, models, tmp_path, register_plugin):
    summary, reporter = run(paths, tmp_path, register_plugin)
    assert summary["baselines"] == DEFAULT_NAMES
    assert list(summary["test_scores"]) == ["a", "b", *DEFAULT_NAMES, "merged"]
    base, a, b = (models[n].mergeable_parameters() for n in ("base", "a", "b"))
    average = {n: (a[n] + b[n]) / 2 for n in a}
    arithmetic = {n: (a[n] - base[n]) + (b[n] - base[n]) + base[n] for n in a}  # weight 1: base + sum of deltas
    assert summary["test_scores"]["equal-weight"] == score_of(average, models)
    assert summary["test_scores"]["task-arithmetic"] == score_of(arithmetic, models)
    scores = summary["test_scores"]
    best = max(DEFAULT_NAMES, key=lambda n: scores[n])
    assert summary["best_baseline"] == best
    assert summary["margin_over_best_baseline"] == pytest.approx(scores["merged"] - scores[best], abs=1e-12)
    kinds = {row["name"]: row["kind"] for row in reporter.rows}
    assert kinds == {"a": "source", "b": "source", **{n: "reference" for n in DEFAULT_NAMES}, "merged": "merge"}


def test_a_custom_baselines_list_replaces_the_defaults(paths, models, tmp_path, register_plugin):
    custom = [{"name": "ta-0.7-0.3", "method": "task_arithmetic", "parameters": {"weight": {"a": 0.7, "b": 0.3}}},
              {"name": "mean", "method": "linear", "parameters": {"weight": 2}}]
    summary, _ = run(paths, tmp_path, register_plugin, baselines=custom, warm_start=False)
    assert summary["baselines"] == ["ta-0.7-0.3", "mean"]
    assert set(summary["test_scores"]) == {"a", "b", "ta-0.7-0.3", "mean", "merged"}
    base, a, b = (models[n].mergeable_parameters() for n in ("base", "a", "b"))
    expected = {n: 0.7 * (a[n] - base[n]) + 0.3 * (b[n] - base[n]) + base[n] for n in a}
    assert summary["test_scores"]["ta-0.7-0.3"] == score_of(expected, models)
    none, _ = run(paths, tmp_path / "none", register_plugin, baselines=[])
    assert none["baselines"] == [] and none["best_baseline"] is None and none["margin_over_best_baseline"] is None
    assert set(none["test_scores"]) == {"a", "b", "merged"}


@pytest.mark.parametrize("baselines, message", [
    ([{"name": "x"}], "baselines[0] has no method"),
    ([{"method": "tiess"}], "tiess"),
    ([{"method": "ties", "parameters": {"wieght": 1}}], "no per-model parameter 'wieght'"),
    ([{"method": "ties"}], "needs 'weight'"),
    ([{"method": "linear", "parameters": {"weight": {"c": 1}}}], "names 'c', not a source"),
    ([{"method": "linear", "parameters": {"weight": 1}, "method_options": {"normalise": True}}], "unknown option"),
    ([{"method": "linear", "parameters": {"weight": 1}}, {"method": "linear", "parameters": {"weight": 2}}],
     "reuses the name 'linear'"),
])
def test_bad_baselines_stop_before_any_work(paths, tmp_path, register_plugin, baselines, message):
    with pytest.raises(EvosuiteError) as info:  # ConfigError, or PluginError for an unknown method
        run(paths, tmp_path, register_plugin, baselines=baselines)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run" / "evaluations.jsonl").exists()


def test_warm_start_scores_the_baselines_first_and_starts_there(paths, tmp_path, register_plugin):
    summary, reporter = run(paths, tmp_path, register_plugin)
    records = [json.loads(line) for line in (tmp_path / "run" / "evaluations.jsonl").read_text().splitlines()]
    assert len(records) == 6 == summary["evaluations"]
    first = [r for r in records if r["generation"] == 0]
    assert [r["baseline"] for r in first] == DEFAULT_NAMES
    # dare_ties space, default ranges density [0, 1], weight [0, 2]: per source (density, weight) genes.
    # linear and task arithmetic have density 1 (no trimming); TIES and DARE-TIES density 0.5. Weights 1,
    # except the equal-weight average's: it divides by their sum (2) and dare_ties does not, so 0.5 each.
    assert [r["genome"] for r in first] == [[1.0, 0.25, 1.0, 0.25], [1.0, 0.5, 1.0, 0.5]] + [[0.5] * 4] * 2
    best = max(first, key=lambda r: r["fitness"])
    start = summary["evaluation"]["ps"]["warm_start"]
    assert start["genome"] == best["genome"] and start["search_fitness"] == best["fitness"]
    assert any(m.startswith("warm start: scoring 4 baselines") for m in reporter.messages)
    assert f"warm start: the optimizer starts at baseline {best['baseline']}" in reporter.messages
    assert all(r["generation"] == 1 for r in records[4:])


def test_a_baseline_outside_the_box_is_clamped_and_said(paths, tmp_path, register_plugin):
    space = {"name": "ps", "options": {"ranges": {"weight": [0.0, 0.8]}}}
    _, reporter = run(paths, tmp_path, register_plugin, space=space, budget=4)
    assert ("warm start: baseline ties-0.5: approximated: the space merges with dare_ties, the baseline with ties "
            "(normalize True, rescale False); weight of a 1 clamped to [0, 0.8], weight of b 1 clamped to [0, 0.8]"
            ) in reporter.messages
    assert ("warm start: baseline dare-ties-0.5: weight of a 1 clamped to [0, 0.8], weight of b 1 clamped to "
            "[0, 0.8]") in reporter.messages


class RecordingCMAES:
    """Builds CMA-ES at the warm start's genome and remembers the mean of its first generation."""

    def __init__(self):
        self.x0 = self.mean = None

    def __call__(self, x0):
        self.x0 = x0
        optimizer = get("optimizers", "cmaes")(3, seed=0, x0=x0)
        self.mean = [float(v) for v in optimizer._es.mean]
        return optimizer


def test_the_first_generation_is_centred_on_the_best_baseline_and_resume_replays_it(tmp_path):
    store = RunStore(tmp_path / "run").create({})
    calls = []

    def evaluate(genome, progress):
        calls.append(list(genome))
        return -sum((v - 0.7) ** 2 for v in genome)  # best baseline: the one nearest 0.7 everywhere

    genomes = [("low", [0.1, 0.1, 0.1]), ("near", [0.6, 0.8, 0.7]), ("high", [1.0, 1.0, 1.0])]
    factory = RecordingCMAES()
    Evolver(stage="ps", optimizer=None, evaluate=evaluate, store=store, budget=5,
            warm_start=WarmStart(genomes, factory)).run()
    assert factory.x0 == [0.6, 0.8, 0.7] and factory.mean == pytest.approx([0.6, 0.8, 0.7])
    assert calls[:3] == [g for _, g in genomes] and len(calls) == 5
    records = store.evaluations("ps")
    assert [(r["generation"], r.get("baseline")) for r in records[:3]] == [(0, "low"), (0, "near"), (0, "high")]

    calls.clear()  # resume with a larger budget: generation 0 and the 2 logged candidates are replayed
    again = RecordingCMAES()
    Evolver(stage="ps", optimizer=None, evaluate=evaluate, store=store, budget=9,
            warm_start=WarmStart(genomes, again)).run()
    assert again.x0 == [0.6, 0.8, 0.7] and len(calls) == 4 and len(store.evaluations("ps")) == 9
    assert all(r["generation"] >= 1 for r in store.evaluations("ps")[5:])


def test_bound_warning_and_summary_flag(paths, tmp_path, register_plugin):
    # One evaluation: the warm start's only baseline, a on with weight 1 (top of [0, 1]) and b off (bottom).
    keep_a = [{"name": "keep-a", "method": "dare_ties", "parameters": {"weight": {"a": 1.0, "b": 0.0}, "density": 0.6}}]
    space = {"name": "ps", "options": {"ranges": {"weight": [0.0, 1.0]}}}
    summary, reporter = run(paths, tmp_path, register_plugin, space=space, baselines=keep_a, budget=1)
    assert summary["best_genome"] == pytest.approx([0.6, 1.0, 0.6, 0.0])
    assert summary["best_genome_on_bound"] is True
    assert summary["genes_on_bound"] == ["weight of a at top", "weight of b at bottom"]
    assert any(m.startswith("warning: ps: the best genome sits on a bound of its box (weight of a at top, "
                            "weight of b at bottom)") for m in reporter.messages)

    from evosuite.report import write_report

    md, _ = write_report(tmp_path / "run")  # the best is the warm start's baseline, and the report says so
    text = md.read_text()
    assert "| ps | 1 | 1 | 0 |" in text and "#1 (generation 0, baseline keep-a)" in text
    assert "The best genome sits on a bound of its box (weight of a at top, weight of b at bottom)" in text

    inside = [{"name": "mid", "method": "dare_ties", "parameters": {"weight": 0.5, "density": 0.6}}]
    summary, reporter = run(paths, tmp_path / "inside", register_plugin, space=space, baselines=inside, budget=1)
    assert summary["best_genome_on_bound"] is False and summary["genes_on_bound"] == []
    assert not any(m.startswith("warning:") for m in reporter.messages)


def test_model_card_and_report_name_the_best_baseline(paths, tmp_path, register_plugin):
    from evosuite.report import write_report

    summary, _ = run(paths, tmp_path, register_plugin, save=True)
    best, margin = summary["best_baseline"], summary["margin_over_best_baseline"]
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert f"The best, `{best}`, scores {summary['test_scores'][best]:.4f}" in card
    assert f"{abs(margin):.4f} {'above' if margin >= 0 else 'below'} it" in card
    assert "| ties-0.5 | reference merge |" in card
    md, _ = write_report(tmp_path / "run")
    text = md.read_text()
    assert f"the best baseline recipe (`{best}`, {summary['test_scores'][best]:.4f})" in text
    assert "| dare-ties-0.5 | reference |" in text
    assert math.isfinite(margin)


def test_ps_space_encodes_baselines_and_names_genes(models):
    ps = get("spaces", "ps")([models["a"], models["b"]], ["a", "b"], models["base"], models["b"], seed=0,
                             method="ties", ranges={"weight": [0.0, 1.5]})
    genomes = {name: (genome, notes) for name, genome, notes in ps.baseline_genomes()}
    assert genomes["ties-0.5"] == ([0.5, 1 / 1.5, 0.5, 1 / 1.5], [])  # the space's own method: exact
    assert genomes["task-arithmetic"][0] == [1.0, 1 / 1.5, 1.0, 1 / 1.5]
    assert "approximated" in genomes["task-arithmetic"][1][0]
    assert ps.gene_names() == ["density of a", "weight of a", "density of b", "weight of b"]
    dfs = get("spaces", "dfs")([models["a"], models["b"]], ["a", "b"], None, models["b"], repeats=1, scales="hop")
    names = dfs.gene_names()
    assert names[:dfs.num_slots] == [None] * dfs.num_slots and all(names[dfs.num_slots:])
    assert dfs.baseline_genomes() == []


def test_ties_reference_matches_the_on_disk_merge(paths, models, tmp_path):
    from safetensors.torch import load_file

    from evosuite.merge.engine import merge_from_config

    ps = get("spaces", "ps")([models["a"], models["b"]], ["a", "b"], models["base"], models["b"], seed=0)
    merged = ps.references()["ties-0.5"]().mergeable_parameters()
    config = {"merge_method": "ties", "base_model": paths["base"],
              "models": [{"model": paths[n], "parameters": {"weight": 1.0, "density": 0.5}} for n in ("a", "b")]}
    out = merge_from_config(config, tmp_path / "ties")
    on_disk = {}
    for file in sorted(out.glob("*.safetensors")):
        on_disk.update(load_file(str(file)))
    name = "layers.1.mlp.up_proj.weight"
    disk_name = next(k for k in on_disk if k.endswith(name))
    torch.testing.assert_close(merged[name], on_disk[disk_name], atol=1e-6, rtol=0)
    assert not torch.allclose(merged[name], (models["a"].mergeable_parameters()[name]
                                             + models["b"].mergeable_parameters()[name]) / 2)


def test_a_run_written_before_the_warm_start_resumes_without_one(paths, tmp_path):
    from evosuite.runner import config_from_store

    data = {"sources": [{"name": "a", "model": paths["a"]}, {"name": "b", "model": paths["b"]}],
            "base_model": paths["base"], "benchmark": "toy-echo"}
    old = RunStore(tmp_path / "old").create(data)  # no warm_start key: its log has no generation 0 to replay
    assert config_from_store(old).warm_start is False
    new = RunStore(tmp_path / "new").create(parse_config(data).to_dict())
    assert config_from_store(new).warm_start is True and parse_config(data).warm_start is True


def test_a_normalized_baseline_in_a_non_normalizing_space_divides_its_weights(models):
    """The equal-weight average (linear, weights 1, normalized) is sum(x) / 2; task arithmetic with weights
    0.5 is base + 0.5 (a - base) + 0.5 (b - base) = (a + b) / 2: the same model. In a task-arithmetic space
    over [0, 2] that is gene 0.25 per source, not the genome of task arithmetic (1, 1)."""
    ps = get("spaces", "ps")([models["a"], models["b"]], ["a", "b"], models["base"], models["b"], seed=0,
                             method="task_arithmetic", ranges={"weight": [0.0, 2.0]})
    genomes = {name: (genome, notes) for name, genome, notes in ps.baseline_genomes()}
    assert genomes["equal-weight"][0] == [0.25, 0.25]
    assert any("divided by their sum 2" in note for note in genomes["equal-weight"][1])
    assert genomes["task-arithmetic"] == ([0.5, 0.5], [])  # the space's own method: exact, unscaled


def test_the_run_log_states_the_memory_a_speed_option_holds(paths, tmp_path, register_plugin):
    space = {"name": "ps", "options": {"keep_draws": True}}
    _, reporter = run(paths, tmp_path, register_plugin, space=space, budget=1)
    notes = [m for m in reporter.messages if "keep_draws holds" in m]
    assert len(notes) == 1 and notes[0].startswith("ps: keep_draws holds") and "2.0 model sizes" in notes[0]
