"""Architecture registry for emotion classifiers (timm-style: add a model in one place).

Every architecture takes ``num_classes`` and ``in_channels`` and maps an NCHW float tensor
to logits, so the training loop, export and evaluation treat them all alike. ``layer_blocks``
splits a model into blocks from the input to the classifier head, for staged fine-tuning and
layer-wise learning-rate decay.

When the optional ``timm`` package is installed, ``timm:<name>`` is any timm model, trained from
scratch (no pretrained weights: EmoLens downloads nothing) with the configured input channels.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from torch import nn

from emolens.errors import MissingExtraError

_ARCHS: dict[str, Callable[..., nn.Module]] = {}
_PREFIXES: dict[str, Callable[..., nn.Module]] = {}  # "timm:" → factory(name, num_classes, in_channels, ...)
TIMM_PREFIX = "timm:"


def register_arch(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _ARCHS[name] = factory
        return factory

    return wrap


def list_archs() -> list[str]:
    return sorted(_ARCHS)


def create_arch(name: str, num_classes: int = 7, in_channels: int = 1, **kwargs) -> nn.Module:
    for prefix, factory in _PREFIXES.items():
        if name.startswith(prefix):
            return factory(name[len(prefix) :], num_classes=num_classes, in_channels=in_channels, **kwargs)
    if name.startswith(TIMM_PREFIX):  # not registered: timm is not installed
        raise _timm_missing()
    if name not in _ARCHS:
        raise KeyError(
            f"unknown architecture {name!r}; choose one of {', '.join(list_archs())}"
            + (f", or {TIMM_PREFIX}<name> for a timm model" if TIMM_PREFIX in _PREFIXES else "")
        )
    return _ARCHS[name](num_classes=num_classes, in_channels=in_channels, **kwargs)


def layer_blocks(model: nn.Module) -> list[list[nn.Parameter]]:
    """The model's trainable parameters in blocks, from the input to the output; the last block is
    the classifier head. Models may define ``layer_blocks()``; otherwise each top-level child with
    parameters is a block (timm models list their classifier last)."""
    if hasattr(model, "layer_blocks"):
        blocks = model.layer_blocks()
    else:
        blocks = [list(child.parameters()) for child in model.children()]
    blocks = [b for b in blocks if b]
    seen = {id(p) for b in blocks for p in b}
    missing = [p for p in model.parameters() if id(p) not in seen]
    if missing:  # parameters held directly by the model (no child): they go with the first block
        blocks[0] = missing + blocks[0]
    return blocks


def _timm_missing() -> MissingExtraError:
    exc = MissingExtraError("train", "timm")
    exc.msg = (  # timm is in no extra: say how to get it (ImportError prints .msg)
        f"{TIMM_PREFIX}<name> architectures need the optional package 'timm', which EmoLens does not install; "
        f"install it with: pip install timm (or choose one of {', '.join(list_archs())})"
    )
    exc.args = (exc.msg,)
    return exc


def _timm_arch(name: str, num_classes: int = 7, in_channels: int = 1, dropout: float = 0.0, **kw) -> nn.Module:
    import timm

    if name not in timm.list_models():
        raise KeyError(f"unknown timm architecture {name!r}; see timm.list_models()")
    return timm.create_model(
        name, pretrained=False, num_classes=num_classes, in_chans=in_channels, drop_rate=dropout, **kw
    )


if importlib.util.find_spec("timm") is not None:  # registered only where timm is installed; imported on first use
    _PREFIXES[TIMM_PREFIX] = _timm_arch


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class VGGNet(nn.Module):
    """Four stages of 3x3 conv-BN-ReLU pairs with max-pooling, global average pooling, linear head.

    Plain 3x3 convolutions are what ONNX Runtime runs fastest on a CPU at 48x48, which is why
    the fast default is this shape rather than a depthwise-separable one.
    """

    def __init__(self, widths: tuple[int, ...], num_classes: int, in_channels: int, dropout: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i, w in enumerate(widths):
            layers += _conv_bn_relu(cin, w) + _conv_bn_relu(w, w)
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes))

    def forward(self, x):
        return self.head(self.pool(self.features(x)))

    def layer_blocks(self) -> list[list[nn.Parameter]]:
        """One block per stage (the layers between poolings), then the head."""
        blocks: list[list[nn.Parameter]] = [[]]
        for layer in self.features:
            if isinstance(layer, nn.MaxPool2d):
                blocks.append([])
            blocks[-1] += list(layer.parameters())
        return blocks + [list(self.head.parameters())]


@register_arch("vgg-tiny")
def vgg_tiny(num_classes: int = 7, in_channels: int = 1, **kw) -> nn.Module:
    return VGGNet((16, 32, 64, 128), num_classes, in_channels, **kw)


@register_arch("vgg-small")
def vgg_small(num_classes: int = 7, in_channels: int = 1, **kw) -> nn.Module:
    return VGGNet((32, 64, 128, 256), num_classes, in_channels, **kw)


@register_arch("vgg-base")
def vgg_base(num_classes: int = 7, in_channels: int = 1, **kw) -> nn.Module:
    return VGGNet((64, 128, 256, 512), num_classes, in_channels, **kw)


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.body(x) + self.skip(x))


class ResNetFER(nn.Module):
    """A ResNet-style network for small inputs: no stem pooling, so 48x48 keeps its detail."""

    def __init__(self, widths: tuple[int, ...], num_classes: int, in_channels: int, dropout: float = 0.3):
        super().__init__()
        stem = widths[0]
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, stem))
        blocks: list[nn.Module] = []
        cin = stem
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks += [_Residual(cin, w, stride), _Residual(w, w, 1)]
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes)
        )

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))

    def layer_blocks(self) -> list[list[nn.Parameter]]:
        """The stem, one block per stage (two residual blocks each), then the head."""
        stages = [[p for b in self.blocks[i : i + 2] for p in b.parameters()] for i in range(0, len(self.blocks), 2)]
        return [list(self.stem.parameters()), *stages, list(self.head.parameters())]


@register_arch("resnet-small")
def resnet_small(num_classes: int = 7, in_channels: int = 1, **kw) -> nn.Module:
    return ResNetFER((32, 64, 128, 256), num_classes, in_channels, **kw)


@register_arch("resnet18-fer")
def resnet18_fer(num_classes: int = 7, in_channels: int = 1, **kw) -> nn.Module:
    return ResNetFER((64, 128, 256, 512), num_classes, in_channels, **kw)
