"""Every command of the ``emolens`` app, found by walking the app (a new command is covered without
a new test), given bad arguments: it answers with one ``error:`` line and exit code 1 or 2, never a
traceback. Numbers out of range are refused before anything runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from emolens.cli import app

SRC = Path(__import__("emolens").__file__).resolve().parents[1]  # the sources under test, for subprocesses
MISSING = "{missing}"  # becomes a path under a regular file: it cannot exist nor be created, even by root


def commands():
    """(words, click command) for every command and sub-command of the app."""

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, cmd

    return list(walk(get_command(app), []))


def kind(param) -> str:
    annotation = str(param.type_descriptor.annotation)
    return "int" if "int" in annotation else "float" if "float" in annotation else "other"


def numeric(cmd) -> list:
    return [p for p in cmd.params if p.param_type_name == "option" and kind(p) in ("int", "float")]


def flag(param) -> str:
    return next(o for o in param.opts if o.startswith("--"))


def with_missing_inputs(cmd) -> list[str]:
    """The command's required arguments and options, each a file that does not exist; a command
    that requires nothing gets its first path option set to one, else an out-of-range number,
    else an argument it does not take."""
    args, options = [], []
    for p in cmd.params:
        if p.required and p.param_type_name == "argument":
            args.append(MISSING)
        elif p.required:
            options += [flag(p), MISSING]
    if args or options:
        return options + args
    paths = [p for p in cmd.params if p.param_type_name != "argument" and "Path" in str(p.type_descriptor.annotation)]
    if paths:
        return [flag(paths[0]), MISSING]
    if numeric(cmd):
        return out_of_range(cmd)
    return ["nosuch-argument"]


def out_of_range(cmd) -> list[str]:
    """The command's required inputs (missing files) and its first numeric option far below its range."""
    base = []
    for p in cmd.params:
        if p.required:
            base += [MISSING] if p.param_type_name == "argument" else [flag(p), MISSING]
    p = numeric(cmd)[0]
    return [flag(p), "-1e30" if kind(p) == "float" else str(-(10**30)), *base]


COMMANDS = commands()
# Commands whose inputs are not files: a bad value of their own instead.
BAD = {"keys create": ["bot", "--scope", "nosuch"]}


def test_the_walk_finds_every_command():
    names = {" ".join(words) for words, _ in COMMANDS}
    assert {"analyze", "batch", "serve", "data filter", "data merge", "models shadow promote", "keys revoke"} <= names
    assert len(names) >= 45


def test_every_numeric_option_has_a_range():
    """Typer ranges (``min=``, ``max=``) on every int and float option: both ends, so that inf and
    nan are refused as well as negative counts and thresholds."""
    unbounded = [
        f"{' '.join(words)} {flag(p)}" for words, cmd in COMMANDS for p in numeric(cmd) if None in (p.min, p.max)
    ]
    assert not unbounded, unbounded


def invoke(args: list[str], tmp_path: Path | None = None):
    if tmp_path is not None:
        (tmp_path / "a-file").write_text("not a folder")
        args = [a.replace(MISSING, str(tmp_path / "a-file" / "missing.xyz")) for a in args]
    result = CliRunner().invoke(app, args)
    unexpected = result.exception if not isinstance(result.exception, SystemExit) else None
    return result, unexpected


@pytest.mark.parametrize(("words", "cmd"), COMMANDS, ids=[" ".join(w) for w, _ in COMMANDS])
def test_every_command_with_a_missing_file_ends_in_one_error_line(words, cmd, emolens_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever a command writes by default stays here
    args = [*words, *BAD.get(" ".join(words), with_missing_inputs(cmd))]
    result, unexpected = invoke(args, tmp_path)
    assert unexpected is None, f"{args}: {unexpected!r}"
    assert result.exit_code in (1, 2), f"{args}: exit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output
    # exit 2: one error line; exit 1: some files failed, each named on its own line
    said = "error:" in result.output if result.exit_code == 2 else "missing.xyz" in result.output
    assert said, f"{args}: {result.output}"


NUMERIC = [(w, c) for w, c in COMMANDS if numeric(c)]


@pytest.mark.parametrize(("words", "cmd"), NUMERIC, ids=[" ".join(w) for w, _ in NUMERIC])
def test_every_command_refuses_a_number_out_of_range_in_one_line(words, cmd, emolens_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [*words, *out_of_range(cmd)]
    result, unexpected = invoke(args, tmp_path)
    assert unexpected is None, f"{args}: {unexpected!r}"
    assert result.exit_code == 2, f"{args}: exit {result.exit_code}\n{result.output}"
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and args[len(words)] in lines[0], result.output


@pytest.mark.parametrize(
    "args",
    [
        ["analyze", "--threshold", "-1"],
        ["analyze", "--threshold", "nan"],
        ["analyze", "--min-face-size", "0"],
        ["identify", "--threshold", "-0.5", "photo.jpg"],
        ["video", "--every", "-1", "clip.mp4"],
        ["video", "--smooth", "inf", "clip.mp4"],
        ["batch", "--workers", "-2", "in", "out"],
        ["batch", "--shard-size", "0", "in", "out"],
        ["data", "merge", "--val-fraction", "-0.1", "real", "synthetic"],
        ["data", "merge", "--max-total-share", "1.5", "real", "synthetic"],
        ["data", "filter", "--duplicates", "100000000000000000000", "folder"],
        ["serve", "--port", "70000"],
    ],
    ids=lambda a: " ".join(a),
)
def test_the_reviews_bad_numbers_are_refused_in_one_line(args, emolens_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result, unexpected = invoke(args)
    assert unexpected is None and result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    option = next(a for a in args if a.startswith("--"))
    assert len(lines) == 1 and lines[0].startswith("error: Invalid value for") and option in lines[0], result.output


def run_cli(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOLENS_")} | {"PYTHONPATH": str(SRC)} | env
    return subprocess.run(
        [sys.executable, "-m", "emolens.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("args", [["export", "fast", "fast2.onnx"], ["export", "nosuch.pt", "x.onnx"]])
def test_export_of_what_is_not_a_checkpoint_is_one_line(args, tmp_path):
    proc = run_cli(*args, env={"EMOLENS_HOME": str(tmp_path / "home")}, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "no such checkpoint" in proc.stderr and args[1] in proc.stderr


def read_only_database(tmp_path: Path) -> dict:
    """A database EmoLens may not write: SQLite opened read-only (``mode=ro``), which refuses writes
    whoever runs the test (a read-only file does not stop root)."""
    db = tmp_path / "ro.db"
    db.touch()
    return {"EMOLENS_HOME": str(tmp_path / "home"), "EMOLENS_DATABASE_URL": f"sqlite:///file:{db}?mode=ro&uri=true"}


@pytest.mark.parametrize(
    "args", [["feedback", "list"], ["people", "list"], ["keys", "create", "bot"], ["serve", "--port", "18765"]]
)
def test_a_read_only_database_is_one_line_and_exit_2(args, tmp_path):
    """``serve`` included: it checks that it can write before it starts listening."""
    started = time.monotonic()
    proc = run_cli(*args, env=read_only_database(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: the database cannot be written"), lines
    assert time.monotonic() - started < 100


def test_usage_errors_name_the_command_and_its_help(emolens_home):
    result, _ = invoke(["analyze", "--no-such-option"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: No such option: --no-such-option (see: root analyze --help)"
