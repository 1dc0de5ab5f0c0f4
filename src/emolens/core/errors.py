"""Typed errors. Each message says what went wrong and what the user can do about it.

The CLI prints the message (no traceback); the REST API maps each class to an HTTP status.
"""

from __future__ import annotations


class EmoLensError(Exception):
    """Base class for every error EmoLens raises on purpose."""

    http_status = 500


class BadImageError(EmoLensError):
    """The input is not a decodable image, is corrupt, or is too large."""

    http_status = 422


class ImageTooLargeError(BadImageError):
    http_status = 413


class ModelError(EmoLensError):
    """A model file is missing, corrupt, or lacks the EmoLens metadata."""

    http_status = 500


class ModelNotFoundError(ModelError):
    http_status = 404


class BadLabelError(EmoLensError):
    """A label is not in the model's or dataset's label set."""

    http_status = 422


class NotFoundError(EmoLensError):
    """Something asked for by id does not exist: a feedback record, a model version, a person."""

    http_status = 404


class AmbiguousError(EmoLensError):
    """A short id or prefix that matches several things; the message lists them."""

    http_status = 409


class StorageError(EmoLensError):
    """Something could not be stored (full disk, read-only folder, unreachable database)."""

    http_status = 507


class RefusedError(EmoLensError):
    """A request that is well-formed but refused by a rule (too little feedback, a failed gate)."""

    http_status = 409


class MissingExtraError(EmoLensError, ImportError):
    """An optional dependency is missing; the message names the pip command that installs it."""

    http_status = 501

    def __init__(self, extra: str, module: str):
        # EmoLens is installed from its source folder, not from PyPI: 'emolens[x]' would fail.
        super().__init__(
            f"this feature needs the optional package {module!r}; "
            f"install it from the EmoLens folder with: pip install -e '.[{extra}]'"
        )
        self.extra, self.module = extra, module


def require(module: str, extra: str, package: str | None = None):
    """Import an optional module or raise MissingExtraError naming the extra that provides it.

    ``package`` is the name users know when it differs from the module (scikit-learn/sklearn)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(extra, package or module.split(".")[0]) from exc
