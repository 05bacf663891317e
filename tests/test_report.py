"""``evosuite report``: figures, Markdown and self-contained HTML from a run store; the exported model card."""

from __future__ import annotations

import json
import random
import re

import pytest
import yaml

from evosuite.config import parse_config
from evosuite.errors import ConfigError
from evosuite.model_card import model_card
from evosuite.plugins.space_reports import dfs_figure, ps_figure
from evosuite.report import load_run, write_report
from evosuite.report.plots import final_figure, fitness_figure, make_figures
from evosuite.run_store import RunStore

SOURCES = [{"name": "a", "model": "org/model-a"}, {"name": "b", "model": "org/model-b"}]


def _config(space: str, budget: int) -> dict:
    return {"sources": SOURCES, "base_model": "org/base", "benchmark": {"name": "ja-vg-vqa", "options": {}},
            "space": {"name": space, "options": {}}, "optimizer": {"name": "cmaes", "options": {}},
            "budget": budget, "seed": 3, "evosuite_version": "0.1.0"}


def _log(store: RunStore, stage: str, count: int, popsize: int, rng: random.Random, failed=()) -> None:
    for k in range(count):
        error = "RuntimeError: out of memory" if k in failed else None
        store.log_evaluation({"stage": stage, "generation": k // popsize, "index": k % popsize,
                              "genome": [rng.random() for _ in range(4)],
                              "fitness": None if error else round(0.2 + 0.3 * rng.random() + 0.01 * k, 4),
                              "seconds": 1.5, "error": error})


def _ps_recipe(groups: int, layers_per_group: int) -> dict:
    return {"space": "ps", "method": "dare_ties", "method_options": {"normalize": False}, "seed": 3,
            "groups": [{"layers": [g * layers_per_group, (g + 1) * layers_per_group - 1],
                        "sources": {s["name"]: {"density": round(0.1 + 0.2 * g + 0.1 * i, 3),
                                                "weight": round(0.9 - 0.15 * g - 0.2 * i, 3)}
                                    for i, s in enumerate(SOURCES)}}
                       for g in range(groups)]}


DFS_PATH = [{"source": "ps", "layer": 0, "scale": 1.0}, {"source": "ps", "layer": 1, "scale": 1.0},
            {"source": "b", "layer": 1, "scale": 0.8}, {"source": "b", "layer": 2, "scale": 1.0},
            {"source": "ps", "layer": 2, "scale": 1.3}, {"source": "ps", "layer": 3, "scale": 1.0},
            {"source": "b", "layer": 3, "scale": 1.1}]

FINALS = [("a", 0.31), ("b", 0.12), ("equal-weight", 0.25), ("ps", 0.38), ("ps+dfs", 0.42)]


def _finals(store: RunStore, names) -> None:
    for name, score in FINALS:
        if name in names:
            store.log_final({"name": name, "score": score, "seconds": 2.0,
                             "metrics": {"rougeL_ja": score, "rougeL_ja_low": score - 0.04,
                                         "rougeL_ja_high": score + 0.05, "rougeL": score + 0.01}})


@pytest.fixture
def pipeline_run(tmp_path):
    """A finished PS+DFS run: 12 + 10 evaluations (one failed), recipes of both stages, the held-out table."""
    store = RunStore(tmp_path / "pipeline").create(_config("ps+dfs", 22))
    rng = random.Random(0)
    _log(store, "ps", 12, 4, rng, failed={5})
    _log(store, "ps+dfs", 10, 5, rng)
    dfs = {"space": "dfs", "repeats": 2, "scales": "matrix", "scale_range": [0.0, 2.0], "embeddings_from": "ps",
           "slots": 16, "path_length": len(DFS_PATH), "path": DFS_PATH}
    store.write_yaml("best_recipe.yaml", {"fitness": 0.6, "genome": [0.5] * 4, "recipe": dfs,
                                          "stages": {"ps": {"genome": [0.5] * 4, "fitness": 0.55,
                                                            "recipe": _ps_recipe(4, 2)},
                                                     "ps+dfs": {"genome": [0.5] * 4, "fitness": 0.6, "recipe": dfs}}})
    _finals(store, {name for name, _ in FINALS})
    store.write_json("summary.json", {"benchmark": "ja-vg-vqa", "metric": "rougeL_ja", "split": "test"})
    store.set_status("finished")
    return store.path


