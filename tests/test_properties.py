"""Property-based tests (hypothesis): any run config, merge recipe, predictions file or run-store file either
works or fails with one ``EvosuiteError`` line (the CLI's ``Error:``, exit 2), never a traceback.

The seed is fixed (``derandomize``) so CI sees the same inputs every time; ``EVOSUITE_HYPOTHESIS_EXAMPLES``
raises the number of inputs per property (default 25, which keeps this file under a minute).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evosuite.errors import EvosuiteError
from evosuite.evolver import Evolver
from evosuite.plugin_manager import get
from evosuite.run_store import RunStore
from tests import toy_plugin
from tests.factories import write_llm

EXAMPLES = int(os.environ.get("EVOSUITE_HYPOTHESIS_EXAMPLES", "25"))
PROPERTY = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Any YAML/JSON-like value: what a user can put anywhere in a file.
scalars = (st.none() | st.booleans() | st.integers(-3, 2**40) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=6))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def one_line(error: EvosuiteError) -> bool:
    return "\n" not in str(error) and str(error).strip() != ""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from evosuite.models import load_model

    root = tmp_path_factory.mktemp("tiny")
    paths = {name: str(write_llm(root / name, seed=seed)) for name, seed in (("base", 0), ("a", 1), ("b", 2))}
    return paths, {name: load_model(path) for name, path in paths.items()}


@pytest.fixture
def toy(register_plugin):
    register_plugin(toy_plugin, "toy")


# -- run configurations -----------------------------------------------------------------------------------
def _valid_run_config(paths):
    return {"sources": [{"name": "a", "model": paths["a"]}, {"name": "b", "model": paths["b"]}],
            "base_model": paths["base"], "benchmark": "toy-echo", "budget": 4, "seed": 0}


run_keys = st.sampled_from(["budget", "seed", "search_limit", "test_limit", "device", "dtype", "carrier",
                            "max_consecutive_failures", "batch_size", "fitness", "workers", "sources",
                            "benchmark", "base_model", "allow_pickle", "budgett"])
space_options = st.dictionaries(st.sampled_from(["method", "granularity", "parameters", "ranges",
                                                 "method_options", "metod"]),
                                values | st.sampled_from(["della", "ties", "dare_ties", "linear", "layer"])
                                | st.dictionaries(st.sampled_from(["weight", "density", "epsilon"]),
                                                  st.lists(scalars, max_size=3), max_size=2),
                                max_size=3)
optimizer_options = st.dictionaries(st.sampled_from(["sigma0", "popsize", "sigm"]), values, max_size=2)


@PROPERTY
@given(changes=st.dictionaries(run_keys, values, max_size=3), space=space_options, optimizer=optimizer_options,
       optimizer_name=st.sampled_from(["cmaes", "random", "nope"]))
def test_any_run_config_builds_its_search_or_fails_in_one_line(tiny, toy, changes, space, optimizer,
                                                               optimizer_name):
    from evosuite.config import parse_config
    from evosuite.pipeline import Plan, stage_space

    paths, models = tiny
    data = {**_valid_run_config(paths), **changes, "space": {"name": "ps", "options": space},
            "optimizer": {"name": optimizer_name, "options": optimizer}}
    try:
        plan = Plan(parse_config(data))
        # Everything a run builds before the first evaluation, on the already loaded tiny models.
        sources = {"a": models["a"], "b": models["b"]}
        space_obj = stage_space(plan, 0, sources, models["base"], sources[plan.config.carrier_name()])
        opt = plan.optimizer_cls(space_obj.dimension, seed=plan.config.seed, x0=space_obj.initial_genome(),
                                 **plan.config.optimizer.options)
        for genome in opt.ask()[:2]:
            space_obj.candidate(genome)
    except EvosuiteError as error:
        assert one_line(error)


# -- merge recipes ----------------------------------------------------------------------------------
def _model_ref(paths):
    return st.sampled_from([paths["a"], paths["b"], paths["base"], "/no/such/model", "org/repo"])


@PROPERTY
@given(data=st.data(), method=st.sampled_from(["linear", "ties", "dare_ties", "della", "slerp", "task_arithmetic",
                                               "breadcrumbs", "model_stock", "passthrough", "nope", 5]),
       params=st.dictionaries(st.sampled_from(["weight", "density", "epsilon", "t", "lambda", "normalize"]),
                              values | st.lists(st.dictionaries(st.sampled_from(["filter", "value"]), values,
                                                                max_size=2), max_size=2), max_size=3),
       extra=st.dictionaries(st.sampled_from(["dtype", "tokenizer_source", "slices", "base_model", "bogus"]), values,
                             max_size=2))
def test_any_merge_recipe_plans_or_fails_in_one_line(tiny, tmp_path_factory, data, method, params, extra):
    from evosuite.merge import merge_from_config

    paths, _ = tiny
    refs = data.draw(st.lists(_model_ref(paths), min_size=0, max_size=3))
    recipe = {"merge_method": method, "base_model": paths["base"],
              "models": [{"model": ref, "parameters": dict(params)} for ref in refs], **extra}
    try:
        merge_from_config(recipe, tmp_path_factory.mktemp("out") / "merged", dry_run=True)
    except EvosuiteError as error:
        assert one_line(error)


# -- predictions files ------------------------------------------------------------------------------------
prediction_lines = st.one_of(
    st.builds(lambda i, p: json.dumps({"id": i, "prediction": p}, ensure_ascii=False), st.integers(-2, 8), st.text()),
    st.builds(json.dumps, values),
    st.text(max_size=20),
)


@PROPERTY
@given(lines=st.lists(prediction_lines, max_size=6), cut=st.integers(0, 400), junk=st.binary(max_size=8))
def test_any_predictions_file_is_read_or_fails_in_one_line(tmp_path_factory, lines, cut, junk):
    from evosuite.commands.eval import read_predictions

    path = tmp_path_factory.mktemp("p") / "predictions.jsonl"
    raw = "\n".join(lines).encode("utf-8")
    path.write_bytes(raw[:cut] + junk if cut < len(raw) else raw)
    try:
        pairs = read_predictions(str(path))
        assert pairs and all(isinstance(i, int) and isinstance(p, str) for i, p in pairs)
    except EvosuiteError as error:
        assert one_line(error)


# -- run-store files -----------------------------------------------------------------------------------
def _evaluate(genome, progress):
    """Deterministic, sometimes failing, with a non-ASCII error message (the log is written unescaped)."""
    if genome[0] > 0.85:
        raise RuntimeError("メモリ不足: out of memory")
    return -sum((x - 0.3) ** 2 for x in genome)


def _evolve(store, budget=8):
    return Evolver(stage="ps", optimizer=get("optimizers", "cmaes")(2, seed=4), evaluate=_evaluate, store=store,
                   budget=budget, max_consecutive_failures=100).run()


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("whole") / "run").create({"budget": 8})
    best = _evolve(store)
    return (store.path / "evaluations.jsonl").read_bytes(), best


def test_a_log_cut_at_every_byte_resumes_to_the_uninterrupted_result(logged_run, tmp_path):
    log, best = logged_run
    for cut in range(0, len(log) + 1, max(1, len(log) // 300)):
        store = RunStore(tmp_path / f"cut{cut}").create({"budget": 8})
        (store.path / "evaluations.jsonl").write_bytes(log[:cut])
        resumed = _evolve(store)
        assert (resumed.genome, resumed.fitness) == (best.genome, best.fitness), cut


@PROPERTY
@given(position=st.floats(0, 1), junk=st.binary(max_size=40) | st.builds(lambda v: json.dumps(v).encode(), values),
       status=st.binary(max_size=30), config=st.binary(max_size=30), summary=st.binary(max_size=30))
def test_any_damage_to_a_run_store_is_ignored_or_one_line(logged_run, tmp_path_factory, position, junk, status,
                                                          config, summary):
    log, best = logged_run
    store = RunStore(tmp_path_factory.mktemp("damaged") / "run").create({"budget": 8})
    at = int(position * len(log))
    (store.path / "evaluations.jsonl").write_bytes(log[:at] + junk + log[at:])
    (store.path / "final.jsonl").write_bytes(junk)
    (store.path / "status.json").write_bytes(status)
    assert isinstance(store.status(), dict) and isinstance(store.finals(), dict)
    try:
        resumed = _evolve(store)
        assert math.isfinite(resumed.fitness)
    except EvosuiteError as error:  # junk that parses as a record of another genome: the log differs
        assert one_line(error) and "differs" in str(error)
    for name, content, read in (("config.yaml", config, store.config), ("summary.json", summary,
                                                                           lambda: store.read_json("summary.json"))):
        (store.path / name).write_bytes(content)
        try:
            read()
        except EvosuiteError as error:
            assert one_line(error)


# -- the whole command line ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_files(tiny, tmp_path_factory):
    paths, _ = tiny
    root = tmp_path_factory.mktemp("cli")
    (root / "empty").mkdir()
    (root / "text.txt").write_text("hello")
    (root / "latin1.yaml").write_bytes(b"budget: caf\xe9\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    run_config = {**_valid_run_config(paths), "budget": 2}
    (root / "run.yaml").write_text(yaml.safe_dump(run_config))
    (root / "merge.yaml").write_text(yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": paths["a"], "parameters": {"weight": 1}}, {"model": paths["b"], "parameters": {"weight": 1}}]}))
    (root / "preds.jsonl").write_text('{"id": 0, "prediction": "abc"}\n')
    store = RunStore(root / "a-run").create(run_config)
    store.write_json("summary.json", {"benchmark": "toy-echo"})
    return [str(root / n) for n in ("empty", "text.txt", "latin1.yaml", "list.yaml", "run.yaml", "merge.yaml",
                                    "preds.jsonl", "a-run", "missing")] + [paths["a"]]


@PROPERTY
@given(data=st.data())
def test_the_command_line_never_shows_a_traceback(cli_files, toy, tmp_path_factory, data):
    from evosuite.cli import main

    out = str(tmp_path_factory.mktemp("o") / "out")
    words = st.sampled_from(cli_files) | st.sampled_from(["-1", "0", "abc", "2", "toy-echo", "cpu", "bogus", out])
    command = data.draw(st.sampled_from([
        ["run", "--quiet", "--no-save-model", "--config"], ["run", "--quiet", "--run-dir", out, "--config"],
        ["resume", "--quiet"], ["merge"], ["merge", "--dry-run"], ["report"], ["compare"],
        ["eval", "--quiet", "--benchmark", "toy-echo", "--output", out + ".json", "--model"],
        ["score", "--benchmark", "toy-echo", "--output", out + ".json", "--predictions"],
        ["eval", "--quiet", "--benchmark", "toy-echo", "--limit"],
    ]))
    options = data.draw(st.lists(st.sampled_from(["--seed", "--budget", "--limit", "--device", "--table",
                                                  "--force", "--threads", "--split"]) | words, max_size=3))
    argv = command + data.draw(st.lists(words, min_size=1, max_size=2)) + options
    previous = signal.getsignal(signal.SIGTERM)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code in (0, 2), (argv, stderr.getvalue())
    if code == 2 and stderr.getvalue().startswith("Error:"):
        assert stderr.getvalue().count("\n") == 1, (argv, stderr.getvalue())

