"""`python -m emolens.store.wait`: wait until the configured database answers, and migrate it.

The container's entrypoint runs it before the server starts, so a PostgreSQL server that is still
starting is waited for (with a deadline) instead of failing every worker at once.
"""

from __future__ import annotations

import argparse
import sys
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the database")
    args = ap.parse_args(argv)
    try:
        from emolens.workspace import Workspace  # an entry point: the process's database

        shown = wait_for_database(Workspace().db_url, args.timeout)
    except OperationalError as exc:
        print(f"emolens: the database did not answer within {args.timeout:g} s: {exc.orig}", file=sys.stderr)
        return 2
    print(f"emolens: database ready ({shown})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
