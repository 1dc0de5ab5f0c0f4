"""Every ```bash and ```python example of README.md and docs/*.md runs, as written, and succeeds.

The pages are read when the tests are collected, so an example changed in the docs is tested as it
now stands. Each page runs in its own temporary working folder (the files its examples name, made
once from the shipped example photo: see tests/docs_examples.py) with its own ``EMOLENS_HOME``;
its blocks run in order, like a reader following the page. ``emolens`` is the CLI of the code under
test; ``pip install -e '.[extra]'`` lines are checked (the extra exists) and not run, since the
test environment has every extra. A block marked ``<!-- not-run: reason -->`` is not run, but its
command lines are still parsed by the CLI, so a renamed command or option fails here too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import docs_examples as dx

TIMEOUT = 300  # seconds for one block


def _page_params():
    params = []
    for path in dx.pages():
        blocks = dx.examples(path)
        if not any(b.skip is None for b in blocks):
            continue
        marks = [pytest.mark.slow] if any(b.slow for b in blocks if b.skip is None) else []
        params.append(pytest.param(path, id=path.name, marks=marks))
    return params


def test_markers_stand_right_before_an_example():
    problems = [p for path in dx.pages() for p in dx.stray_markers(path)]
    assert not problems, "\n".join(problems)


def test_every_command_line_in_the_docs_parses():
    """Run or not, every ``emolens`` line names real commands and options, every extra exists."""
    problems = []
    for path in dx.pages():
        for block in dx.examples(path):
            if block.lang != "bash":
                continue
            for command in dx.shell_commands(block.code):
                args = dx.emolens_args(command)
                why = dx.cli_problem(args) if args is not None else dx.pip_problem(command)
                if why:
                    problems.append(f"{block.where}: {' '.join(command)}\n    {why}")
    assert not problems, "\n".join(problems)


def test_the_parse_check_catches_drift():
    assert dx.cli_problem(["analyze", "x.jpg", "--no-such-option"])
    assert dx.cli_problem(["no-such-command"])
    assert dx.cli_problem(["models", "no-such-verb"])
    assert dx.cli_problem(["analyze", "x.jpg", "--model", "accurate"]) is None
    assert dx.pip_problem(["pip", "install", "-e", ".[identity,nosuch]"])
    assert dx.shell_commands("A=1 emolens x --y | jq .z  # c\nemolens a \\\n  --b > f") == [
        ["emolens", "x", "--y"],
        ["jq", ".z"],
        ["emolens", "a", "--b"],
    ]


@pytest.fixture(scope="session")
def docs_fixtures(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("docs-fixtures")
    dx.build_fixtures(root)
    return root


def _shims(bin_dir: Path) -> None:
    """``emolens``, ``python`` and a checking ``pip`` on PATH; the same under ``.venv/bin``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    scripts = {
        "emolens": f'#!/bin/sh\nexec "{py}" -m emolens.cli "$@"\n',
        "python": f'#!/bin/sh\nexec "{py}" "$@"\n',
        "python3": f'#!/bin/sh\nexec "{py}" "$@"\n',
        "pip": f'#!/bin/sh\nexec "{py}" -c "import sys; sys.path.insert(0, sys.argv.pop(1)); '
        f'import docs_examples; sys.exit(docs_examples.pip_shim(sys.argv[1:]))" "{Path(__file__).parent}" "$@"\n',
        "activate": f'export PATH="{bin_dir}:$PATH"\n',
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)


def _environment(tmp: Path, bin_dir: Path) -> dict[str, str]:
    import emolens

    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMOLENS_", "XDG_"))}
    home = tmp / "home"
    env.update(
        HOME=str(home),
        EMOLENS_HOME=str(home / ".local" / "share" / "emolens"),  # the default place, under this HOME
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(Path(emolens.__file__).parents[1]),
        COLUMNS="120",
        NO_COLOR="1",
    )
    return env


@pytest.mark.parametrize("page", _page_params())
def test_page_examples_run(page: Path, docs_fixtures: Path, tmp_path: Path):
    shutil.copytree(docs_fixtures, tmp_path, dirs_exist_ok=True)
    work = tmp_path / "work"
    _shims(tmp_path / "bin")
    _shims(work / ".venv" / "bin")
    env = _environment(tmp_path, tmp_path / "bin")
    blocks = [b for b in dx.examples(page) if b.skip is None]
    tools = {c[0] for b in blocks if b.lang == "bash" for c in dx.shell_commands(b.code)} & {"jq", "column", "curl"}
    missing = sorted(t for t in tools if shutil.which(t) is None)
    if missing:
        pytest.skip(f"{page.name}: its examples use {', '.join(missing)}, which is not installed")
    for block in dx.examples(page):
        if block.skip is not None:
            continue
        if block.lang == "bash":
            argv = ["bash", "-c", "set -eo pipefail\n" + block.code]
        else:
            (work / "_example.py").write_text(block.code)
            argv = [sys.executable, "_example.py"]
        start = time.monotonic()
        proc = subprocess.run(
            argv, cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL
        )
        print(f"{block.where}: {time.monotonic() - start:.1f} s")  # shown with -s: where the time goes
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{block.where} failed (exit {proc.returncode}):\n{block.code}\n{output[-3000:]}"
        assert "Traceback (most recent call last)" not in output, f"{block.where} printed a traceback:\n{output}"


def test_every_api_url_in_the_examples_is_served(tmp_path):
    """The REST examples are not run (they need a server), but each /api/ path they call is one the
    app serves: a renamed endpoint fails here."""
    from starlette.routing import Match

    from emolens.core.settings import Settings
    from emolens.serve import create_app

    app = create_app(Settings(home=tmp_path / "home"))

    def served(path: str) -> bool:  # the app's own routing decides (HTTP, or the live WebSocket)
        for kind in ("http", "websocket"):
            scope = {"type": kind, "path": path, "root_path": "", "method": "GET", "headers": [], "query_string": b""}
            if any(route.matches(scope)[0] != Match.NONE for route in app.routes):
                return True
        return False

    called = set()
    for path in dx.pages():
        for block in dx.examples(path):
            called |= set(re.findall(r"(?:localhost|127\.0\.0\.1):\d+(/api/[^\s'\"?`)]*)", block.code))
    assert len(called) >= 10, called  # the REST examples were found
    unknown = sorted(p for p in called if not served(p))
    assert not served("/api/v1/no-such-endpoint")
    assert not unknown, f"examples call paths the app does not serve: {unknown}"
