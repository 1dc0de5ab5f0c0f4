"""What every command of the ``emolens`` app shares: the Rich consoles, one-line errors, and
writing machine output (``--json``, ``--csv``) to a file or to stdout.

Every command module imports these from here, never from ``emolens.cli.main`` (which imports the
command modules to build the app): so the command line has no import cycle.
"""

from __future__ import annotations

import errno
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from typer import _click
from typer.core import TyperGroup
from typer.exceptions import TyperException

from emolens.core.errors import EmoLensError

if TYPE_CHECKING:
    from emolens.workspace import Workspace

console = Console()
err = Console(stderr=True, soft_wrap=True)  # one message per line, file names never broken


# The detector's options, the same on every command that detects faces.
MinFaceSize = Annotated[
    int | None, typer.Option(min=1, max=100_000, help="Ignore faces smaller than this many pixels.")
]
DetectionThreshold = Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Detection score threshold.")]
MaxFaces = Annotated[int | None, typer.Option(min=1, max=10_000, help="Keep at most this many faces per image.")]


def workspace() -> Workspace:
    """The command's composition root (``emolens.workspace``), built once from the process's
    settings: every command takes its models, analyzers and stores from it."""
    from emolens.workspace import Workspace

    return Workspace.default()


def build_analyzer(model=None, detector=None, **options):
    """An ``Analyzer`` of the command's workspace (``model`` default: the ``model`` setting)."""
    from emolens.pipeline.analyzer import Analyzer

    return Analyzer(model, detector, workspace=workspace(), **options)


def feedback_service():
    """The feedback service of the command's workspace."""
    from emolens.feedback import FeedbackService

    return FeedbackService(workspace().feedback_store)


def enrolled_people():
    """The enrolled people of the command's workspace."""
    from emolens.identify.gallery import People

    return People(workspace=workspace())


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


def require_inputs(**paths: Path | None) -> None:
    """Refuse at once (one line, exit 2) an input file or folder that does not exist: before a
    command loads heavy modules (PyTorch takes seconds) only to find out. Keys are the option names."""
    for name, path in paths.items():
        if path is not None and not Path(path).exists():
            what = name if name.isupper() else "--" + name.replace("_", "-")  # DATA: an argument
            fail(EmoLensError(f"{what}: no such file or folder: {path}"))


def json_text(data, **options) -> str:
    """``json.dumps`` that always writes valid JSON: a non-finite number (which Python would write
    as the invalid ``Infinity`` or ``NaN``) becomes null."""

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(data), allow_nan=False, **options)


def write_output(target: Path, text: str) -> bool:
    """Write an output file whole (via a temporary file; ``-`` is stdout), or say why not; returns success."""
    if str(target) == "-":
        sys.stdout.write(text + "\n")
        return True
    from emolens.core.fileio import refuse_package

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


def describe_failure(exc: BaseException) -> str | None:
    """The one line for an error the user (or the machine) caused and no command caught: a file or
    folder that is missing or cannot be written, a database that cannot be written. None: a bug,
    left to its traceback."""
    if isinstance(exc, EmoLensError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno != errno.EPIPE:
        where = f": {exc.filename}" if exc.filename else ""
        hint = {
            errno.ENOENT: "",
            errno.EACCES: " (check its permissions)",
            errno.EROFS: " (a read-only file system)",
            errno.ENOSPC: " (free some space)",
        }.get(exc.errno or 0, "")
        return f"{exc.strerror or exc}{where}{hint}"
    db_errors = sys.modules.get("sqlalchemy.exc")  # loaded only where a command used the database
    if db_errors is not None and isinstance(exc, db_errors.DBAPIError):
        reason = str(exc.orig).strip() or type(exc.orig).__name__
        if "readonly" in reason or "read-only" in reason or "unable to open" in reason:
            return (
                f"the database cannot be written ({reason}): check the permissions of the database file "
                "and its folder ($EMOLENS_HOME), or set EMOLENS_DATABASE_URL"
            )
        return f"database error: {reason}"
    return None


class EmoLensGroup(TyperGroup):
    """The ``emolens`` app's root group: whatever a command lets through ends as one line on stderr,
    never a traceback. A usage mistake (a bad value, a missing argument) is one ``error:`` line and
    exit code 2; an EmoLensError, a missing or unwritable file or an unwritable database too."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _click.exceptions.NoArgsIsHelpError:
            raise
        except _click.exceptions.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            print_error(f"{exc.format_message()} (see: {where} --help)")
            raise typer.Exit(exc.exit_code) from None
        except (TyperException, typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            message = describe_failure(exc)
            if message is None:
                raise
            print_error(message)
            raise typer.Exit(2) from None
