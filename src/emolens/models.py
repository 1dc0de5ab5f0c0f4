"""Models by name or path, the same way everywhere.

A name is looked up among the models shipped in ``emolens/assets`` (``fast``, ...), then among
the user's models in ``$EMOLENS_HOME/models``; ``active`` and ``v1``, ``v2``... are versions in
the model registry (``active`` is the shipped ``fast`` while the registry is empty). Anything
that is an existing file is a path.

``adaptive`` routes each face to ``fast`` when it is clear and to ``robust`` when it is soft or
noisy (``emolens.classify.routed``). An ensemble is several of these joined by ``+`` (or ``,``),
each optionally weighted with ``*W``: ``fast+accurate``, ``accurate*3+fast``; in Python also a
list (``["fast", "accurate"]``) or a mapping of names to weights. ``model_spec`` turns any of
these into the one string every interface takes (``--model``, ``EMOLENS_MODEL``, ``Analyzer(model=...)``).

``ModelResolver`` is the one place names are resolved, for one ``$EMOLENS_HOME``: ``versions``
replaces ``active`` by the version that runs now, ``path`` gives the file of one model, and
``load`` loads a spec, an ``EnsembleModel`` when it has several members or mirror TTA. The model
registry only stores versions; the table of named models is ``emolens.catalog``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from emolens.catalog import ASSETS, ROUTED, NamedModels, shipped_models
from emolens.errors import ModelError, ModelNotFoundError

if TYPE_CHECKING:
    from emolens.registry import Registry
    from emolens.settings import Settings

__all__ = [
    "ASSETS",
    "ModelResolver",
    "available_models",
    "is_ensemble",
    "load_emotion_model",
    "model_spec",
    "parse_model_spec",
    "resolve_model",
    "resolve_versions",
    "shipped_models",
    "user_models",
]

ModelSpec = str | Path | list | tuple | Mapping


def parse_model_spec(spec: ModelSpec) -> list[tuple[str, float]]:
    """The members of a model spec as ``(name or path, weight)``, weights normalised to sum to 1.

    A string naming an existing file is one model, even if it holds ``+`` or ``,``."""
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        raw = [spec] if isinstance(spec, (str, Path)) else list(spec)
        items = []
        for item in raw:
            if isinstance(item, tuple):
                items.append((str(item[0]), item[1]))
                continue
            text = str(item)
            parts = [text] if Path(text).is_file() else [s.strip() for s in text.replace(",", "+").split("+")]
            for part in filter(None, parts):
                name, _, weight = part.rpartition("*") if "*" in part and not Path(part).is_file() else ("", "", "")
                items.append((name, weight) if name else (part, 1.0))
    if not items:
        raise ModelError("no model given")
    out = []
    for name, weight in items:
        try:
            w = float(weight)
        except (TypeError, ValueError):
            w = -1.0
        if not w > 0 or w == float("inf"):
            raise ModelError(f"the weight of {name!r} in an ensemble must be a positive number, not {weight!r}")
        out.append((name, w))
    total = sum(w for _, w in out)
    return [(n, w / total) for n, w in out]


def model_spec(spec: ModelSpec) -> str:
    """The canonical text of a model spec: ``fast``, ``fast+accurate`` or ``fast*0.25+accurate*0.75``."""
    from emolens.classify.ensemble import spec_text

    return spec_text(parse_model_spec(spec))


def is_ensemble(spec: ModelSpec) -> bool:
    return len(parse_model_spec(spec)) > 1


class ModelResolver:
    """Every model name, resolved in one place for one home: shipped names (``fast``, ``accurate``),
    the user's models in ``home/models``, ``active`` and ``vN`` (versions in ``home/registry``),
    paths, and ensembles of these. Resolvers of the same home are equal, so loaded models are
    shared between them."""

    def __init__(self, settings: Settings | None = None, *, home: str | Path | None = None):
        if home is None:
            if settings is None:
                from emolens.settings import get_settings

                settings = get_settings()
            home = settings.home
        self.home = Path(home)
        self.named = NamedModels(self.home / "models")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelResolver) and other.home == self.home

    def __hash__(self) -> int:
        return hash(self.home)

    def __repr__(self) -> str:
        return f"ModelResolver(home={str(self.home)!r})"

    @property
    def registry(self) -> Registry:
        """The model registry of this home, which registers named models from this resolver's table."""
        from emolens.registry import Registry

        return Registry(self.home / "registry", models=self.named)

    def available(self) -> dict[str, Path]:
        """The models known by name: the user's and the shipped ones (shipped names win)."""
        return self.named.all()

    def active(self) -> str:
        """The registry's active version, or the shipped default while the registry is empty."""
        from emolens.registry import BASE_MODEL

        return self.registry.active_name() or BASE_MODEL

    def versions(self, spec: ModelSpec) -> str:
        """The spec with ``active`` replaced by the registry's active version (``fast`` while it is empty):
        what runs now, read at every call so a promotion or rollback takes effect without a restart."""
        from emolens.classify.ensemble import spec_text

        members = parse_model_spec(spec)
        if not any(n == "active" for n, _ in members):
            return spec_text(members)
        active = self.active()
        return spec_text([(active if n == "active" else n, w) for n, w in members])

    def path(self, name_or_path: str | Path) -> Path:
        """The file of one model; an ensemble has none, which this says."""
        if not Path(name_or_path).is_file() and len(parse_model_spec(name_or_path)) > 1:
            raise ModelError(
                f"{name_or_path!r} is an ensemble: this needs a single model (one name, version or .onnx path)"
            )
        if str(name_or_path) in ROUTED:
            routes = ROUTED[str(name_or_path)]
            raise ModelError(
                f"{name_or_path!r} routes faces between {routes.clear!r} and {routes.poor!r}: this needs a single "
                "model (one name, version or .onnx path)"
            )
        p = Path(name_or_path)
        if p.suffix == ".onnx" or p.exists():
            if not p.is_file():
                raise ModelNotFoundError(f"model file not found: {p}")
            return p
        from emolens.errors import NotFoundError
        from emolens.registry import BASE_MODEL, is_version_name

        name = str(name_or_path)
        if name == "active" or is_version_name(name):
            registry = self.registry
            version = registry.active_name() if name == "active" else name
            if version is not None:
                try:
                    return registry.get(version).path
                except NotFoundError as exc:
                    raise ModelNotFoundError(str(exc)) from exc
            name = BASE_MODEL  # an empty registry: the shipped default is active
        models = self.available()
        if name in models:
            return models[name]
        raise ModelNotFoundError(
            f"no model named {name!r}; available: {', '.join([*models, *ROUTED]) or 'none'} "
            "(or give a path to an .onnx file)"
        )

    def load(self, name_or_path: ModelSpec, threads: int = 0, tta: bool = False):
        """One model per (home, spec, threads, tta), loaded once and reused by every Analyzer: an
        EmotionModel, an EnsembleModel for several members or mirror TTA, or a RoutedModel for a
        routed name (``adaptive``)."""
        return _load(self, str(name_or_path) if isinstance(name_or_path, Path) else name_or_path, threads, tta)


