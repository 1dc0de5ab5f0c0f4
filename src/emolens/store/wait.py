"""Waiting until a database answers, and migrating it (``python -m emolens.cli.waitdb`` runs it
for the configured database)."""

from __future__ import annotations

import time

from sqlalchemy.exc import OperationalError


def wait_for_database(url: str, timeout_s: float = 60.0) -> str:
    """The database URL (password hidden) once it answers and is migrated; raises after ``timeout_s``."""
    from emolens.store.db import get_engine

    deadline = time.monotonic() + timeout_s
    delay = 0.5
    while True:
        try:
            return get_engine(url).url.render_as_string(hide_password=True)
        except OperationalError:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
