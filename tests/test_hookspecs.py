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


# -- optional capabilities: declared in evosuite.api, documented, looked up only as declared, tested ---------
#: Everything the core or a built-in asks of a plugin object beyond the required methods, by base class.
CAPABILITIES = {
    "LoadedModel": ["adapter", "describe", "tokenizer", "vocab_parameters", "set_vocabulary", "config_summary",
                    "image_token", "classify", "classifies"],
    "ModelAdapter": ["detect_path", "options"],
    "MergeMethod": ["takes_deltas", "merge_flat", "check_sources", "random", "replays_draws", "search_parameters"],
    "MergeSpace": ["validate_options", "initial_genome", "references", "check_baselines", "baseline_genomes",
                   "gene_names", "post_load", "describe", "figure", "card_tags", "loading_note", "cli_options"],
    "Benchmark": ["split_source", "item_scores", "items_by_id"],
    "DecoderLayers": ["text_config", "decoder_prefix", "head_prefix"],
}
#: Names the core looks up with getattr/hasattr on objects that are not plugin objects.
FOREIGN_LOOKUPS = {
    "get_vocab": "a transformers tokenizer",
    "chat_template": "a transformers tokenizer's template (evosuite merge's chat_template: auto)",
    "fitness": "an evaluation's value: a number or an evosuite.fitness.Scored",
    "EVOSUITE_HOOKS": "a plugin module's declared hook range (evosuite.hookspecs.HOOKS_VERSION)",
    "item": "a numpy or torch scalar in a result",
    "name": "a registered object's name (declared by every base class)",
    "opts": "a click parameter's flags",
}


def _declared_with_doc(cls, attribute: str) -> bool:
    value = inspect.getattr_static(cls, attribute, None)
    if callable(getattr(value, "__func__", value)) or isinstance(value, property):
        return len((inspect.getdoc(getattr(value, "__func__", value)) or "").split()) >= 8
    lines, start = inspect.getsourcelines(cls)
    # A data attribute is documented by a ``#:`` comment on the line(s) just above it.
    for k, line in enumerate(lines):
        if line.strip().startswith((f"{attribute}:", f"{attribute} =")):
            return lines[k - 1].strip().startswith("#:")
    return False


@pytest.mark.parametrize("owner, attribute", [(c, a) for c, names in CAPABILITIES.items() for a in names])
def test_every_capability_is_declared_documented_and_exercised(owner, attribute):
    from evosuite import api

    cls = getattr(api, owner)
    assert hasattr(cls, attribute) or attribute in getattr(cls, "__annotations__", {}), \
        f"{owner}.{attribute} is not declared in evosuite.api"
    assert _declared_with_doc(cls, attribute), f"{owner}.{attribute} needs a docstring or a #: comment"
    tests = [p for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name]
    assert any(attribute in p.read_text() for p in tests), f"no test exercises {owner}.{attribute}"


def _lookups(path: Path) -> list[tuple[int, str]]:
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
            found.append((node.lineno, node.args[1].value))
    return found


def test_the_core_looks_up_only_declared_capabilities():
    declared = {a for names in CAPABILITIES.values() for a in names}
    undeclared = [f"{path.relative_to(ROOT)}:{line} looks up {name!r}"
                  for path in sorted((ROOT / "suite").rglob("*.py")) if "testing" not in path.parts
                  for line, name in _lookups(path) if name not in declared and name not in FOREIGN_LOOKUPS]
    assert not undeclared, "\n".join(undeclared)


def test_the_lookup_scan_sees_an_undeclared_capability(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f(model):\n    return getattr(model, 'secret_sauce', None) or hasattr(model, 'x')\n")
    assert _lookups(module) == [(2, "secret_sauce"), (2, "x")]
