"""``evosuite install`` and ``evosuite uninstall``: pip, run in evosuite's own environment.

Both run ``python -m pip`` with the interpreter evosuite runs on, so a plugin lands where evosuite finds
it whatever ``pip`` comes first on the PATH. Every argument goes to pip unchanged (names, paths, ``-e``,
``-U``, ``--pre``, ``--target``...). After a change the process-wide plugin host is forgotten, so the next
lookup in the same process (a notebook, a test calling ``evosuite.cli.main``) loads the new plugin set.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import click

from evosuite.cli import cli
from evosuite.errors import EvosuiteError
from evosuite.plugin_manager import BUILTIN_DISTRIBUTION, ENTRY_POINT_GROUP, get_host, reset_host


class InstallError(EvosuiteError):
    """pip failed, or cannot run, in evosuite's environment."""


def _plugin_entry_points() -> dict[str, tuple[str, str]]:
    """Entry name -> (distribution, version) of every plugin in the ``evosuite`` group, built-ins included."""
    return {ep.name: (ep.dist.name if ep.dist else "?", ep.dist.version if ep.dist else "?")
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _site_dirs() -> list[Path]:
    import site

    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return [Path(d) for d in dict.fromkeys(dirs) if Path(d).is_dir()]


def _pth_files() -> set[Path]:
    return {p for d in _site_dirs() for p in d.glob("*.pth")}


def _activate_pth(pth: Path) -> None:
    """Apply one new ``.pth`` file as ``site`` would at start-up (editable installs use them)."""
    for line in pth.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith(("import ", "import\t")):
            exec(line)  # noqa: S102 - exactly what the site module does with such lines
            continue
        entry = os.path.normpath(os.path.join(pth.parent, line.rstrip()))
        if os.path.exists(entry) and entry not in sys.path:
            sys.path.append(entry)


def _run_pip(action: str, args: list[str]) -> None:
    if importlib.util.find_spec("pip") is None:
        raise InstallError(f"pip is not installed in evosuite's environment ({sys.executable})",
                           f"run `{sys.executable} -m ensurepip`, or use your environment's installer")
    command = [sys.executable, "-m", "pip", action, "--disable-pip-version-check", *args]
    try:
        code = subprocess.run(command).returncode
    except OSError as exc:
        raise InstallError(f"cannot run pip: {exc}", f"check that {sys.executable} can run") from None
    if code != 0:
        raise InstallError(f"pip {action} {' '.join(args)} failed (exit {code})", "see pip's message above")


def _refresh() -> None:
    importlib.invalidate_caches()
    reset_host()


def _report(before: dict[str, tuple[str, str]], installed: bool) -> None:
    after = _plugin_entry_points()
    if installed:
        changed = sorted(name for name, dist in after.items() if before.get(name) != dist)
        if not changed:
            return
        try:
            rows = {row["name"]: row for row in get_host().plugins(include_builtin=True)}
        except EvosuiteError as exc:  # installed, but it clashes with another plugin: say so, do not fail
            click.echo(f"Warning: installed, but the plugins do not load together: {exc}", err=True)
            return
        for name in changed:
            dist, version = after[name]
            row = rows.get(name)
            if row is None:  # it failed to load: the host has printed a warning saying why
                continue
            what = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in row["registers"].items())
            click.echo(f"Installed evosuite plugin {name!r} from {dist} {version}" + (f" ({what})" if what else ""))
    else:
        for name in sorted(set(before) - set(after)):
            dist, version = before[name]
            click.echo(f"Removed evosuite plugin {name!r} ({dist} {version})")


_PASS_THROUGH = {"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]}


@cli.command(name="install", context_settings=_PASS_THROUGH)
@click.argument("pip_args", nargs=-1, required=True, type=click.UNPROCESSED, metavar="PACKAGE... [PIP OPTIONS]")
def install_command(pip_args: tuple[str, ...]) -> None:
    """Install plugin packages into evosuite's own environment, with pip.

    Everything is handed to `python -m pip install` of the interpreter evosuite runs on: package names,
    local paths, `-e PATH` (editable), `-U` (upgrade), `--pre`, `--no-build-isolation`... The new plugins
    appear in `evosuite plugins` and work in `eval` and `run` at once.

    \b
    evosuite install evosuite-example-benchmark
    evosuite install -e ./examples/evosuite-example-benchmark
    evosuite install -U 'evosuite-example-benchmark>=0.2'
    """
    before = _plugin_entry_points()
    pth_before = _pth_files()
    _run_pip("install", list(pip_args))
    for pth in sorted(_pth_files() - pth_before):
        _activate_pth(pth)
    _refresh()
    _report(before, installed=True)


@cli.command(name="uninstall", context_settings=_PASS_THROUGH)
@click.argument("pip_args", nargs=-1, required=True, type=click.UNPROCESSED, metavar="PACKAGE... [PIP OPTIONS]")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def uninstall_command(pip_args: tuple[str, ...], yes: bool) -> None:
    """Uninstall plugin packages from evosuite's own environment, with pip (`python -m pip uninstall`)."""
    for arg in pip_args:
        if not arg.startswith("-") and _canonical(arg) == BUILTIN_DISTRIBUTION:
            raise InstallError("refusing to uninstall evosuite itself from evosuite",
                               f"run `{sys.executable} -m pip uninstall evosuite` if that is what you want")
    before = _plugin_entry_points()
    _run_pip("uninstall", [*(["-y"] if yes else []), *pip_args])
    _refresh()
    _report(before, installed=False)


def _canonical(name: str) -> str:
    """The distribution a pip argument names: 'evosuite[ray]', 'evosuite==0.1' and 'Evo_Suite' all count."""
    import re

    project = re.split(r"[\[<>=!~;@\s(]", name.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", project).lower()
