"""The ``evosuite`` command line: a thin layer over the Python API.

Commands that belong to a plugin (``zoo``...) are added through the ``register_commands`` hook.
Known failures (``EvosuiteError``) print one line, ``Error: <what> (<how to fix>)``, and exit 2.
"""

from __future__ import annotations

import json
import signal
import sys
import threading

import click

from evosuite import __version__
from evosuite.errors import EvosuiteError, Terminated
from evosuite.plugin_manager import get_host


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="evosuite")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Evolutionary model merging: evolve merges of open models against a benchmark."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@cli.command(name="plugins")
@click.option("--all", "show_all", is_flag=True, help="Include the built-in plugins.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins_command(show_all: bool, as_json: bool) -> None:
    """List installed plugins, the hooks each implements and what it registers."""
    rows = get_host().plugins(include_builtin=show_all)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="evosuite plugins" + (" (built-ins included)" if show_all else ""))
    for column in ("name", "package", "version", "hooks", "registers"):
        table.add_column(column)
    for row in rows:
        registers = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in row["registers"].items())
        hooks = ", ".join(h.removeprefix("register_") for h in row["hooks"])
        table.add_row(row["name"], row["package"], row["version"], hooks, registers)
    console = Console()
    if not rows:
        console.print("No third-party plugins installed. `evosuite plugins --all` shows the built-ins.")
    else:
        console.print(table)


def _add_plugin_commands() -> None:
    host = get_host()
    for impl in reversed(host.pm.hook.register_commands.get_hookimpls()):
        try:
            impl.function(cli=cli)
        except Exception as exc:
            host.warn(f"plugin {impl.plugin_name!r} failed in register_commands: {type(exc).__name__}: {exc}")


def _add_space_flags() -> None:
    from evosuite.commands.run import add_space_flags

    try:
        add_space_flags(cli.commands["run"])
    except Exception as exc:  # a broken space plugin must not break every command
        get_host().warn(f"the merge spaces' command-line flags are unavailable: {type(exc).__name__}: {exc}")


def _load_builtin_commands() -> None:
    # Core commands live in their own modules; importing them attaches them to ``cli``.
    from evosuite import commands  # noqa: F401


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like Ctrl-C: temporary folders are removed and status.json says "terminated".
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        _load_builtin_commands()
        _add_plugin_commands()
        _add_space_flags()
        cli.main(args=argv, prog_name="evosuite", standalone_mode=False)
    except EvosuiteError as exc:
        if debug:
            raise
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # the disk, not the input: full, read-only, or a path that cannot be made
        if debug:
            raise
        click.echo(f"Error: {_os_error_line(exc)}", err=True)
        sys.exit(2)
    except Terminated:
        click.echo("Terminated.", err=True)
        sys.exit(143)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except click.exceptions.Abort as exc:  # click turns KeyboardInterrupt (and so SIGTERM) into Abort
        if isinstance(exc.__cause__, Terminated):
            click.echo("Terminated.", err=True)
            sys.exit(143)
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


def _os_error_line(exc: OSError) -> str:
    import errno

    where = f": {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space, then retry; a stopped run continues with `evosuite resume RUN_DIR`"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the folder writable or choose another one"
    else:
        fix = "check the path and the disk"
    return f"{exc.strerror or exc}{where} ({fix})"
