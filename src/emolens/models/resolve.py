"""Models by name or path, the same way everywhere.

A name is looked up among the models shipped in ``emolens/assets`` (``fast``, ...), then among
the user's models in ``$EMOLENS_HOME/models``; ``active`` and ``v1``, ``v2``... are versions in
the model registry (``active`` is the shipped ``fast`` while the registry is empty). Anything
that is an existing file is a path.

``adaptive`` routes each face to ``fast`` when it is clear and to ``robust`` when it is soft or
noisy (``emolens.classify.routed``). An ensemble is several of these joined by ``+`` (or ``,``),
each optionally weighted with ``*W``: ``fast+accurate``, ``accurate*3+fast``; in Python also a
list (``["fast", "accurate"]``) or a mapping of names to weights.

``ModelSpec.parse`` reads any of these once into a typed spec, and ``str(spec)`` prints its one
canonical text (what ``--model``, ``EMOLENS_MODEL`` and results show). ``ModelResolver`` is the one
place specs are resolved, for one ``$EMOLENS_HOME``: ``versions`` replaces ``active`` by the version
that runs now, ``path`` gives the file of one model, and ``load`` loads a spec, an
``EnsembleModel`` when it has several members or mirror TTA. A member ending in ``:7`` is that
model's answer with FER2013's 7 classes (``fast8:7``: contempt dropped before the argmax,
``emolens.classify.subset``). The model registry only stores versions; the table of named models
is ``emolens.models.catalog``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from emolens.core.errors import ModelError, ModelNotFoundError
from emolens.models.catalog import ROUTED, NamedModels

if TYPE_CHECKING:
    from emolens.models.registry import Registry

__all__ = ["ModelResolver", "ModelSpec", "clear_model_cache"]


@dataclass(frozen=True)
class ModelSpec:
    """A model as the user named it, parsed once: its members as ``(name or path, weight)``, weights
    summing to 1. One member is one model (a name, ``active``, a version, a path, or a routed name
    such as ``adaptive``); several are an ensemble."""

    members: tuple[tuple[str, float], ...]

    @classmethod
    def parse(cls, spec: str | Path | list | tuple | Mapping | ModelSpec) -> ModelSpec:
        """Read a spec: a string (``fast``, ``fast+accurate``, ``accurate*3+fast``, ``a,b``), a path,
        a list of names or ``(name, weight)`` pairs, or a mapping of names to weights. A spec already
        parsed is returned as it is. A string naming an existing file is one model, even if it holds
        ``+`` or ``,``."""
        if isinstance(spec, ModelSpec):
            return spec
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
                if Path(text).is_file():
                    items.append((text, 1.0))
                    continue
                for part in filter(None, (s.strip() for s in text.replace(",", "+").split("+"))):
                    name, star, weight = part.rpartition("*")
                    items.append((name, weight) if star and name else (part, 1.0))
        if not items:
            raise ModelError("no model given")
        out = []
        for name, weight in items:
            try:
                w = float(weight)
            except (TypeError, ValueError):
                w = -1.0
            if not (w > 0 and math.isfinite(w)):
                raise ModelError(f"the weight of {name!r} in an ensemble must be a positive number, not {weight!r}")
            out.append((name, w))
        total = sum(w for _, w in out)
        return cls(tuple((n, w / total) for n, w in out))

    @classmethod
    def one(cls, name: str) -> ModelSpec:
        """The spec of one model known by name or path, with nothing to parse."""
        return cls(((name, 1.0),))

    def __str__(self) -> str:
        """``fast+accurate``, or ``fast*0.25+accurate*0.75`` when the weights differ."""
        if len({round(w, 9) for _, w in self.members}) <= 1:
            return "+".join(n for n, _ in self.members)
        return "+".join(f"{n}*{w:g}" for n, w in self.members)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.members]

    @property
    def weights(self) -> list[float]:
        return [w for _, w in self.members]

    @property
    def is_ensemble(self) -> bool:
        return len(self.members) > 1

    @property
    def single(self) -> str | None:
        """The one member's name or path; None for an ensemble."""
        return None if self.is_ensemble else self.members[0][0]

    @property
    def routed(self) -> bool:
        """A routed name (``adaptive``): two models, each for the faces it reads best."""
        return self.single in ROUTED

    @property
    def uses_active(self) -> bool:
        return "active" in self.names

    def with_active(self, version: str) -> ModelSpec:
        """This spec with ``active`` replaced by ``version``."""
        return ModelSpec(tuple((version if n == "active" else n, w) for n, w in self.members))


