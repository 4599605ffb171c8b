"""Plain-PyTorch copies of the benchmark architectures, for toolkits that cannot import snnconv.

The SpikingJelly comparison runs in its own virtual environment without snnconv, so the three Fashion-MNIST
architectures of snnconv.zoo are repeated here with identical parameter names (their state dicts load with
``strict=True``). One deliberate difference: FmnistVGG applies its hidden classifier ReLU functionally
(``F.relu``); SpikingJelly's converter only replaces ``nn.ReLU`` modules, so the copy uses an ``nn.ReLU``
module there (no parameters, the same function). ``ResNet20`` is the CIFAR-10 ResNet-20 of
``/work/shared/models/cifar10-resnet20.onnx`` with its batch norms already folded into the convolutions (as in
the ONNX file); benchmarks/export_resnet20.py writes its state dict from the ONNX initializers and checks it
against onnxruntime.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())


class FmnistVGG(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(_conv_bn_relu(1, 32), _conv_bn_relu(32, 32), nn.AvgPool2d(2),
                                      _conv_bn_relu(32, 64), _conv_bn_relu(64, 64), nn.AvgPool2d(2),
                                      _conv_bn_relu(64, 128), nn.AvgPool2d(2))
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(128 * 3 * 3, 128)
        self.relu_fc1 = nn.ReLU()  # snnconv.zoo uses F.relu here
        self.dropout = nn.Dropout(0.2)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.flatten(self.features(x))
        return self.fc2(self.dropout(self.relu_fc1(self.fc1(x))))


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class FmnistResNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = _conv_bn_relu(1, 32)
        self.pool = nn.AvgPool2d(2)
        self.layer1 = BasicBlock(32, 32)
        self.layer2 = BasicBlock(32, 64, stride=2)
        self.layer3 = BasicBlock(64, 64)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.pool(self.stem(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.global_pool(x)))


class FmnistMaxPool(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.2),
                                        nn.Linear(128, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class ShortcutA(nn.Module):
    """Option-A shortcut of the CIFAR ResNets: subsample by 2, zero-pad the channels on both sides."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


def shortcut_a_conv(in_planes: int, planes: int) -> nn.Conv2d:
    """The option-A shortcut as a fixed 1x1 convolution with stride 2: exactly x[:, :, ::2, ::2] with the
    channels zero-padded by (planes - in_planes) / 2 on each side (weight[c + pad, c] = 1, all else 0)."""
    conv = nn.Conv2d(in_planes, planes, 1, stride=2, bias=False)
    pad = (planes - in_planes) // 2
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(in_planes):
            conv.weight[c + pad, c, 0, 0] = 1.0
    conv.weight.requires_grad_(False)
    return conv


class CifarBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1, conv_shortcut: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=True)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=True)
        if stride != 1 or in_planes != planes:
            self.shortcut = shortcut_a_conv(in_planes, planes) if conv_shortcut else ShortcutA(planes // 4)
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        return self.relu2(self.conv2(self.relu1(self.conv1(x))) + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 for CIFAR-10 (3 stages x 3 basic blocks, 16/32/64 channels), batch norm folded.

    ``conv_shortcut=True`` expresses the two option-A shortcuts as fixed 1x1 stride-2 convolutions (the same
    function, see :func:`shortcut_a_conv`), because SpikingJelly's converter refuses ``F.pad``. Their fixed
    weights are not part of the state dict (load with ``strict=False`` only for those two keys).
    """

    def __init__(self, num_classes: int = 10, conv_shortcut: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=True)
        self.relu = nn.ReLU()
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(3):
                blocks.append(CifarBlock(in_planes, planes, stride if i == 0 else 1, conv_shortcut))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.flatten(self.pool(x)))


ARCHITECTURES = {"vgg": FmnistVGG, "resnet": FmnistResNet, "maxpool": FmnistMaxPool, "resnet20": ResNet20}
