"""The plugin author's path: the example package, `evosuite install`/`uninstall`, and the testing kit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from evosuite import hookimpl, plugin_manager
from evosuite.api import Benchmark, BenchmarkResult, MergeMethod, Optimizer
from evosuite.cli import cli, main
from evosuite.commands import plugins_install
from evosuite.testing import check_benchmark, check_plugin_registrations
from tests.conftest import TESTS_DIR
from tests.toy_plugin import ToyBenchmark

EXAMPLE = TESTS_DIR.parent / "examples" / "evosuite-example-benchmark"


def _environment() -> set[tuple[str, str]]:
    """(name, version) of every distribution installed in the environment's site-packages."""
    site = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    return {(d.metadata["Name"], d.version) for d in metadata.distributions(path=site)}


def _copy_example(tmp_path: Path) -> Path:
    # Built from a copy: an in-tree build would leave build/ and *.egg-info in the repository.
    return Path(shutil.copytree(EXAMPLE, tmp_path / "example",
                                ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache")))


# -- the whole path, as a user meets it ---------------------------------------------------------------
def _layered_environment(tmp_path: Path) -> tuple[Path, Path]:
    """A throwaway virtual environment that sees this one's packages (evosuite, pip, setuptools, pytest).

    What ``evosuite install`` puts there lands in its own site-packages, so ``evosuite uninstall`` can
    remove it (pip refuses to uninstall from a ``--target`` directory) and this environment is untouched.
    """
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    parent = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "_evosuite_parent.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    return python, Path(purelib)


def _start(python: Path, *args: str, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVOSUITE_", "PYTHONPATH"))}
    return subprocess.Popen([str(python), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env={**env, "OMP_NUM_THREADS": "1"})


def _finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return _finish(_start(python, *args, cwd=cwd))


def test_example_installs_lists_evaluates_passes_its_tests_and_uninstalls(tmp_path, evosuite_tiny_llm):
    before = _environment()
    source = _copy_example(tmp_path)
    python, site = _layered_environment(tmp_path)

    # Offline: the build uses the environment's setuptools instead of downloading one into isolation.
    installed = _run(python, "-m", "evosuite", "install", "--no-deps", "--no-build-isolation", str(source),
                     cwd=tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "Installed evosuite plugin 'example_benchmark' from evosuite-example-benchmark 0.1.0 " \
           "(benchmarks: unit-conversion)" in installed.stdout
    assert (site / "evosuite_example_benchmark" / "data" / "unit_conversion.json").is_file()

    # Three independent checks of the installed plugin, run side by side (each one starts torch).
    out = tmp_path / "eval.json"
    listing = _start(python, "-m", "evosuite", "plugins", "--json", cwd=tmp_path)
    evaluation = _start(python, "-m", "evosuite", "eval", "--benchmark", "unit-conversion", "--model",
                        str(evosuite_tiny_llm), "--limit", "3", "--output", str(out), cwd=tmp_path)
    # The example's own tests, with the testing kit's fixtures from evosuite's pytest11 entry point.
    own_tests = _start(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", cwd=source)
    listed, evaluated, tests = _finish(listing), _finish(evaluation), _finish(own_tests)

    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["name"] == "example_benchmark" and row["package"] == "evosuite-example-benchmark"
    assert row["registers"] == {"benchmarks": ["unit-conversion"]}
    assert "Warning" not in listed.stderr  # its EVOSUITE_HOOKS range includes this evosuite

    assert evaluated.returncode == 0, evaluated.stderr
    (result,) = json.loads(out.read_text())["results"]
    assert result["benchmark"] == "unit-conversion" and result["metric"] == "exact_match" and result["n_items"] == 3
    assert 0.0 <= result["score"] <= 1.0 and set(result["metrics"]) == {"exact_match", "char_f1"}

    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "skipped" not in tests.stdout

    removed = _run(python, "-m", "evosuite", "uninstall", "-y", "evosuite-example-benchmark", cwd=tmp_path)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert "Removed evosuite plugin 'example_benchmark' (evosuite-example-benchmark 0.1.0)" in removed.stdout
    assert not list(metadata.distributions(path=[str(site)], name="evosuite-example-benchmark"))
    assert not (site / "evosuite_example_benchmark").exists()
    assert _environment() == before


# -- install / uninstall, in process -----------------------------------------------------------------
class FakePip:
    """Stands in for ``subprocess.run`` of pip: records the command, optionally does something, returns code."""

    def __init__(self, returncode: int = 0, effect=None):
        self.commands: list[list[str]] = []
        self.returncode, self.effect = returncode, effect

    def __call__(self, command, *args, **kwargs):
        self.commands.append(list(command))
        if self.effect:
            self.effect()
        return subprocess.CompletedProcess(command, self.returncode)


@pytest.fixture
def fake_pip(monkeypatch):
    def install(returncode: int = 0, effect=None) -> FakePip:
        pip = FakePip(returncode, effect)
        monkeypatch.setattr(plugins_install.subprocess, "run", pip)
        return pip

    return install


def test_install_hands_every_argument_to_pip_of_this_interpreter(fake_pip):
    pip = fake_pip()
    host = plugin_manager.get_host()
    main(["install", "-e", "./some/plugin", "-U", "--pre", "evosuite-other>=2"])
    assert pip.commands == [[sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                             "-e", "./some/plugin", "-U", "--pre", "evosuite-other>=2"]]
    assert plugin_manager.get_host() is not host  # forgotten: the next lookup loads the new plugin set


def test_uninstall_passes_yes_and_refuses_evosuite_itself(fake_pip, capsys):
    pip = fake_pip()
    main(["uninstall", "-y", "evosuite-example-benchmark"])
    assert pip.commands[0][3:] == ["uninstall", "--disable-pip-version-check", "-y", "evosuite-example-benchmark"]
    with pytest.raises(SystemExit) as info:
        main(["uninstall", "-y", "EvoSuite"])
    assert info.value.code == 2 and len(pip.commands) == 1
    assert capsys.readouterr().err.startswith("Error: refusing to uninstall evosuite itself")


def test_pip_failure_is_one_line_and_exit_2(fake_pip, capsys):
    fake_pip(returncode=1)
    with pytest.raises(SystemExit) as info:
        main(["install", "no-such-plugin"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.strip().splitlines() == [
        "Error: pip install no-such-plugin failed (exit 1) (see pip's message above)"]


PLUGIN = """
from evosuite import hookimpl
from evosuite.api import Benchmark

class Fresh(Benchmark):
    name = "fresh-from-pip"
    description = "installed while evosuite was running"

@hookimpl
def register_benchmarks(register):
    register(Fresh)

@hookimpl
def register_commands(cli):
    @cli.command(name="fresh-hello")
    def hello():
        print("hello from a plugin installed a moment ago")
"""


CLASHING = """
from evosuite import hookimpl
from evosuite.plugins.optimizers import RandomSearch

class Mine(RandomSearch):
    name = "cmaes"

@hookimpl
def register_optimizers(register):
    register(Mine)
"""


def _write_plugin(root: Path, module: str, source: str = PLUGIN) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    dist_info = root / f"{module}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(f"[evosuite]\n{module} = {module}\n")


def test_a_plugin_installed_in_process_is_found_without_a_restart(fake_pip, tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    fake_pip(effect=lambda: _write_plugin(site, "evosuite_fresh"))
    with pytest.raises(Exception, match="fresh-from-pip"):
        plugin_manager.get("benchmarks", "fresh-from-pip")
    main(["install", "evosuite-fresh"])
    assert plugin_manager.get("benchmarks", "fresh-from-pip").name == "fresh-from-pip"
    assert "Installed evosuite plugin 'evosuite_fresh' from evosuite_fresh 1.0 (benchmarks: fresh-from-pip)" \
        in capsys.readouterr().out
    main(["fresh-hello"])  # its register_commands ran too: the new command works in the same process
    assert capsys.readouterr().out == "hello from a plugin installed a moment ago\n"
    cli.commands.pop("fresh-hello", None)
    sys.modules.pop("evosuite_fresh", None)


def test_an_installed_plugin_that_clashes_is_a_warning_not_a_failed_install(fake_pip, tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    monkeypatch.syspath_prepend(str(site))
    fake_pip(effect=lambda: _write_plugin(site, "evosuite_clash", CLASHING))
    main(["install", "evosuite-clash"])  # no SystemExit: pip succeeded
    err = capsys.readouterr().err
    assert "Warning: installed, but the plugins do not load together: optimizer 'cmaes' is registered by both" in err
    sys.modules.pop("evosuite_clash", None)


def test_an_editable_install_pth_file_is_applied_in_process(fake_pip, tmp_path, monkeypatch):
    # pip -e writes a .pth file pointing at the source tree; site only reads .pth files at start-up.
    site, source = tmp_path / "site", tmp_path / "src"
    site.mkdir()
    monkeypatch.setattr(plugins_install, "_site_dirs", lambda: [site])
    monkeypatch.setattr(sys, "path", list(sys.path))

    def editable_install():
        _write_plugin(source, "evosuite_editable")
        (site / "__editable__.evosuite_editable-1.0.pth").write_text(f"{source}\n")

    fake_pip(effect=editable_install)
    main(["install", "-e", str(tmp_path / "checkout")])
    assert str(source) in sys.path
    assert plugin_manager.get("benchmarks", "fresh-from-pip").name == "fresh-from-pip"
    cli.commands.pop("fresh-hello", None)
    sys.modules.pop("evosuite_editable", None)


# -- the testing kit ----------------------------------------------------------------------------------
def test_the_kit_is_loaded_by_pytest_through_its_entry_point(request):
    import evosuite.testing.fixtures

    # pytest registers a pytest11 entry point's module under the entry point's name.
    assert request.config.pluginmanager.get_plugin("evosuite") is evosuite.testing.fixtures


@pytest.mark.parametrize("entry", sorted(
    (ep for ep in metadata.entry_points(group="evosuite") if ep.dist and ep.dist.name == "evosuite"),
    key=lambda ep: ep.name), ids=lambda ep: ep.name)
def test_every_builtin_plugin_passes_the_registration_check(entry):
    report = check_plugin_registrations(entry.load())
    assert report.name == entry.name and report.hooks


class Nameless(Benchmark):
    name = "has space"
    metric = "m"
    splits = ("test",)
    search_split = "search"


class Half(Optimizer):
    name = "half"
    description = "asks but never listens"

    def ask(self):
        return [[0.5] * self.dimension]


class Mixer(MergeMethod):
    name = "mixer"
    description = "adds"

    def merge(self, tensors, base, model_params, global_params, *, generator=None):
        return sum(tensors)


class BadPlugin:
    EVOSUITE_HOOKS = ">=2"

    @hookimpl
    def register_benchmarks(self, register):
        register(Nameless)

    @hookimpl
    def register_optimizers(self, register):
        register(Half)
        register(type("Clash", (Half,), {"name": "cmaes", "popsize": 1, "tell": lambda *a: None}))

    @hookimpl
    def register_merge_methods(self, register):
        register(Mixer)  # a class where an instance is expected

    def register_experiments(self, register):  # forgot @hookimpl
        pass


def test_registration_check_lists_every_problem():
    with pytest.raises(AssertionError) as info:
        check_plugin_registrations(BadPlugin(), name="bad")
    message = str(info.value)
    for expected in ["EVOSUITE_HOOKS = '>=2' excludes", "benchmark 'has space' needs a non-empty `name`",
                     "'has space' needs a one-line `description`",
                     "'has space' does not implement items, predict, score",
                     "search_split 'search' is not one of its splits", "optimizer 'cmaes' is registered by both",
                     "register_experiments is not decorated", "must be registered as an instance"]:
        assert expected in message, message
    assert message.splitlines()[0].startswith("evosuite plugin 'bad': ")


def test_registration_check_catches_unknown_hooks_and_wrong_expectations():
    class Typo:
        @hookimpl
        def register_benchmark(self, register):
            pass

    with pytest.raises(AssertionError, match="does not have"):
        check_plugin_registrations(Typo())

    class Raises:
        @hookimpl
        def register_benchmarks(self, register):
            raise RuntimeError("boom")

    with pytest.raises(AssertionError, match="failed in register_benchmarks: RuntimeError: boom"):
        check_plugin_registrations(Raises())
    from tests import toy_plugin

    report = check_plugin_registrations(toy_plugin, expect={"benchmarks": ["toy-echo"]})
    assert report.registers == {"benchmarks": ["toy-echo"]} and report.hooks_api is None
    with pytest.raises(AssertionError, match="expected"):
        check_plugin_registrations(toy_plugin, expect={"benchmarks": ["other"]})
    assert plugin_manager._host is None  # the process-wide host was not touched


def test_check_benchmark_scores_the_tiny_llm(evosuite_tiny_llm):
    result = check_benchmark(ToyBenchmark, evosuite_tiny_llm, limit=3, options={"items": 5})
    assert result.benchmark == "toy-echo" and len(result.items) == 3
    check_benchmark(ToyBenchmark, evosuite_tiny_llm, limit=3, expected_score=result.score)


class Overconfident(ToyBenchmark):
    name = "overconfident"

    def predict(self, model, items, *, progress=None):
        return super().predict(model, items, progress=progress)[:-1]

    def score(self, items, predictions, *, split):
        return BenchmarkResult("someone-else", split, 1.5, {"char_match": 1.5})


def test_check_benchmark_reports_broken_contracts(evosuite_tiny_llm):
    with pytest.raises(AssertionError, match="predict returned 2 predictions for 3 items"):
        check_benchmark(Overconfident, evosuite_tiny_llm, limit=3)
    Overconfident.predict = ToyBenchmark.predict
    try:
        with pytest.raises(AssertionError) as info:
            check_benchmark(Overconfident, evosuite_tiny_llm, limit=3)
    finally:
        del Overconfident.predict
    assert "result.benchmark is 'someone-else'" in str(info.value) and "in [0, 1], got 1.5" in str(info.value)


def test_tiny_vlm_is_an_image_text_model(evosuite_tiny_vlm, evosuite_tiny_llm):
    from evosuite.models import load_model

    model = load_model(str(evosuite_tiny_vlm))
    assert model.modality == "image-text" and model.adapter == "vlm"
    pictures = type("Pictures", (ToyBenchmark,), {"name": "pictures", "modality": "image-text"})
    with pytest.raises(ValueError, match="needs an image-text model"):
        check_benchmark(pictures, evosuite_tiny_llm)


def test_tiny_run_dir_reads_back_like_a_finished_run(evosuite_tiny_run_dir):
    from evosuite.models import load_model
    from evosuite.run_store import RunStore
    from evosuite.runner import config_from_store

    store = RunStore(evosuite_tiny_run_dir)
    assert store.exists() and store.status()["state"] == "finished"
    evaluations = store.evaluations("ps")
    assert len(evaluations) == 6 and sum(e["error"] is not None for e in evaluations) == 1
    summary = store.read_json("summary.json")
    assert set(store.finals()) == set(summary["test_scores"]) and summary["evaluations"] == 6
    best = max(e["fitness"] for e in evaluations if e["fitness"] is not None)
    assert summary["search_fitness"] == best
    assert config_from_store(store).benchmark.name == "zoo-ja-math"
    assert load_model(str(evosuite_tiny_run_dir / "model")).modality == "text"


def test_plugin_host_fixture_registers_for_one_test(evosuite_plugin_host):
    from tests import toy_plugin

    evosuite_plugin_host.register(toy_plugin)
    assert evosuite_plugin_host.get("benchmarks", "toy-echo") is ToyBenchmark
    assert plugin_manager.get("benchmarks", "toy-echo") is ToyBenchmark
    evosuite_plugin_host.close()
    assert "toy-echo" not in plugin_manager.get_host().registry("benchmarks")