@pytest.fixture
def running_ps_run(tmp_path):
    """A PS run killed in its search: 7 evaluations logged, no recipe, no final table, status still running."""
    store = RunStore(tmp_path / "running").create(_config("ps", 20))
    _log(store, "ps", 7, 4, random.Random(1))
    with open(store.path / "evaluations.jsonl", "a") as handle:
        handle.write('{"stage": "ps", "generation": 1, "ind')  # torn by kill -9
    return store.path


def _bars(figure, gid):
    return [p for ax in figure.axes for p in ax.patches if p.get_gid() == gid]


def _gid(figure, gid):
    found = [a for ax in figure.axes for a in (*ax.collections, *ax.lines, *ax.images) if a.get_gid() == gid]
    assert len(found) == 1, f"{gid}: {found}"
    return found[0]


def test_fitness_figure_has_every_candidate_and_the_lines(pipeline_run):
    data = load_run(pipeline_run)
    figure = make_figures(data)["fitness.png"][0]
    assert len(_gid(figure, "candidates:ps").get_offsets()) == 11  # 12 minus the failed one
    assert len(_gid(figure, "candidates:ps+dfs").get_offsets()) == 10
    assert len(_gid(figure, "failed").get_offsets()) == 1
    best = _gid(figure, "best:ps").get_ydata()
    ps = [r["fitness"] for r in data.evaluations if r["stage"] == "ps" and r["fitness"] is not None]
    assert list(best) == sorted(best) and best[-1] == max(ps)
    assert len(_gid(figure, "mean:ps").get_xdata()) == 3 and len(_gid(figure, "mean:ps+dfs").get_xdata()) == 2
    held_out = [line for line in figure.axes[0].lines if (line.get_gid() or "").startswith("heldout:")]
    assert {line.get_gid() for line in held_out} == {"heldout:a", "heldout:b"}  # sources only, not merges
    assert _gid(figure, "heldout:a").get_ydata()[0] == 0.31
    ax = figure.axes[0]
    assert "evaluation" in ax.get_xlabel() and "rougeL_ja" in ax.get_ylabel()


def test_recipe_figures_match_the_recipes():
    ps = ps_figure(_ps_recipe(4, 2))
    heatmaps = [_gid(ps, "heatmap:density"), _gid(ps, "heatmap:weight")]
    assert all(h.get_array().shape == (2, 4) for h in heatmaps)
    assert heatmaps[0].get_array()[1, 2] == pytest.approx(0.1 + 0.4 + 0.1)  # source b, group 2
    assert [t.get_text() for t in ps.axes[0].get_yticklabels()] == ["a", "b"]

    dfs = dfs_figure({"path": DFS_PATH, "slots": 16, "repeats": 2})
    assert len(_gid(dfs, "path:ps").get_offsets()) == 4 and len(_gid(dfs, "path:b").get_offsets()) == 3
    assert [tuple(p) for p in _gid(dfs, "path:b").get_offsets()] == [(3, 1), (4, 2), (7, 3)]
    bars = _bars(dfs, "scales")
    assert [round(b.get_height(), 2) for b in bars] == [1.0, 1.0, 0.8, 1.0, 1.3, 1.0, 1.1]
    assert "empty path" in " ".join(t.get_text() for t in dfs_figure({"path": []}).axes[0].texts)


def test_final_figure_has_a_bar_per_row_and_intervals_where_given():
    rows = [{"name": "a", "score": 0.3, "kind": "source", "low": 0.25, "high": 0.36},
            {"name": "b", "score": 0.1, "kind": "source"},
            {"name": "merged", "score": 0.4, "kind": "merge", "low": 0.33, "high": 0.45}]
    figure = final_figure(rows, metric="rougeL_ja")
    assert [round(b.get_height(), 2) for b in _bars(figure, "scores")] == [0.3, 0.1, 0.4]
    intervals = _gid(figure, "intervals")
    segments = intervals.get_segments()
    assert [(round(s[0][1], 2), round(s[1][1], 2)) for s in segments] == [(0.25, 0.36), (0.33, 0.45)]
    assert "held-out" in figure.axes[0].get_ylabel()
    assert fitness_figure([], metric="x", stages=["ps"]).axes[0].texts  # an empty log still draws


