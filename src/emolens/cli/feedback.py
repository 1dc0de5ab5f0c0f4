"""`emolens feedback ...`, `emolens finetune` and `emolens models ...`: learning from corrections."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``emolens`` app."""