class ModelResolver:
    """Every model spec, resolved in one place for one home: shipped names (``fast``, ``accurate``),
    the user's models in ``home/models``, ``active`` and ``vN`` (versions in ``home/registry``),
    paths, and ensembles of these. Resolvers of the same home are equal, so loaded models are
    shared between them."""

    def __init__(self, home: str | Path):
        self.home = Path(home)
        self.named = NamedModels(self.home / "models")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelResolver) and other.home == self.home

    def __hash__(self) -> int:
        return hash(self.home)

    def __repr__(self) -> str:
        return f"ModelResolver(home={str(self.home)!r})"

    @cached_property
    def registry(self) -> Registry:
        """The model registry of this home, which registers named models from this resolver's table."""
        from emolens.models.registry import Registry

        return Registry(self.home / "registry", models=self.named)

    def available(self) -> dict[str, Path]:
        """The models known by name: the user's and the shipped ones (shipped names win)."""
        return self.named.all()

    def names(self) -> list[str]:
        """Every name a user may give a single model: the named models, the routed names and ``active``."""
        return [*self.available(), *ROUTED, "active"]

    def active(self) -> str:
        """The registry's active version, or the shipped default while the registry is empty."""
        from emolens.models.registry import BASE_MODEL

        return self.registry.active_name() or BASE_MODEL

    def versions(self, spec: ModelSpec) -> ModelSpec:
        """The spec with ``active`` replaced by the registry's active version (``fast`` while it is
        empty): what runs now, so a promotion or rollback takes effect without a restart."""
        return spec.with_active(self.active()) if spec.uses_active else spec

    def path(self, spec: ModelSpec | str | Path) -> Path:
        """The file of one model; an ensemble or a routed name has none, which this says."""
        spec = ModelSpec.parse(spec)
        name = spec.single
        if name is None:
            raise ModelError(
                f"{str(spec)!r} is an ensemble: this needs a single model (one name, version or .onnx path)"
            )
        if name in ROUTED:
            routes = ROUTED[name]
            raise ModelError(
                f"{name!r} routes faces between {routes.clear!r} and {routes.poor!r}: this needs a single "
                "model (one name, version or .onnx path)"
            )
        p = Path(name)
        if p.suffix == ".onnx" or p.exists():
            if not p.is_file():
                raise ModelNotFoundError(f"model file not found: {p}")
            return p
        from emolens.core.errors import NotFoundError
        from emolens.models.registry import BASE_MODEL, is_version_name

        if name == "active" or is_version_name(name):
            version = self.registry.active_name() if name == "active" else name
            if version is not None:
                try:
                    return self.registry.get(version).path
                except NotFoundError as exc:
                    raise ModelNotFoundError(str(exc)) from exc
            name = BASE_MODEL  # an empty registry: the shipped default is active
        models = self.available()
        if name in models:
            return models[name]
        raise ModelNotFoundError(
            f"no model named {name!r}; available: {', '.join([*models, *ROUTED])} (or give a path to an .onnx file)"
        )

    def load(self, spec: ModelSpec | str | Path, threads: int = 0, tta: bool = False):
        """One model per (home, spec, threads, tta), loaded once and reused by every Analyzer: an
        EmotionModel, an EnsembleModel for several members or mirror TTA, or a RoutedModel for a
        routed name (``adaptive``). ``active`` is resolved to the version that runs now."""
        return _load(self, self.versions(ModelSpec.parse(spec)), threads, tta)


@lru_cache(maxsize=16)
def _load(resolver: ModelResolver, spec: ModelSpec, threads: int, tta: bool):
    from emolens.classify import EmotionModel

    name = spec.single
    if name is not None and not Path(name).is_file():
        from emolens.classify.subset import SubsetModel, split_suffix

        base, seven = split_suffix(name)
        if seven:  # an 8-class model's 7-class answer (``fast8:7``)
            return SubsetModel(_load(resolver, ModelSpec.one(base), threads, tta), base)
    if name in ROUTED:
        from emolens.classify.routed import Route, RoutedModel

        r = ROUTED[name]
        return RoutedModel(
            Route(r.clear, _load(resolver, ModelSpec.one(r.clear), threads, tta)),
            Route(r.poor, _load(resolver, ModelSpec.one(r.poor), threads, tta or r.mirror_poor)),
            name,
        )
    if name is not None and not tta:
        return EmotionModel(resolver.path(spec), threads=threads)
    from emolens.classify.ensemble import EnsembleModel, Member

    members = [Member(n, _load(resolver, ModelSpec.one(n), threads, False), w) for n, w in spec.members]
    return EnsembleModel(members, tta=tta, name=str(spec))


clear_model_cache = _load.cache_clear  # tests start from no loaded models