def _assert_self_contained(html: str) -> None:
    assert "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', html))
    assert "<link" not in html and "@import" not in html and "url(" not in html


def test_report_of_a_finished_pipeline_run(pipeline_run):
    md_path, html_path = write_report(pipeline_run)
    assert md_path == pipeline_run / "report.md" and html_path == pipeline_run / "report.html"
    figures = sorted(p.name for p in (pipeline_run / "report_figures").iterdir())
    assert figures == ["dfs_ps-dfs.png", "final.png", "fitness.png", "ps_ps.png"]
    assert all((pipeline_run / "report_figures" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in figures)
    md = md_path.read_text()
    for name in figures:
        assert f"](report_figures/{name})" in md
    assert "| ps+dfs | merge | 0.4200 | [0.3800, 0.4700] |" in md
    assert "0.1100 above the best source (`a`, 0.3100)" in md
    assert "ps:0 -> ps:1 -> b:1 (x0.80) -> b:2 -> ps:2 (x1.30) -> ps:3 -> b:3 (x1.10)" in md
    assert "evosuite_version" not in md.split("## Reproduce")[1]  # the shown config runs as it is
    html = html_path.read_text()
    _assert_self_contained(html)
    assert html.count("<img ") == 4


def test_report_of_a_killed_run_and_of_no_run(running_ps_run, tmp_path):
    md_path, html_path = write_report(running_ps_run)
    assert sorted(p.name for p in (running_ps_run / "report_figures").iterdir()) == ["fitness.png"]
    md = md_path.read_text()
    assert "has not finished" in md and "7 evaluations logged so far" in md and "No held-out scores yet" in md
    _assert_self_contained(html_path.read_text())
    figure = make_figures(load_run(running_ps_run))["fitness.png"][0]
    assert len(_gid(figure, "candidates:ps").get_offsets()) == 7
    with pytest.raises(ConfigError, match="not a run directory"):
        write_report(tmp_path / "nothing")


def _cli(capsys, *args):
    """``evosuite ARGS`` in this process (a subprocess would spend seconds importing torch again)."""
    from evosuite.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_report_command(running_ps_run, tmp_path, capsys):
    code, out, err = _cli(capsys, "report", str(running_ps_run))
    assert code == 0, err
    assert out.split() == ["report:", str(running_ps_run / "report.md"), "report:", str(running_ps_run / "report.html")]
    code, out, err = _cli(capsys, "report", str(tmp_path / "nothing"))
    assert code == 2 and err.count("\n") == 1 and "not a run directory" in err


def test_model_card_front_matter_scores_recipe_and_command():
    config = parse_config({k: v for k, v in _config("ps", 20).items() if k != "evosuite_version"})
    summary = {"benchmark": "ja-vg-vqa", "metric": "rougeL_ja", "split": "test", "evaluations": 20, "seed": 3,
               "test_scores": {"a": 0.31, "b": 0.12, "equal-weight": 0.25, "merged": 0.38},
               "test_metrics": {"a": {"rougeL_ja": 0.31, "rougeL_ja_low": 0.27, "rougeL_ja_high": 0.36},
                                "b": {"rougeL_ja": 0.12}, "equal-weight": {"rougeL_ja": 0.25},
                                "merged": {"rougeL_ja": 0.38, "rougeL_ja_low": 0.33, "rougeL_ja_high": 0.43}},
               "search_fitness": 0.5, "recipe": _ps_recipe(1, 4), "stages": {"ps": {"search_fitness": 0.5}},
               "sources": ["a", "b"]}
    card = model_card(summary, config)
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["base_model"] == ["org/model-a", "org/model-b", "org/base"]
    assert front["base_model_relation"] == "merge"
    assert {"merge", "evosuite", "ja-vg-vqa"} <= set(front["tags"])
    body = card.split("---\n", 2)[2]
    assert "| **merged** | merged model | **0.3800** | 0.3300 to 0.4300 |" in body
    assert "| a | source | 0.3100 | 0.2700 to 0.3600 |" in body
    assert "method: dare_ties" in body and "density:" in body
    assert "evosuite run --config config.yaml" in body
    shown = yaml.safe_load(body.split("```yaml\n")[-1].split("```")[0])
    assert parse_config(shown).seed == 3 and shown["budget"] == 20  # the config block runs as it is


def test_run_report_flag_writes_the_report_after_the_run(tmp_path, capsys, monkeypatch):
    import evosuite.runner

    def fake_run(config, run_dir, reporter, **_):  # the run store of a finished search, without models
        store = RunStore(run_dir).create({**config.to_dict(), "evosuite_version": "0.1.0"})
        _log(store, "ps", 6, 3, random.Random(2))
        store.set_status("finished")
        return {}

    monkeypatch.setattr(evosuite.runner, "run_experiment", fake_run)
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({k: v for k, v in _config("ps", 6).items() if k != "evosuite_version"}))
    run_dir = tmp_path / "run"
    code, out, err = _cli(capsys, "run", "--config", str(config), "--run-dir", str(run_dir), "--quiet", "--report")
    assert code == 0, err
    assert f"report: {run_dir / 'report.md'}" in out and f"report: {run_dir / 'report.html'}" in out
    assert (run_dir / "report_figures" / "fitness.png").is_file()
    code, out, err = _cli(capsys, "run", "--config", str(config), "--run-dir", str(tmp_path / "run2"), "--quiet")
    assert code == 0 and f"evosuite report {tmp_path / 'run2'}" in out
    assert not (tmp_path / "run2" / "report.md").exists()