@lru_cache(maxsize=16)
def _load(resolver: ModelResolver, name_or_path: str, threads: int, tta: bool):
    from emolens.classify import EmotionModel

    members = parse_model_spec(name_or_path)
    if len(members) == 1 and members[0][0] in ROUTED:
        from emolens.classify.routed import Route, RoutedModel

        name = members[0][0]
        r = ROUTED[name]
        return RoutedModel(
            Route(r.clear, _load(resolver, r.clear, threads, tta)),
            Route(r.poor, _load(resolver, r.poor, threads, tta or r.mirror_poor)),
            name,
        )
    if len(members) == 1 and not tta:
        return EmotionModel(resolver.path(members[0][0]), threads=threads)
    from emolens.classify.ensemble import EnsembleModel, Member

    return EnsembleModel([Member(n, _load(resolver, n, threads, False), w) for n, w in members], tta=tta)


# The functions below are the resolver of the process's settings, for callers that have none of
# their own (scripts, notebooks); code below an entry point is given a resolver or its settings.


def user_models(settings: Settings | None = None) -> dict[str, Path]:
    return ModelResolver(settings).named.user()


def available_models(settings: Settings | None = None) -> dict[str, Path]:
    return ModelResolver(settings).available()


def resolve_versions(spec: ModelSpec, settings: Settings | None = None) -> str:
    """``ModelResolver.versions``: the spec with ``active`` replaced by the active version."""
    return ModelResolver(settings).versions(spec)


def resolve_model(name_or_path: str | Path, settings: Settings | None = None) -> Path:
    """``ModelResolver.path``: the file of one model."""
    return ModelResolver(settings).path(name_or_path)


def load_emotion_model(name_or_path: str, threads: int = 0, tta: bool = False, settings: Settings | None = None):
    """``ModelResolver.load``: one model per (home, spec, threads, tta), loaded once and reused."""
    return ModelResolver(settings).load(name_or_path, threads, tta)


load_emotion_model.cache_clear = _load.cache_clear  # type: ignore[attr-defined]  # tests start from no models
