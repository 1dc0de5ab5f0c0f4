"""The ``emolens`` app: built here from the command modules, one per capability.

Each module (``analyze``, ``evaluate``, ``train``, ``export``, ``explain``, ``feedback``, ``video``...)
keeps its verbs and adds them with ``register(app)``; what they share is in ``emolens.cli.console``.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from emolens.cli import (
    analyze,
    attendance,
    batch,
    compare,
    evaluate,
    explain,
    export,
    feedback,
    people,
    serve,
    shadow,
    synth,
    train,
    video,
)
from emolens.cli.console import EmoLensGroup, console, print_error
from emolens.core.errors import EmoLensError

# The order of `emolens --help`: the image pipeline first, then each capability beside it.
COMMAND_MODULES = (
    analyze,
    evaluate,
    train,
    export,
    explain,
    feedback,
    people,
    attendance,
    video,
    serve,
    synth,
    batch,
    compare,
    shadow,
)


class _App(typer.Typer):
    """The ``emolens`` app: an EmoLensError that no command caught (a missing extra met on import,
    say) still ends as one line and exit code 2, never a traceback."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except EmoLensError as exc:
            print_error(exc)
            sys.exit(2)


app = _App(
    cls=EmoLensGroup,  # one line, never a traceback, for whatever a command lets through
    help="EmoLens: find faces and read their emotions, offline.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Click's plain help: paragraphs re-wrapped to the terminal, flags without a "<bool>" type.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from emolens import __version__

        typer.echo(f"emolens {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the EmoLens version and exit."),
    ] = False,
) -> None:
    """EmoLens: find faces and read their emotions, offline."""
    console.stderr = False  # human output goes to stdout unless a command sends machine output there


def _register_commands() -> None:
    for module in COMMAND_MODULES:
        module.register(app)
    groups = list(app.registered_groups)
    while groups:  # every sub-command group gets the same plain help as the app
        info = groups.pop()
        info.typer_instance.rich_markup_mode = None
        groups += info.typer_instance.registered_groups


_register_commands()
