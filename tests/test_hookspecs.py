"""The plugin API cannot drift from its documentation and tests (as datasette does it)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from evosuite import hookspecs
from evosuite.plugin_manager import KINDS, get_host

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
               if name.startswith("register_"))


def test_there_are_hooks():
    assert {"register_model_adapters", "register_merge_methods", "register_merge_spaces", "register_benchmarks",
            "register_optimizers", "register_experiments", "register_commands"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_in_its_spec_and_the_readme(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc.split()) >= 15, f"{hook} needs a docstring saying what it receives, returns and when it runs"
    assert f"`{hook}(" in (ROOT / "README.md").read_text(), f"{hook} is missing from the README's hook table"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook):
    tests = [p for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name]
    kind = next((k for k, (h, _) in KINDS.items() if h == hook), None)
    needles = [hook] + ([f'registry("{kind}")', f'get("{kind}"'] if kind else [])
    assert any(n in p.read_text() for p in tests for n in needles), f"no test exercises {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_a_builtin_implements_the_hook(hook):
    host = get_host()
    implementers = {impl.plugin_name for impl in getattr(host.pm.hook, hook).get_hookimpls()}
    builtins = {name for name, info in host.info.items() if info.builtin}
    assert implementers & builtins, f"no built-in plugin implements {hook}"


#: Whether each built-in benchmark's search split holds its held-out items, from the datasets' own facts.
CONTAMINATED = {
    "ja-vg-vqa-500": False,  # search on train (1000 rows), held out on test (500 rows)
    "ja-vlm-bench-in-the-wild": True,  # one split: the 50 test questions
    "mgsm-ja": False,  # search on GSM8K-JA (GSM8K test items 250-1318), held out on MGSM (items 0-249)
    "zoo-ja-vqa": False,  # the zoo builders write disjoint search and test files
    "zoo-ja-math": False,
    "zoo-clip-union": False,
    "image-classification": True,  # search_split defaults to the held-out split
    "lm-eval": True,  # the task's evaluation documents only
}
#: Options without which a benchmark cannot be made.
NEEDED_OPTIONS = {"image-classification": {"dataset": "some/dataset"}, "lm-eval": {"task": "some_task"}}


def test_every_benchmark_declares_its_split_roles_truly():
    builtin = []
    for name, cls in get_host().registry("benchmarks"):
        assert cls.search_split in cls.splits and cls.test_split in cls.splits, name
        bench = cls(**NEEDED_OPTIONS.get(name, {}))
        assert isinstance(bench.contaminated, bool), name
        if cls.__module__.startswith("evosuite.benchmarks."):
            builtin.append(name)
            assert bench.contaminated is CONTAMINATED[name], name
    assert {"ja-vg-vqa-500", "ja-vlm-bench-in-the-wild", "mgsm-ja", "image-classification"} <= set(builtin)
    # A search split chosen by option is another split's data, so the run is then held out.
    classify = get_host().registry("benchmarks").get("image-classification")
    assert classify(dataset="some/dataset", split="test", search_split="train").contaminated is False
