"""`emolens serve` and `emolens keys ...`: the REST API and web page."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``emolens`` app."""
