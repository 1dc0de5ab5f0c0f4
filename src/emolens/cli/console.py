"""What every command of the ``emolens`` app shares: the Rich consoles, one-line errors, and
writing machine output (``--json``, ``--csv``) to a file or to stdout.

Every command module imports these from here, never from ``emolens.cli.main`` (which imports the
command modules to build the app): so the command line has no import cycle.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from emolens.errors import EmoLensError

console = Console()
err = Console(stderr=True, soft_wrap=True)  # one message per line, file names never broken


def human_to_stderr(*targets: Path | str | bool | None) -> None:
    """When a machine format goes to stdout (``--json -``, ``--csv -``, a ``--json`` flag), send the
    human output (tables, notes) to stderr, so that stdout can be piped into a parser."""
    if any(t is True or (t is not None and t is not False and str(t) == "-") for t in targets):
        console.stderr = True


def print_error(exc: EmoLensError | str) -> None:
    """The one line an error gets: ``error: <message>`` on stderr."""
    err.print(f"[red]error:[/red] {escape(str(exc))}")


def fail(exc: EmoLensError, code: int = 2) -> None:
    """Print the error's one line and end the command with ``code`` (2: the user can fix it)."""
    print_error(exc)
    raise typer.Exit(code)


def write_output(target: Path, text: str) -> bool:
    """Write an output file whole (via a temporary file; ``-`` is stdout), or say why not; returns success."""
    if str(target) == "-":
        sys.stdout.write(text + "\n")
        return True
    from emolens.fileio import refuse_package

    try:
        refuse_package(target)
    except EmoLensError as exc:
        print_error(exc)
        return False
    tmp = target.with_name(target.name + ".tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        tmp.replace(target)
        return True
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        err.print(f"[red]error:[/red] could not write {escape(str(target))}: {escape(str(exc))}")
        return False
