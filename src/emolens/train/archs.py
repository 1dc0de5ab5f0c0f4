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

from emolens.core.errors import MissingExtraError

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


def _conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    pad = (kernel - 1) // 2
    conv = nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn_relu6(cin, hidden, 1)]
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018) with torchvision's parameter names, so its ImageNet weights
    load as they are (``emolens.train.pretrained``).

    EmoLens feeds 48x48 grey crops normalised to [-1, 1]; the network enlarges them to
    ``input_size`` (ImageNet features need faces larger than 48 px after a stride-32 trunk) and turns
    them into the 3-channel ImageNet normalisation inside the graph, so the analyzer's input stays
    the same for every model.
    """

    # (expansion, output channels, repeats, first stride) per stage, as in the paper
    _SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2))
    _SETTINGS += ((6, 320, 1, 1),)

    def __init__(self, num_classes: int, in_channels: int, dropout: float = 0.2, input_size: int = 96):
        super().__init__()
        import torch

        self.input_size = input_size
        layers: list[nn.Module] = [_conv_bn_relu6(3, 32, 3, 2)]
        cin = 32
        for expand, cout, repeats, stride in self._SETTINGS:
            for i in range(repeats):
                layers.append(_InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers.append(_conv_bn_relu6(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        # x in [-1, 1] → pixel in [0, 1] → ImageNet's normalisation, as one affine map per channel
        self.register_buffer("in_scale", 0.5 / std, persistent=False)
        self.register_buffer("in_shift", (0.5 - mean) / std, persistent=False)
        self.in_channels = in_channels

    def forward(self, x):
        import torch.nn.functional as F

        # always resized (a no-op at input_size): a shape test would be frozen into the exported graph
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        x = self.features(x * self.in_scale + self.in_shift)
        return self.classifier(x.mean((2, 3)))

    def layer_blocks(self) -> list[list[nn.Parameter]]:
        """The stem, one block per resolution stage, the last 1x1 convolution, then the head."""
        blocks: list[list[nn.Parameter]] = [list(self.features[0].parameters())]
        for layer in list(self.features)[1:-1]:
            stride = layer.conv[-3][0].stride[0] if len(layer.conv) == 4 else layer.conv[0][0].stride[0]
            if stride == 2 or len(blocks) == 1:
                blocks.append([])
            blocks[-1] += list(layer.parameters())
        return blocks + [list(self.features[-1].parameters()), list(self.classifier.parameters())]


@register_arch("mobilenetv2")
def mobilenetv2(num_classes: int = 7, in_channels: int = 1, dropout: float = 0.2, **kw) -> nn.Module:
    """MobileNetV2 seeing the 48x48 crop at 96 px (``--set pretrained=imagenet`` starts from ImageNet)."""
    if in_channels not in (1, 3):
        raise ValueError(f"mobilenetv2 takes 1 or 3 input channels, not {in_channels}")
    return MobileNetV2(num_classes, in_channels, dropout=dropout, **kw)


@register_arch("mobilenetv2-64")
def mobilenetv2_64(num_classes: int = 7, in_channels: int = 1, dropout: float = 0.2, **kw) -> nn.Module:
    """MobileNetV2 seeing the crop at 64 px: about half the cost of 96 px."""
    return mobilenetv2(num_classes, in_channels, dropout=dropout, input_size=64, **kw)
