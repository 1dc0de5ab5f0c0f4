"""Architecture registry for emotion classifiers (timm-style: add a model in one place).

Every architecture takes ``num_classes`` and ``in_channels`` and maps an NCHW float tensor
to logits, so the training loop, export and evaluation treat them all alike.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_ARCHS: dict[str, Callable[..., nn.Module]] = {}


def register_arch(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _ARCHS[name] = factory
        return factory

    return wrap


def list_archs() -> list[str]:
    return sorted(_ARCHS)


def create_arch(name: str, num_classes: int = 7, in_channels: int = 1, **kwargs) -> nn.Module:
    if name not in _ARCHS:
        raise KeyError(f"unknown architecture {name!r}; choose one of {', '.join(list_archs())}")
    return _ARCHS[name](num_classes=num_classes, in_channels=in_channels, **kwargs)


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


@register_arch("resnet-small")
def resnet_small(num_classes: int = 7, in_channels: int = 1, **kw) -> nn.Module:
    return ResNetFER((32, 64, 128, 256), num_classes, in_channels, **kw)


@register_arch("resnet18-fer")
def resnet18_fer(num_classes: int = 7, in_channels: int = 1, **kw) -> nn.Module:
    return ResNetFER((64, 128, 256, 512), num_classes, in_channels, **kw)
