"""Where every command writes, and its machine output, the same way everywhere.

Files go where the user says (``--out``, ``--save``, an OUTPUT argument), else under one default
place: ``./emolens-output/<command>/``. Nothing is ever written inside the installed package.

Every command that reports takes ``--json FILE|-`` (and ``--csv FILE|-`` where its report is rows):
``-`` is stdout, and then the human output (tables, notes) goes to stderr.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import typer

from emolens.cli.console import human_to_stderr, json_text, write_output
from emolens.core.fileio import refuse_package

OUTPUT_ROOT = Path("emolens-output")


def default_place(command: str, *parts: str) -> Path:
    """The default output of ``command``: ``emolens-output/<command>/<parts...>`` in the current folder."""
    return OUTPUT_ROOT.joinpath(command, *parts)


def output_place(given: Path | None, command: str, *parts: str) -> Path:
    """``given`` when the user named a place, else the command's default; never inside the package
    (``PackageWriteError``, an ``EmoLensError``)."""
    return refuse_package(given if given is not None else default_place(command, *parts))


def json_option(what: str) -> typer.models.OptionInfo:
    """``--json FILE|-``: write ``what`` as JSON to FILE, or to stdout with ``-``."""
    return typer.Option("--json", metavar="FILE|-", help=f"Write {what} as JSON to FILE ('-': stdout).")


def csv_option(what: str) -> typer.models.OptionInfo:
    """``--csv FILE|-``: write ``what`` as CSV rows to FILE, or to stdout with ``-``."""
    return typer.Option("--csv", metavar="FILE|-", help=f"Write {what} as CSV to FILE ('-': stdout).")


def machine_to_stdout(*targets: Path | None) -> bool:
    """True when a machine format goes to stdout; the human output then moves to stderr."""
    human_to_stderr(*targets)
    return any(t is not None and str(t) == "-" for t in targets)


def emit_json(target: Path | None, data: object) -> bool:
    """Write ``data`` as JSON to ``target`` (``-``: stdout); nothing when ``target`` is None. Success?"""
    if target is None:
        return True
    return write_output(target, json_text(data, indent=2, default=str))


def csv_text(rows: list[dict], fields: list[str] | None = None) -> str:
    """``rows`` as CSV with a header: ``fields``, else every key met, in order of first appearance."""
    buffer = io.StringIO()
    names = fields or list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buffer, fieldnames=names or ["source"], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buffer.getvalue()


def emit_csv(target: Path | None, rows: list[dict], fields: list[str] | None = None) -> bool:
    """Write ``rows`` as CSV to ``target`` (``-``: stdout); nothing when ``target`` is None. Success?"""
    return emit_text(target, csv_text(rows, fields))


def emit_text(target: Path | None, text: str) -> bool:
    """Write ``text`` (a whole CSV, say) to ``target`` (``-``: stdout, ending in one newline). Success?"""
    if target is None:
        return True
    return write_output(target, text.rstrip("\n") if str(target) == "-" else text)


def _cell(value: object) -> object:
    """Lists and mappings in a CSV cell: words or numbers separated by spaces (the landmarks: ten
    numbers), else JSON."""
    if isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
        return " ".join(map(str, value))
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str)
    return value
