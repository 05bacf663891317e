"""The pluggy host: loading, isolation of broken plugins, strict mode, registries and their errors."""

from __future__ import annotations

import json

import pytest

from evosuite import hookimpl, plugin_manager
from evosuite.api import Benchmark
from evosuite.errors import PluginError
from tests.conftest import run_cli

BUILTINS = {"llm", "vlm", "optimizers"}


class EchoBenchmark(Benchmark):
    name = "echo-test"
    description = "returns the prompt"


class EchoPlugin:
    @hookimpl
    def register_benchmarks(self, register):
        register(EchoBenchmark)


def test_registered_plugin_is_visible_and_removed_after(register_plugin):
    register_plugin(EchoPlugin(), "echo")
    host = plugin_manager.get_host()
    assert host.registry("benchmarks").get("echo-test") is EchoBenchmark
    assert host.registry("benchmarks").plugin_of("echo-test") == "echo"
    row = next(r for r in host.plugins() if r["name"] == "echo")
    assert row["hooks"] == ["register_benchmarks"]
    assert row["registers"] == {"benchmarks": ["echo-test"]}
    host.remove_plugin("echo")
    assert "echo-test" not in host.registry("benchmarks")


def test_builtins_load_through_the_entry_point_group():
    rows = plugin_manager.get_host().plugins(include_builtin=True)
    names = {r["name"] for r in rows}
    assert BUILTINS <= names
    assert all(r["package"] == "evosuite" and r["builtin"] for r in rows if r["name"] in BUILTINS)
    assert plugin_manager.get_host().plugins() == []  # without --all, built-ins are hidden


def test_duplicate_names_name_both_plugins(register_plugin):
    register_plugin(EchoPlugin(), "first")

    class Again:
        @hookimpl
        def register_benchmarks(self, register):
            register(EchoBenchmark)

    register_plugin(Again(), "second")
    with pytest.raises(PluginError) as info:
        plugin_manager.get_host().registry("benchmarks")
    assert "'first'" in str(info.value) and "'second'" in str(info.value)


def test_unknown_name_lists_and_suggests():
    with pytest.raises(PluginError) as info:
        plugin_manager.get("optimizers", "cmaess")
    message = str(info.value)
    assert "did you mean 'cmaes'" in message and "random" in message


def test_hook_that_raises_is_a_warning_and_others_still_register(register_plugin, capsys):
    class Broken:
        @hookimpl
        def register_benchmarks(self, register):
            register(EchoBenchmark)  # registered before the failure: must not survive it
            raise RuntimeError("boom")

    register_plugin(Broken(), "broken")
    registry = plugin_manager.get_host().registry("benchmarks")
    assert "echo-test" not in registry
    assert plugin_manager.get("optimizers", "cmaes")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["Warning: plugin 'broken' failed in register_benchmarks: RuntimeError: boom"]


def test_hook_that_raises_is_an_error_in_strict_mode(register_plugin, monkeypatch):
    class Broken:
        @hookimpl
        def register_optimizers(self, register):
            raise RuntimeError("boom")

    register_plugin(Broken(), "broken")
    monkeypatch.setenv("EVOSUITE_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="broken"):
        plugin_manager.get_host().registry("optimizers")


BROKEN_IMPORT = "raise ImportError('missing dependency frobnicate')\n"
BROKEN_HOOK = """
from evosuite import hookimpl

@hookimpl
def register_optimizers(register):
    raise ValueError('bad optimizer')
"""
GOOD = """
from evosuite import hookimpl
from evosuite.api import Benchmark

class Tiny(Benchmark):
    name = "tiny-third-party"

@hookimpl
def register_benchmarks(register):
    register(Tiny)
"""


def test_cli_lists_third_party_plugin_and_warns_once_for_a_broken_one(fake_distribution):
    site = fake_distribution("evosuite-good", "evosuite_good", GOOD)
    fake_distribution("evosuite-broken", "evosuite_broken", BROKEN_IMPORT)
    result = run_cli("plugins", "--json", env={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == ["evosuite_good"]
    assert rows[0]["package"] == "evosuite-good" and rows[0]["registers"] == {"benchmarks": ["tiny-third-party"]}
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 1
    assert "evosuite_broken" in warnings[0] and "evosuite-broken" in warnings[0] and "frobnicate" in warnings[0]


def test_cli_warns_for_a_plugin_whose_hook_raises(fake_distribution):
    site = fake_distribution("evosuite-badhook", "evosuite_badhook", BROKEN_HOOK)
    result = run_cli("plugins", "--all", "--json", env={"PYTHONPATH": str(site)})
    assert result.returncode == 0
    names = {r["name"] for r in json.loads(result.stdout)}
    assert BUILTINS <= names
    assert result.stderr.count("Warning:") == 1 and "bad optimizer" in result.stderr


@pytest.mark.parametrize("source", [BROKEN_IMPORT, BROKEN_HOOK])
def test_strict_mode_turns_broken_plugins_into_exit_2(fake_distribution, source):
    site = fake_distribution("evosuite-bad", "evosuite_bad", source)
    result = run_cli("plugins", "--json", env={"PYTHONPATH": str(site), "EVOSUITE_STRICT_PLUGINS": "1"})
    assert result.returncode == 2
    assert result.stderr.startswith("Error: ") and "evosuite_bad" in result.stderr
    assert "Traceback" not in result.stderr


def test_load_plugins_env_selects_third_party_plugins(fake_distribution):
    site = fake_distribution("evosuite-good", "evosuite_good", GOOD)
    only_none = run_cli("plugins", "--all", "--json", env={"PYTHONPATH": str(site), "EVOSUITE_LOAD_PLUGINS": ""})
    names = {r["name"] for r in json.loads(only_none.stdout)}
    assert "evosuite_good" not in names and BUILTINS <= names
    chosen = run_cli("plugins", "--json", env={"PYTHONPATH": str(site), "EVOSUITE_LOAD_PLUGINS": "evosuite_good"})
    assert [r["name"] for r in json.loads(chosen.stdout)] == ["evosuite_good"]


def test_hook_version_mismatch_warns(fake_distribution):
    site = fake_distribution("evosuite-future", "evosuite_future", 'EVOSUITE_HOOKS = ">=2"\n' + GOOD)
    result = run_cli("plugins", "--json", env={"PYTHONPATH": str(site)})
    assert result.returncode == 0
    assert "evosuite_future" in result.stderr and ">=2" in result.stderr
