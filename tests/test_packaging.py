"""The folders map onto the `evosuite` import names in both editable and normal (wheel) installs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"suite": "evosuite", "plugins": "evosuite.plugins", "benchmarks": "evosuite.benchmarks"}


def packages_on_disk() -> set[str]:
    found = set()
    for folder, name in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *relative.parts]))
    return found


def test_every_package_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    assert packages_on_disk() <= listed, f"add to [tool.setuptools] packages: {sorted(packages_on_disk() - listed)}"


def test_the_wheel_holds_every_package_and_data_file(tmp_path):
    # Build from a copy: a build leaves egg-info metadata behind, which must not shadow the installed one.
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "*.egg-info", "build",
                                                                "__pycache__", ".pytest_cache", ".ruff_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("evosuite-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in packages_on_disk():
        assert package.replace(".", "/") + "/__init__.py" in names, package
    assert "evosuite/architectures.json" in names
    assert any(n.startswith("evosuite/benchmarks/fixtures/") and n.endswith(".parquet") for n in names)
    assert ("evosuite/benchmarks/fixtures/mgsm-ja/SakanaAI/gsm8k-ja-test_250-1319/gsm8k-ja-test_250-1319.jsonl"
            in names)  # the hub repository's one JSON-lines file
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[evosuite]" in text and "ps = evosuite.plugins.ps_space" in text
