"""Models: PreAct ResNet-18 (the mixup paper's CIFAR model) and a small CNN for CPU.

Inputs are images in [0, 1]; normalisation lives inside the model, so attacks and
clipping work in pixel space.

Manifold Mixup (Verma et al. 2019, "Manifold Mixup: Better Representations by
Interpolating Hidden States"): a model called with `mix=HiddenMix(block, index, lam)`
mixes its hidden states h with h[index] (datasets.mixing.mix_hidden) at that block:
block 0 is the input, block k the output of the k-th stage. Eligible blocks follow
the paper's PreAct ResNet-18 setting, k in {0, 1, 2} (`MIX_BLOCKS`); the small CNN
has {0, 1}.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ARCHITECTURES


@dataclass
class HiddenMix:
    """Where and how to mix hidden states: at `block` (0: the input), h becomes
    mix_hidden(h, index, lam) = lam * h + (1 - lam) * h[index]; index (N,) long on the
    model's device, lam one float for the batch."""

    block: int
    index: torch.Tensor
    lam: float


def _mixed(h: torch.Tensor, mix: HiddenMix | None, block: int) -> torch.Tensor:
    if mix is None or mix.block != block:
        return h
    from datasets.mixing import mix_hidden

    return mix_hidden(h, mix.index, mix.lam)


class Normalize(nn.Module):
    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SmallCNN(nn.Module):
    MIX_BLOCKS = (0, 1)
    STAGE_END = 7  # features[:7] is the first stage (two convolutions and a pooling)

    def __init__(self, channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor, mix: HiddenMix | None = None) -> torch.Tensor:
        if mix is None:
            return self.classifier(self.features(x).flatten(1))
        h = self.features[: self.STAGE_END](_mixed(x, mix, 0))
        h = self.features[self.STAGE_END :](_mixed(h, mix, 1))
        return self.classifier(h.flatten(1))


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    MIX_BLOCKS = (0, 1, 2)

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
        self.layers = nn.Sequential(
            self._layer(64, 2, 1),
            self._layer(128, 2, 2),
            self._layer(256, 2, 2),
            self._layer(512, 2, 2),
        )
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def _layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(PreActBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, mix: HiddenMix | None = None) -> torch.Tensor:
        if mix is None:
            out = self.layers(self.conv1(x))
        else:
            out = self.conv1(_mixed(x, mix, 0))
            for stage, layer in enumerate(self.layers, start=1):
                out = _mixed(layer(out), mix, stage)
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1)
        return self.linear(out.flatten(1))


class Classifier(nn.Sequential):
    """Normalize then the network: an nn.Sequential (so checkpoints keep their keys)
    whose forward also takes a HiddenMix for Manifold Mixup."""

    @property
    def mix_blocks(self) -> tuple[int, ...]:
        return self[1].MIX_BLOCKS

    def forward(self, x: torch.Tensor, mix: HiddenMix | None = None) -> torch.Tensor:
        return self[1](self[0](x), mix)


def build_model(
    architecture: str, channels: int, num_classes: int, mean: list[float], std: list[float]
) -> Classifier:
    """The network for `architecture` (ARCHITECTURES) behind a Normalize layer, taking
    (N, C, H, W) images in [0, 1]; raises ValueError for an unknown name."""
    if architecture == "small_cnn":
        body = SmallCNN(channels, num_classes)
    elif architecture == "preact_resnet18":
        body = PreActResNet18(channels, num_classes)
    else:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {ARCHITECTURES}")
    return Classifier(Normalize(mean, std), body)