def test_model_card_of_a_pipeline_with_scales():
    config = parse_config({k: v for k, v in _config("ps+dfs", 20).items() if k != "evosuite_version"})
    dfs = {"space": "dfs", "repeats": 2, "scales": "matrix", "embeddings_from": "ps", "slots": 16, "path": DFS_PATH}
    summary = {"benchmark": "ja-vg-vqa", "metric": "rougeL_ja", "split": "test", "evaluations": 20, "seed": 3,
               "test_scores": {"a": 0.31, "ps": 0.38, "ps+dfs": 0.42, "merged": 0.42}, "test_metrics": {},
               "recipe": dfs, "stages": {"ps": {"search_fitness": 0.5, "recipe": _ps_recipe(1, 4)},
                                         "ps+dfs": {"search_fitness": 0.6}}}
    card = model_card(summary, config)
    front = yaml.safe_load(card.split("---\n")[1])
    assert {"parameter-space-merge", "data-flow-space-merge"} <= set(front["tags"])
    assert "| ps | stage best | 0.3800 | - |" in card and "| **merged** | merged model | **0.4200** | - |" in card
    assert "Stage `ps`:" in card and "method: dare_ties" in card  # a stage recipe, when the summary has it
    assert "load_dfs_model" in card  # scales live outside the weights


def _fake_summary(run_dir, sources, scores, stages):
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({
        "benchmark": "zoo-ja-vqa", "split": "test", "metric": "rougeL_ja", "seed": 0, "sources": sources,
        "test_scores": scores, "stages": {s: {} for s in stages},
        "test_metrics": {name: {"rougeL_ja_low": v - 0.01, "rougeL_ja_high": v + 0.01} for name, v in scores.items()},
    }))
    return run_dir


def test_compare_lists_sources_once_then_each_runs_merges(tmp_path):
    from tests.conftest import run_cli

    ps = _fake_summary(tmp_path / "ps", ["ja", "vlm"], {"ja": 0.3, "vlm": 0.1, "equal-weight": 0.32, "merged": 0.4},
                       ["ps"])
    both = _fake_summary(tmp_path / "ps+dfs", ["ja", "vlm"],
                         {"ja": 0.3, "vlm": 0.1, "equal-weight": 0.32, "ps": 0.41, "ps+dfs": 0.43, "merged": 0.43},
                         ["ps", "ps+dfs"])
    result = run_cli("compare", str(ps), str(both))
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split("|")[1].strip() for r in rows] == ["ja", "vlm", "equal-weight", "merged", "ps", "ps+dfs"]
    assert "| ps+dfs | ps+dfs | 0.430 | 0.420 - 0.440 |" in result.stdout
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    failed = run_cli("compare", str(ps), str(unfinished))
    assert failed.returncode == 2 and "has no summary.json" in failed.stderr
