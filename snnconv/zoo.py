"""Small named CNNs for 28x28 grey images with 10 classes (Fashion-MNIST).

They are the embedded default model (`default_model`) and the benchmark models of the conversion-fidelity
bar in SPEC section 5: a VGG-style net with batch norm and average pooling, a ResNet-style net with residual
adds, and a plain conv / max-pool net without batch norm. All are plain-ReLU networks, which is what
rate-coded conversion to integrate-and-fire neurons assumes, and every forward pass is torch.fx-traceable
(no data-dependent Python control flow).

Inputs are [N, 1, 28, 28] pixels in [0, 1] without mean/std normalization (see `DEFAULT_INPUT`); the
weights were trained that way by training/train_fmnist.py.
"""
from __future__ import annotations

from importlib import resources

import torch
import torch.nn.functional as F
from torch import nn

from snnconv.errors import ModelLoadError

NUM_CLASSES = 10

DEFAULT_INPUT = {"shape": [1, 28, 28], "mean": None, "std": None}
"""Input spec of the default model: one 28x28 channel, pixels scaled to [0, 1], no normalization."""

DEFAULT_WEIGHTS = "fmnist_vgg.pt"
"""File name of the shipped default-model state dict inside the `snnconv/assets` folder."""


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (no bias: batch norm supplies it), batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class FmnistVGG(nn.Module):
    """VGG-style: five conv-BN-ReLU blocks with 2x2 average pooling, then a two-layer classifier.

    Spatial sizes: 28 -> (32, 32) -> pool 14 -> (64, 64) -> pool 7 -> (128) -> pool 3 -> 1152 features.
    The hidden classifier ReLU is applied functionally (`F.relu`) on purpose, so that converters must
    handle functional activations as well as `nn.ReLU` modules.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, dropout: float = 0.2):
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(1, 32),
            _conv_bn_relu(32, 32),
            nn.AvgPool2d(2),
            _conv_bn_relu(32, 64),
            _conv_bn_relu(64, 64),
            nn.AvgPool2d(2),
            _conv_bn_relu(64, 128),
            nn.AvgPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(128 * 3 * 3, 128)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.features(x))
        x = self.dropout(F.relu(self.fc1(x)))
        return self.fc2(x)


class BasicBlock(nn.Module):
    """Residual basic block: conv-BN-ReLU-conv-BN plus shortcut, then ReLU after the add.

    With `stride` 2 or a change of width the shortcut is a 1x1 convolution with batch norm (ResNet's
    projection shortcut); otherwise it is the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class FmnistResNet(nn.Module):
    """ResNet-style: stem, pooling, three basic blocks (one downsampling), global average pool, linear.

    Spatial sizes: 28 -> stem (32 ch) -> avg pool 14 -> block (32) -> block (64, stride 2) 7
    -> block (64) -> global average -> 64 features.
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.stem = _conv_bn_relu(1, 32)
        self.pool = nn.AvgPool2d(2)
        self.layer1 = BasicBlock(32, 32)
        self.layer2 = BasicBlock(32, 64, stride=2)
        self.layer3 = BasicBlock(64, 64)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.global_pool(x)))


class FmnistMaxPool(nn.Module):
    """Conv-ReLU-maxpool network without batch norm: conv32-pool-conv64-pool-fc128-fc10.

    Max pooling has no exact rate-coded equivalent, so this model exercises the converter's max-pool
    strategy; without batch norm it also checks conversion of plain biased convolutions.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, dropout: float = 0.2):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 128),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def fmnist_vgg() -> FmnistVGG:
    """Untrained VGG-style Fashion-MNIST net (about 0.29 M parameters)."""
    return FmnistVGG()


def fmnist_resnet() -> FmnistResNet:
    """Untrained ResNet-style Fashion-MNIST net with residual adds (about 0.15 M parameters)."""
    return FmnistResNet()


def fmnist_maxpool() -> FmnistMaxPool:
    """Untrained conv / max-pool Fashion-MNIST net without batch norm (about 0.42 M parameters)."""
    return FmnistMaxPool()


ARCHITECTURES = {"vgg": fmnist_vgg, "resnet": fmnist_resnet, "maxpool": fmnist_maxpool}
"""Short name -> factory, as used by training/train_fmnist.py and the benchmarks."""


def default_model() -> FmnistVGG:
    """The embedded default: `fmnist_vgg` with the shipped Fashion-MNIST weights, in eval mode.

    The weights are a plain state dict loaded with `weights_only=True`, so nothing is unpickled.
    Expects inputs as described by `DEFAULT_INPUT`.
    """
    weights = resources.files("snnconv") / "assets" / DEFAULT_WEIGHTS
    if not weights.is_file():
        raise ModelLoadError(
            f"The shipped default weights {weights} are missing; reinstall snnconv or pass a MODEL explicitly."
        )
    with weights.open("rb") as stream:
        state_dict = torch.load(stream, map_location="cpu", weights_only=True)
    model = fmnist_vgg()
    model.load_state_dict(state_dict)
    return model.eval()
