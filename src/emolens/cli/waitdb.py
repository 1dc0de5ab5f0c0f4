"""`python -m emolens.cli.waitdb`: wait until the configured database answers, and migrate it.

The container's entrypoint runs it before the server starts, so a PostgreSQL server that is still
starting is waited for (with a deadline) instead of failing every worker at once.
"""

from __future__ import annotations

import argparse
import sys

from sqlalchemy.exc import OperationalError

from emolens.store.wait import wait_for_database
from emolens.workspace import Workspace


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the database")
    args = ap.parse_args(argv)
    try:
        shown = wait_for_database(Workspace().db_url, args.timeout)
    except OperationalError as exc:
        print(f"emolens: the database did not answer within {args.timeout:g} s: {exc.orig}", file=sys.stderr)
        return 2
    print(f"emolens: database ready ({shown})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
