"""Models by name or path, the same way everywhere.

A name is looked up among the models shipped in ``emolens/assets`` (``fast``, ...), then among
the user's models in ``$EMOLENS_HOME/models``; ``active`` and ``v1``, ``v2``... are versions in
the model registry (``active`` is the shipped ``fast`` while the registry is empty). Anything
that is an existing file is a path.

An ensemble is several of these joined by ``+`` (or ``,``), each optionally weighted with
``*W``: ``fast+accurate``, ``accurate*3+fast``; in Python also a list (``["fast", "accurate"]``)
or a mapping of names to weights. ``model_spec`` turns any of these into the one string every
interface takes (``--model``, ``EMOLENS_MODEL``, ``Analyzer(model=...)``), and
``load_emotion_model`` loads it, an ``EnsembleModel`` when it has several members or mirror TTA.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from emolens.errors import ModelError, ModelNotFoundError

ASSETS = Path(__file__).parent / "assets"


def shipped_models() -> dict[str, Path]:
    return {p.stem: p for p in sorted(ASSETS.glob("*.onnx"))}


def user_models() -> dict[str, Path]:
    from emolens.settings import get_settings

    folder = get_settings().home / "models"
    return {p.stem: p for p in sorted(folder.glob("*.onnx"))} if folder.is_dir() else {}


def available_models() -> dict[str, Path]:
    return {**user_models(), **shipped_models()}  # shipped names win: `fast` is always ours


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


def resolve_versions(spec: ModelSpec) -> str:
    """The spec with ``active`` replaced by the registry's active version (``fast`` while it is empty):
    what runs now, read at every call so a promotion or rollback takes effect without a restart."""
    from emolens.classify.ensemble import spec_text

    members = parse_model_spec(spec)
    if not any(n == "active" for n, _ in members):
        return spec_text(members)
    from emolens.registry import BASE_MODEL, Registry

    active = Registry().active_name() or BASE_MODEL
    return spec_text([(active if n == "active" else n, w) for n, w in members])


def resolve_model(name_or_path: str | Path) -> Path:
    """The file of one model; an ensemble has none, which this says."""
    if not Path(name_or_path).is_file() and len(parse_model_spec(name_or_path)) > 1:
        raise ModelError(
            f"{name_or_path!r} is an ensemble: this needs a single model (one name, version or .onnx path)"
        )
    p = Path(name_or_path)
    if p.suffix == ".onnx" or p.exists():
        if not p.is_file():
            raise ModelNotFoundError(f"model file not found: {p}")
        return p
    from emolens.registry import BASE_MODEL, resolve_version

    if str(name_or_path) == "active" or (p.name.startswith("v") and p.name[1:].isdigit()):
        found = resolve_version(str(name_or_path))
        if found is not None:
            return found
        name_or_path = BASE_MODEL  # an empty registry: the shipped default is active
    models = available_models()
    if str(name_or_path) in models:
        return models[str(name_or_path)]
    raise ModelNotFoundError(
        f"no model named {str(name_or_path)!r}; available: {', '.join(models) or 'none'} "
        "(or give a path to an .onnx file)"
    )


@lru_cache(maxsize=16)
def load_emotion_model(name_or_path: str, threads: int = 0, tta: bool = False):
    """One model per (spec, threads, tta), loaded once and reused by every Analyzer: an
    EmotionModel, or an EnsembleModel for several members or mirror TTA."""
    from emolens.classify import EmotionModel

    members = parse_model_spec(name_or_path)
    if len(members) == 1 and not tta:
        return EmotionModel(resolve_model(members[0][0]), threads=threads)
    from emolens.classify.ensemble import EnsembleModel, Member

    return EnsembleModel([Member(n, load_emotion_model(n, threads), w) for n, w in members], tta=tta)
