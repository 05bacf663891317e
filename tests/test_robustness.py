"""Issue 18, "nothing lost, nothing silently wrong": one test per numbered case, and the faults.

Each test states the case it covers. Runs are tiny (random 2-layer models, the toy benchmark) and happen in
this process through ``evosuite.cli.main`` unless a real signal needs a process of its own.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from evosuite.errors import ConfigError, ModelError
from evosuite.evolver import Evolver, TooManyFailures
from evosuite.plugin_manager import get
from evosuite.run_store import RunStore
from tests import toy_plugin
from tests.factories import write_llm
from tests.test_evolution_run import toy_config as evolution_toy_config
from tests.test_evolution_run import toy_site  # noqa: F401  (the toy benchmark's fake distribution)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {name: str(write_llm(root / name, seed=seed)) for name, seed in (("base", 0), ("a", 1), ("b", 2))}


@pytest.fixture
def toy(register_plugin):
    register_plugin(toy_plugin, "toy")


def toy_config(models, **extra):
    return evolution_toy_config(models, **{"budget": 4, **extra})


def write_config(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def cli(capsys, *args):
    """``evosuite ARGS`` in this process: (exit code, stdout, stderr)."""
    from evosuite.cli import main

    previous = signal.getsignal(signal.SIGTERM)
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        signal.signal(signal.SIGTERM, previous)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(code, err) -> bool:
    return code == 2 and err.startswith("Error: ") and err.count("\n") == 1 and "Traceback" not in err


# -- 1. a folder that is not a run ----------------------------------------------------------------------
def test_run_refuses_a_folder_that_is_not_a_run_and_touches_nothing(tiny_models, toy, tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "weights.safetensors").write_bytes(b"precious")
    (folder / "final.jsonl").write_text('{"name": "merged", "score": 0.99, "metrics": {}}\n')
    config = write_config(tmp_path / "exp.yaml", toy_config(tiny_models))
    code, _, err = cli(capsys, "run", "--config", config, "--run-dir", folder, "--quiet")
    assert one_error_line(code, err) and "not an evosuite run" in err
    assert (folder / "model" / "weights.safetensors").read_bytes() == b"precious"
    assert sorted(p.name for p in folder.iterdir()) == ["final.jsonl", "model"]
    code, _, err = cli(capsys, "resume", folder)  # nor is it resumed
    assert one_error_line(code, err) and ".evosuite-run" in err


# -- 2. an edited config on resume -------------------------------------------------------------------
def test_resume_refuses_an_edited_config_and_a_grown_budget_rewrites_the_summary(tiny_models, toy, tmp_path,
                                                                                 capsys):
    config = write_config(tmp_path / "exp.yaml", toy_config(tiny_models, budget=4))
    run = tmp_path / "run"
    assert cli(capsys, "run", "--config", config, "--run-dir", run, "--quiet", "--no-save-model")[0] == 0
    edited = yaml.safe_load((run / "config.yaml").read_text())
    edited["budget"] = 10
    (run / "config.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))

    code, _, err = cli(capsys, "resume", run, "--quiet", "--no-save-model")
    assert one_error_line(code, err) and "budget: 4 -> 10" in err and "--allow-config-change budget" in err
    assert json.loads((run / "summary.json").read_text())["evaluations"] == 4  # nothing was redone

    code, _, err = cli(capsys, "resume", run, "--quiet", "--no-save-model", "--allow-config-change", "budget")
    assert code == 0, err
    # The independent reference: a fresh run with budget 10 from the start.
    fresh = tmp_path / "fresh"
    config10 = write_config(tmp_path / "exp10.yaml", toy_config(tiny_models, budget=10))
    assert cli(capsys, "run", "--config", config10, "--run-dir", fresh, "--quiet", "--no-save-model")[0] == 0
    resumed, reference = (json.loads((d / "summary.json").read_text()) for d in (run, fresh))
    assert resumed["evaluations"] == reference["evaluations"] == 10
    assert resumed["best_genome"] == reference["best_genome"]
    assert resumed["test_scores"] == reference["test_scores"]  # the merged row is the new best's, not the old

    # Unchanged and finished: nothing to do, nothing redone.
    lines = (run / "final.jsonl").read_text()
    code, out, _ = cli(capsys, "resume", run, "--quiet", "--no-save-model")
    assert code == 0 and "already finished" in out and (run / "final.jsonl").read_text() == lines


def test_config_change_rules():
    from evosuite.config_change import check_config_change

    old = {"budget": 10, "seed": 1, "evosuite_version": "0.1"}
    assert check_config_change(old, {**old, "evosuite_version": "0.2"}, [], stages=1) == {}
    assert check_config_change(old, {**old, "budget": 12}, ["budget"], stages=1) == {"budget": (10, 12)}
    with pytest.raises(ConfigError, match="only grow"):
        check_config_change(old, {**old, "budget": 8}, ["budget"], stages=1)
    with pytest.raises(ConfigError, match="pipeline"):
        check_config_change(old, {**old, "budget": 12}, ["budget"], stages=2)
    with pytest.raises(ConfigError, match="seed: 1 -> 2.*start a new run"):
        check_config_change(old, {**old, "seed": 2}, [], stages=1)
    with pytest.raises(ConfigError, match="'seed' cannot change"):
        check_config_change(old, {**old, "seed": 2}, ["seed"], stages=1)


# -- 3. merge --force -------------------------------------------------------------------------------
def test_merge_force_never_deletes_a_source_or_foreign_files(tiny_models, tmp_path):
    from evosuite.merge import merge_from_config

    source = Path(tiny_models["a"])
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    recipe = {"merge_method": "linear", "models": [{"model": tiny_models["a"], "parameters": {"weight": 0.5}},
                                                   {"model": tiny_models["b"], "parameters": {"weight": 0.5}}]}
    with pytest.raises(ConfigError, match="evosuite did not write"):
        merge_from_config(recipe, source, force=True)
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before
    # Even an evosuite output is not replaced when the recipe reads from it.
    out = tmp_path / "merged"
    merge_from_config(recipe, out)
    again = {**recipe, "models": [{"model": str(out), "parameters": {"weight": 0.5}}, recipe["models"][1]]}
    with pytest.raises(ConfigError, match="holds the source model"):
        merge_from_config(again, out, force=True)
    assert (out / "model.safetensors.index.json").is_file()


# -- 4. eval output checked before the work -----------------------------------------------------------
def test_eval_checks_output_and_table_before_loading_anything(tiny_models, toy, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = cli(capsys, "eval", "--model", tiny_models["a"], "--benchmark", "toy-echo",
                       "--output", blocker / "out.json")
    assert one_error_line(code, err) and "--output" in err and "loading" not in err
    code, _, err = cli(capsys, "eval", "--model", tiny_models["a"], "--benchmark", "toy-echo",
                       "--output", tmp_path / "ok.json", "--table", tmp_path / "t.txt")
    assert one_error_line(code, err) and ".md or .csv" in err and "loading" not in err
    assert not (tmp_path / "ok.json").exists()


# -- 5. OpenCLIP and pickle ------------------------------------------------------------------------
def test_openclip_loader_refuses_a_pickle_it_would_pick(tmp_path, monkeypatch):
    import open_clip

    from evosuite.plugins import clip

    def must_not_load(*args, **kwargs):
        raise AssertionError("open_clip must not be asked to load")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", must_not_load)
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {}}))
    (folder / "model.safetensors").write_bytes(b"")  # open_clip prefers the .bin below to this name
    (folder / "open_clip_pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ModelError, match="would load the pickle file open_clip_pytorch_model.bin"):
        clip.ClipAdapter().load(str(folder), allow_pickle=False)

    import huggingface_hub

    def no_such_file(repo, name, **kwargs):
        raise FileNotFoundError(name)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_such_file)
    with pytest.raises(ModelError, match="has no safetensors weights"):
        clip.ClipAdapter().load("hf-hub:org/pickled-only", allow_pickle=False)


# -- 6. a negative limit -----------------------------------------------------------------------------
def test_eval_refuses_a_negative_limit(tiny_models, toy, tmp_path, capsys):
    code, _, err = cli(capsys, "eval", "--model", tiny_models["a"], "--benchmark", "toy-echo", "--limit", "-3",
                       "--output", tmp_path / "out.json")
    assert code == 2 and "--limit" in err and not (tmp_path / "out.json").exists()
    config = write_config(tmp_path / "eval.yaml", {"limit": -3})
    code, _, err = cli(capsys, "eval", "--config", config, "--model", tiny_models["a"], "--benchmark", "toy-echo",
                       "--output", tmp_path / "out.json")
    assert one_error_line(code, err) and "limit -3" in err


# -- 7. uninstall guard -----------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["evosuite==0.1", "evosuite[ray]", "Evosuite>=0", "evosuite ; python_version>'3'"])
def test_uninstall_guard_sees_through_versions_and_extras(spec, capsys, monkeypatch):
    from evosuite.commands import plugins_install

    monkeypatch.setattr(plugins_install, "_run_pip", lambda *a: pytest.fail("pip must not run"))
    code, _, err = cli(capsys, "uninstall", spec)
    assert one_error_line(code, err) and "refusing to uninstall evosuite itself" in err


# -- 8. partial predictions -------------------------------------------------------------------------
def test_score_says_when_predictions_cover_part_of_the_split(toy, tmp_path, capsys):
    predictions = tmp_path / "p.jsonl"
    predictions.write_text('{"id": 0, "prediction": "abcabcab"}\n{"id": 1, "prediction": "x"}\n')
    code, _, err = cli(capsys, "score", "--benchmark", "toy-echo", "--predictions", predictions,
                       "--output", tmp_path / "s.json")
    assert code == 0, err
    assert "2 of the 6 items of toy-echo/test" in err  # the toy benchmark has 6 items per split
    result = json.loads((tmp_path / "s.json").read_text())["results"][0]
    assert result["n_items"] == 2 and result["split_items"] == 6
    assert result["score"] == pytest.approx((1 + 0) / 2)  # "abcabcab" matches all 8, "x" none


# -- 9. compare: same source names, other models ------------------------------------------------------
def test_compare_shows_each_runs_sources_when_the_models_differ(tmp_path, capsys):
    def fake_run(name, model_a, score_a):
        store = RunStore(tmp_path / name).create({"sources": [{"name": "a", "model": model_a},
                                                               {"name": "b", "model": "/m/b"}], "seed": 0})
        store.write_json("summary.json", {"benchmark": "toy-echo", "split": "test", "metric": "char_match",
                                          "seed": 0, "sources": ["a", "b"], "stages": {"ps": {}},
                                          "test_scores": {"a": score_a, "b": 0.2, "merged": 0.5}})
        return store.path

    one, two, same = fake_run("one", "/m/a1", 0.1), fake_run("two", "/m/a2", 0.4), fake_run("same", "/m/a1", 0.1)
    code, out, err = cli(capsys, "compare", one, two)
    assert code == 0, err
    rows = [[c.strip() for c in line.split("|")[1:4]] for line in out.splitlines()[4:]]
    assert ["a", "one", "0.100"] in rows and ["a", "two", "0.400"] in rows
    assert ["b", "", "0.200"] in rows and sum(r[0] == "b" for r in rows) == 1  # b is one model in both
    code, out, _ = cli(capsys, "compare", one, same)
    assert sum(line.startswith("| a |") for line in out.splitlines()) == 1


# -- 10. a run stopped by too many failures can be resumed ---------------------------------------------
def test_a_run_stopped_by_failures_resumes_once_the_cause_is_fixed(tmp_path):
    def good(genome, progress):
        return -sum((x - 0.7) ** 2 for x in genome)

    def broken(genome, progress):
        raise RuntimeError("CUDA out of memory")

    store = RunStore(tmp_path / "run").create({})
    with pytest.raises(TooManyFailures, match="fix the cause and `evosuite resume`"):
        Evolver(stage="ps", optimizer=get("optimizers", "cmaes")(3, seed=2), evaluate=broken, store=store,
                budget=12, max_consecutive_failures=3).run()
    best = Evolver(stage="ps", optimizer=get("optimizers", "cmaes")(3, seed=2), evaluate=good, store=store,
                   budget=12, max_consecutive_failures=3).run()
    reference = Evolver(stage="ps", optimizer=get("optimizers", "cmaes")(3, seed=2), evaluate=good,
                        store=RunStore(tmp_path / "ref").create({}), budget=12).run()
    assert best.genome == reference.genome and best.fitness == reference.fitness


# -- 11. every exit leaves status.json true ------------------------------------------------------------
def test_an_unexpected_error_marks_the_run_failed(tiny_models, toy, tmp_path, capsys, monkeypatch):
    import evosuite.runner

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(evosuite.runner, "load_sources", boom)
    config = write_config(tmp_path / "exp.yaml", toy_config(tiny_models))
    with pytest.raises(RuntimeError):
        cli(capsys, "run", "--config", config, "--run-dir", tmp_path / "run", "--quiet")
    status = RunStore(tmp_path / "run").status()
    assert status["state"] == "failed" and status["error"] == "RuntimeError: boom"


@pytest.mark.parametrize("signum, code, state, last_line", [
    (signal.SIGTERM, 143, "terminated", "Terminated."),
    (signal.SIGINT, 130, "interrupted", "Aborted."),
])
def test_a_signal_mid_run_leaves_a_true_status_and_resume_finishes(signum, code, state, last_line, tiny_models,
                                                                   toy_site, tmp_path):  # noqa: F811
    config = write_config(tmp_path / "exp.yaml", toy_config(tiny_models, budget=16))
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(toy_site), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "evosuite", "run", "--config", str(config), "--run-dir", str(run),
                             "--quiet", "--no-save-model"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    log = run / "evaluations.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 5):
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code and err.strip().splitlines()[-1] == last_line
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == state and status["fix"] == f"evosuite resume {run}"
    assert 5 <= len(log.read_text().splitlines()) < 16
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name]

    resumed = subprocess.run([sys.executable, "-m", "evosuite", "resume", str(run), "--quiet", "--no-save-model"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    assert len(log.read_text().splitlines()) == 16  # nothing evaluated twice


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_merge_leaves_no_temporary_folder(signum, tiny_models, tmp_path):
    from evosuite.cli import _raise_terminated
    from evosuite.merge import merge_from_config

    recipe = {"merge_method": "linear", "models": [{"model": tiny_models["a"], "parameters": {"weight": 0.5}},
                                                   {"model": tiny_models["b"], "parameters": {"weight": 0.5}}]}
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        def terminate_midway(done, total):
            if done == 3:
                os.kill(os.getpid(), signum)

        with pytest.raises(KeyboardInterrupt):  # Terminated is one
            merge_from_config(recipe, tmp_path / "out", progress=terminate_midway)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert list(tmp_path.iterdir()) == []


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_in_the_model_save_fails_cleanly_and_resume_finishes(tiny_models, toy, tmp_path, capsys,
                                                                      monkeypatch):
    from evosuite.plugins import ps_space

    real_export = ps_space.ParameterSpace.export

    def export_then_fill_the_disk(self, genome, out_dir, **kwargs):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "model.safetensors").write_bytes(b"half")
        _disk_full()

    monkeypatch.setattr(ps_space.ParameterSpace, "export", export_then_fill_the_disk)
    config = write_config(tmp_path / "exp.yaml", toy_config(tiny_models))
    run = tmp_path / "run"
    code, _, err = cli(capsys, "run", "--config", config, "--run-dir", run, "--quiet")
    assert one_error_line(code, err) and "No space left on device" in err and "free some space" in err
    status = RunStore(run).status()
    assert status["state"] == "failed" and "No space left" in status["error"]
    assert not (run / ".model.tmp").exists() and not (run / "model").exists()

    monkeypatch.setattr(ps_space.ParameterSpace, "export", real_export)
    code, _, err = cli(capsys, "resume", run, "--quiet")
    assert code == 0, err
    assert (run / "model" / "model.safetensors").stat().st_size > 1000 and RunStore(run).status()["state"] == "finished"


def test_disk_full_in_the_log_write_keeps_what_was_logged(tiny_models, toy, tmp_path, capsys, monkeypatch):
    config = write_config(tmp_path / "exp.yaml", toy_config(tiny_models, budget=6))
    whole = tmp_path / "whole"
    assert cli(capsys, "run", "--config", config, "--run-dir", whole, "--quiet", "--no-save-model")[0] == 0

    real_append = RunStore._append
    writes = []

    def append_until_full(self, name, record):
        if name == "evaluations.jsonl" and len(writes) == 3:
            with open(self.path / name, "a", encoding="utf-8") as handle:
                handle.write('{"stage": "ps", "gen')  # the part that fit
            _disk_full()
        writes.append(name)
        real_append(self, name, record)

    monkeypatch.setattr(RunStore, "_append", append_until_full)
    run = tmp_path / "run"
    code, _, err = cli(capsys, "run", "--config", config, "--run-dir", run, "--quiet", "--no-save-model")
    assert one_error_line(code, err) and "No space left" in err
    assert RunStore(run).status()["state"] == "failed" and len(RunStore(run).evaluations()) == 3
    monkeypatch.setattr(RunStore, "_append", real_append)
    assert cli(capsys, "resume", run, "--quiet", "--no-save-model")[0] == 0
    a, b = (json.loads((d / "summary.json").read_text()) for d in (whole, run))
    assert a["best_genome"] == b["best_genome"] and a["test_scores"] == b["test_scores"]


# -- 12. a line torn inside a UTF-8 character -------------------------------------------------------------
def test_a_line_torn_inside_a_character_is_ignored(tmp_path):
    store = RunStore(tmp_path / "run").create({})
    store.log_evaluation({"stage": "ps", "generation": 0, "index": 0, "genome": [0.5], "fitness": 0.25,
                          "seconds": 0.1, "error": None})
    torn = json.dumps({"stage": "ps", "generation": 0, "index": 1, "genome": [0.5], "fitness": None,
                       "seconds": 0.1, "error": "メモリ不足"}, ensure_ascii=False).encode()
    cut = torn.index("メ".encode()) + 1  # one byte into a three-byte character
    with open(store.path / "evaluations.jsonl", "ab") as handle:
        handle.write(torn[:cut])
    assert [r["index"] for r in store.evaluations()] == [0]
    store.log_evaluation({"stage": "ps", "generation": 0, "index": 1, "genome": [0.6], "fitness": 0.5,
                          "seconds": 0.1, "error": None})
    assert [r["index"] for r in store.evaluations()] == [0, 1]  # the next record stays readable


# -- 13. inputs that used to end in a traceback ------------------------------------------------------------
def _bad_configs(models):
    good = toy_config(models)
    return [
        ("scalar", "42\n", "holds a int"),
        ("list", "- a\n- b\n", "holds a list"),
        ("latin1", None, "not UTF-8"),
        ("seed", yaml.safe_dump({**good, "seed": -1}), "seed is -1"),
        ("search_limit", yaml.safe_dump({**good, "search_limit": -1}), "search_limit is -1"),
        ("sigma0", yaml.safe_dump({**good, "optimizer": {"name": "cmaes", "options": {"sigma0": "abc"}}}),
         "option 'sigma0'"),
        ("budgets", yaml.safe_dump({**good, "space": {"name": "ps+dfs", "options": {"budgets": {"ps": "abc"}}}}),
         "budgets"),
        ("device", yaml.safe_dump({**good, "device": "bogus"}), "not a torch device"),
        ("popsize", yaml.safe_dump({**good, "optimizer": {"name": "cmaes", "options": {"popsize": 0}}}), "popsize"),
        ("starved", yaml.safe_dump({**good, "budget": 1, "space": "ps+dfs"}), "gets no evaluations"),
        ("ranges", yaml.safe_dump({**good, "space": {"name": "ps", "options": {"ranges": {"weight": [1]}}}}),
         "ranges.weight"),
        ("method", yaml.safe_dump({**good, "space": {"name": "ps", "options": {"method": "tiez"}}}),
         "did you mean 'ties'"),
    ]


@pytest.mark.parametrize("case", range(12))
def test_bad_run_configs_are_one_line(case, tiny_models, toy, tmp_path, capsys):
    name, text, message = _bad_configs(tiny_models)[case]
    path = tmp_path / f"{name}.yaml"
    if text is None:
        path.write_bytes(yaml.safe_dump(toy_config(tiny_models)).encode() + b"# caf\xe9\n")
    else:
        path.write_text(text)
    code, _, err = cli(capsys, "run", "--config", path, "--run-dir", tmp_path / "run", "--quiet")
    assert one_error_line(code, err) and message in err, err
    assert not (tmp_path / "run").exists()  # found before any work: no run directory, no model loaded


@pytest.mark.parametrize("change, message", [
    ({"dtype": ["a"]}, "unknown dtype"),
    ({"models": [{"model": "A", "parameters": {"weight": "abc"}}, {"model": "B", "parameters": {"weight": 1}}]},
     "'abc' is not a parameter value"),
    ({"models": [{"model": "A", "parameters": {"weight": [{"filter": 5, "value": 1}]}},
                 {"model": "B", "parameters": {"weight": 1}}]}, "filter 5 is not a string"),
])
def test_bad_merge_recipes_are_one_line(change, message, tiny_models, tmp_path, capsys):
    recipe = {"merge_method": "linear", "models": [{"model": tiny_models["a"], "parameters": {"weight": 1}},
                                                   {"model": tiny_models["b"], "parameters": {"weight": 1}}], **change}
    for entry in recipe["models"]:
        entry["model"] = tiny_models.get(entry["model"].lower(), entry["model"])
    path = write_config(tmp_path / "m.yaml", recipe)
    code, _, err = cli(capsys, "merge", path, tmp_path / "out")
    assert one_error_line(code, err) and message in err, err


def test_merge_device_is_checked(tiny_models, tmp_path, capsys):
    recipe = {"merge_method": "linear", "models": [{"model": tiny_models["a"], "parameters": {"weight": 1}},
                                                   {"model": tiny_models["b"], "parameters": {"weight": 1}}]}
    code, _, err = cli(capsys, "merge", write_config(tmp_path / "m.yaml", recipe), tmp_path / "out",
                       "--device", "bogus")
    assert one_error_line(code, err) and "not a torch device" in err
    assert not (tmp_path / "out").exists()


def test_broken_run_store_files_are_one_line_or_ignored(tiny_models, toy, tmp_path, capsys):
    config = write_config(tmp_path / "exp.yaml", toy_config(tiny_models))
    run = tmp_path / "run"
    assert cli(capsys, "run", "--config", config, "--run-dir", run, "--quiet", "--no-save-model")[0] == 0
    summary = (run / "summary.json").read_text()

    (run / "summary.json").write_text("{not json")
    for command in (("report", run), ("compare", run, run)):
        code, _, err = cli(capsys, *command)
        assert one_error_line(code, err) and "summary.json" in err, (command, err)
    (run / "summary.json").write_text(summary)

    # Records that are not evosuite's (an array, a missing key, a final row without a name) are not trusted:
    # their work is done again.
    with open(run / "evaluations.jsonl", "a") as handle:
        handle.write('[1, 2]\n{"stage": "ps", "generation": 9}\n')
    with open(run / "final.jsonl", "a") as handle:
        handle.write('{"score": 1.0}\n')
    baselines = {"equal-weight", "task-arithmetic", "ties-0.5", "dare-ties-0.5"}  # the PS space's defaults
    assert len(RunStore(run).evaluations()) == 4 and set(RunStore(run).finals()) == {"a", "b", "merged", *baselines}
    (run / "config.yaml").write_text("budget: [\n")
    code, _, err = cli(capsys, "resume", run)
    assert one_error_line(code, err) and "config.yaml" in err


def test_other_inputs_are_one_line(tiny_models, toy, tmp_path, capsys, monkeypatch):
    predictions = tmp_path / "p.jsonl"
    predictions.write_bytes(b'{"id": 0, "prediction": "caf\xe9"}\n')
    code, _, err = cli(capsys, "score", "--benchmark", "toy-echo", "--predictions", predictions)
    assert one_error_line(code, err) and "not UTF-8" in err
    monkeypatch.setenv("EVOSUITE_THREADS", "abc")
    code, _, err = cli(capsys, "eval", "--model", tiny_models["a"], "--benchmark", "toy-echo",
                       "--output", tmp_path / "o.json")
    assert one_error_line(code, err) and "EVOSUITE_THREADS" in err


# -- 15. della in the ps space ---------------------------------------------------------------------------
def test_every_della_genome_is_a_candidate(tiny_models):
    import random

    from evosuite.models import load_model

    base, a, b = (load_model(tiny_models[n]) for n in ("base", "a", "b"))
    cls = get("spaces", "ps")
    rng = random.Random(0)
    for ranges in ({}, {"density": [0.0, 1.0]}):
        space = cls([a, b], ["a", "b"], base, b, seed=0, method="della", ranges=ranges)
        genomes = [[0.0] * space.dimension, [1.0] * space.dimension,
                   *([rng.random() for _ in range(space.dimension)] for _ in range(20))]
        for genome in genomes:
            for group in space.decode(genome):
                for params in group:
                    eps = 0.15  # DELLA's default epsilon
                    assert params["density"] == 1.0 or 0 < params["density"] - eps < params["density"] + eps < 1
            candidate = space.candidate(genome)
            assert all(math.isfinite(float(t.abs().sum())) for t in candidate.mergeable_parameters().values())



# -- 14. misleading or late messages ---------------------------------------------------------------
def test_a_missing_local_model_path_is_named_as_a_path(tmp_path):
    from evosuite.models import load_model

    with pytest.raises(ModelError, match="model path .* does not exist"):
        load_model(str(tmp_path / "no" / "such-model"))


def test_the_pickle_error_names_the_run_setting_too(tmp_path):
    import torch

    from evosuite.models import load_model

    folder = write_llm(tmp_path / "pickled")
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    torch.save({}, folder / "pytorch_model.bin")
    with pytest.raises(ModelError) as info:
        load_model(str(folder))
    assert "--allow-pickle (eval)" in str(info.value) and "allow_pickle: true (run)" in str(info.value)


def test_load_plugins_naming_nothing_installed_is_said(monkeypatch, capsys):
    from evosuite import plugin_manager
    from evosuite.errors import PluginError

    monkeypatch.setenv("EVOSUITE_LOAD_PLUGINS", "nonexistent")
    plugin_manager.reset_host()
    plugin_manager.get_host()
    assert "EVOSUITE_LOAD_PLUGINS names 'nonexistent'" in capsys.readouterr().err
    monkeypatch.setenv("EVOSUITE_STRICT_PLUGINS", "1")
    plugin_manager.reset_host()
    with pytest.raises(PluginError, match="nonexistent"):
        plugin_manager.get_host()


@pytest.mark.parametrize("layout", ["parquet", "save_to_disk"])
def test_a_corrupt_local_dataset_is_one_line(layout, tmp_path):
    from evosuite.errors import DataError

    root = tmp_path / "data"
    if layout == "parquet":
        (root / "data").mkdir(parents=True)
        (root / "data" / "test-00000-of-00001.parquet").write_bytes(b"PAR1 this is not parquet")
    else:
        root.mkdir()
        (root / "dataset_dict.json").write_text('{"splits": ["te')
    bench = get("benchmarks", "mgsm-ja")(data_dir=str(root))
    with pytest.raises(DataError) as info:
        bench.items("test")
    assert "cannot read" in str(info.value) and "\n" not in str(info.value)


def test_an_empty_data_set_fails_before_the_models_load(tiny_models, toy, tmp_path, capsys, monkeypatch):
    import evosuite.runner

    monkeypatch.setattr(evosuite.runner, "load_sources", lambda *a: pytest.fail("models must not load"))
    config = write_config(tmp_path / "exp.yaml", toy_config(tiny_models, benchmark={"name": "toy-echo",
                                                                                    "options": {"items": 0}}))
    code, _, err = cli(capsys, "run", "--config", config, "--run-dir", tmp_path / "run", "--quiet")
    assert one_error_line(code, err) and "no items to score" in err
    assert RunStore(tmp_path / "run").status()["state"] == "failed"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_up_front(tiny_models, toy, tmp_path, capsys):
    config = write_config(tmp_path / "exp.yaml", toy_config(tiny_models, device="cuda"))
    code, _, err = cli(capsys, "run", "--config", config, "--run-dir", tmp_path / "run", "--quiet")
    assert one_error_line(code, err) and "no CUDA GPU" in err and not (tmp_path / "run").exists()


def test_an_unwritable_run_directory_is_one_line(tiny_models, toy, tmp_path, capsys, monkeypatch):
    import evosuite.run_store

    def read_only(path, text):  # what a read-only folder does (tests run as root, which ignores modes)
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(evosuite.run_store, "atomic_write_text", read_only)
    config = write_config(tmp_path / "exp.yaml", toy_config(tiny_models))
    code, _, err = cli(capsys, "run", "--config", config, "--run-dir", tmp_path / "run", "--quiet")
    assert one_error_line(code, err) and "Permission denied" in err and "config.yaml" in err
