"""Emotion models by name: the spec a user writes (``ModelSpec``), the one resolver of names,
versions and paths (``ModelResolver``), the table of shipped and user models (``catalog``) and
the registry of versions (``registry``)."""

from emolens.models.catalog import ASSETS, shipped_models
from emolens.models.resolve import ModelResolver, ModelSpec, clear_model_cache

__all__ = ["ASSETS", "ModelResolver", "ModelSpec", "clear_model_cache", "shipped_models"]
