"""`emolens attendance ...`: sessions that record who was present."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``emolens`` app."""
