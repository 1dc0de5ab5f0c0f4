"""`emolens serve` and `emolens keys ...`: the REST API and web page, and the keys that guard it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from emolens.cli.console import console, err, fail, workspace
from emolens.cli.outputs import csv_option, emit_csv, emit_json, json_option, machine_to_stdout
from emolens.core.errors import EmoLensError

keys = typer.Typer(
    help="API keys for `emolens serve`. Needed to store feedback (write) or change models (admin).",
    no_args_is_help=True,
)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 for every interface.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=256,
            help="Server processes on one port. They share the database (recent analyses, jobs), the "
            "active model and the metrics; each loads the models once.",
        ),
    ] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level: warning, info, debug.")] = "info",
) -> None:
    """Serve the REST API and the web page.

    The API is under /api/v1 (interactive docs at /docs), the page at /; uvicorn runs the app.

    Limits, timeouts, CORS origins and whether reads need a key are settings: EMOLENS_* variables or config.toml."""
    import uvicorn

    from emolens.store.db import check_writable

    ws = workspace()
    if not ws.settings.allowed_hosts:  # the loopback names and what the server binds (every worker reads it)
        import json

        from emolens.workspace import Workspace

        os.environ["EMOLENS_ALLOWED_HOSTS"] = json.dumps(bound_names(host))
        ws = Workspace(ws.settings.model_copy(update={"allowed_hosts": bound_names(host)}))
    s = ws.settings
    try:
        check_writable(s.db_url)  # the server writes (analyses, feedback, jobs): say so now, not at the first write
        n_keys = ws.keys.count()
    except EmoLensError as exc:
        fail(exc)
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    err.print(f"EmoLens on http://{shown}:{port}/  (API docs: http://{shown}:{port}/docs)")
    err.print(f"on-device app (analyses in the browser, offline): http://{shown}:{port}/app/")
    if n_keys == 0:
        err.print(
            "[yellow]no API keys yet:[/yellow] analysis works, but storing feedback needs one: "
            "emolens keys create NAME --scope write"
        )
    if host not in ("127.0.0.1", "::1", "localhost") and not s.api_read_key_required:
        err.print(
            "[yellow]note:[/yellow] listening beyond this machine, and reads need no key "
            "(EMOLENS_API_READ_KEY_REQUIRED=true changes that)"
        )
    # A live-mode frame may be as big as an upload: uvicorn's WebSocket limit (16 MiB) must not be lower.
    ws_max_size = int(s.max_upload_mb * 1024 * 1024) + 4096
    from emolens.serve.connections import http_protocol

    # Half-open connections are closed after header_timeout_s (uvicorn alone keeps them forever).
    options = {"host": host, "port": port, "log_level": log_level, "ws_max_size": ws_max_size, "http": http_protocol()}
    if workers > 1:
        _share_metrics()
        uvicorn.run("emolens.serve.app:create_app", factory=True, workers=workers, **options)
    else:
        from emolens.serve import create_app

        uvicorn.run(create_app(ws), **options)


def bound_names(host: str) -> list[str]:
    """The Host names a server bound to ``host`` answers by default: the loopback names, ``host``,
    and for every interface (0.0.0.0, ::) this machine's name and addresses."""
    import socket

    from emolens.serve.app import LOOPBACK

    names = [*LOOPBACK, host]
    if host in ("0.0.0.0", "::", ""):
        names += [socket.gethostname(), socket.getfqdn()]
        with contextlib.suppress(OSError):
            names += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)]
    return list(dict.fromkeys(n for n in names if n and n not in ("0.0.0.0", "::")))


def _share_metrics() -> None:
    """Workers add their Prometheus values up in one folder, which must start empty and be set
    before any worker imports the client (they inherit the environment)."""
    import atexit
    import shutil
    import tempfile

    from emolens.serve.metrics import multiprocess_dir

    folder = multiprocess_dir()
    if folder:  # set by the caller (a process manager): theirs to create and clean
        return
    folder = tempfile.mkdtemp(prefix="emolens-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


def _keys():
    """The key store of the configured database."""
    return workspace().keys


@keys.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Who or what uses the key (shown in `keys list`).")],
    scope: Annotated[str, typer.Option(help="read, write (store feedback) or admin (change models).")] = "write",
) -> None:
    """Make a key. The key is printed once, here: it is stored only as a hash."""
    try:
        key, token = _keys().create(name, scope)
    except EmoLensError as exc:
        fail(exc)
    err.print(f"created key {key.key_id} ({escape(key.name)}, scope {key.scope}); keep it now, it is not shown again:")
    console.print(token, soft_wrap=True, highlight=False)


@keys.command("list")
def list_keys(
    all_: Annotated[bool, typer.Option("--all", help="Show revoked keys too.")] = False,
    json_out: Annotated[Path | None, json_option("the keys (never their secrets)")] = None,
    csv_out: Annotated[Path | None, csv_option("one row per key")] = None,
) -> None:
    """The keys, without their secrets."""
    to_stdout = machine_to_stdout(json_out, csv_out)
    try:
        found = _keys().list(include_revoked=all_)
    except EmoLensError as exc:
        fail(exc)
    rows = [
        {"id": k.key_id, "name": k.name, "scope": k.scope, "created": k.created_at.isoformat(),
         "revoked": k.revoked_at.isoformat() if k.revoked_at else None}
        for k in found
    ]  # fmt: skip
    if not (emit_json(json_out, rows) and emit_csv(csv_out, rows, ["id", "name", "scope", "created", "revoked"])):
        raise typer.Exit(1)
    if to_stdout:
        return
    if not found:
        err.print("no keys" + ("" if all_ else " (--all shows revoked ones)"))
        return
    table = Table("id", "name", "scope", "created", "revoked")
    for k in found:
        table.add_row(
            k.key_id,
            escape(k.name),
            k.scope,
            k.created_at.strftime("%Y-%m-%d %H:%M"),
            k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else "",
        )
    console.print(table)


@keys.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (see `emolens keys list`).")]) -> None:
    """Revoke a key.

    Requests with it are refused (403) from now on."""
    try:
        key = _keys().revoke(key_id)
    except EmoLensError as exc:
        fail(exc)
    err.print(f"revoked key {key.key_id} ({escape(key.name)})")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``emolens`` app."""
    app.command()(serve)
    app.add_typer(keys, name="keys")
