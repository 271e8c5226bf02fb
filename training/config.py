"""What a training run is given: settings, data and progress records.

Plain dataclasses with no torch import, so the web process (admin, API, job records)
can name them without loading PyTorch; only the workers that train import loop.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ARCHITECTURES = ("small_cnn", "preact_resnet18")
FGSM_EPS = 4 / 255  # in [0, 1] pixel space

# (class1, class2, lam) for a batch -> (B, K) soft labels; used by online mixup.
LabelMap = Callable[[np.ndarray, np.ndarray, float], np.ndarray]


@dataclass
class TrainConfig:
    architecture: str = "small_cnn"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    seed: int = 0
    online_alpha: float = 0.0  # > 0: mix each batch online with lam ~ Beta(alpha, alpha)
    online_mixing: str = "mixup"  # the mixing method online (datasets.mixing registry)
    device: str = "auto"  # auto | cpu | cuda
    fgsm_eps: float = FGSM_EPS


@dataclass
class TrainData:
    """Base training images with hard labels, plus mixed points with soft labels."""

    base_images: np.ndarray
    base_labels: np.ndarray
    mixed_images: np.ndarray
    mixed_labels: np.ndarray
    num_classes: int

    @property
    def size(self) -> int:
        return len(self.base_images) + len(self.mixed_images)


@dataclass
class EvalData:
    images: np.ndarray
    labels: np.ndarray
    soft_labels: np.ndarray | None = None  # human label distributions, when known


@dataclass
class Progress:
    epoch: int
    step: int
    steps_per_epoch: int
    loss: float
    images_seen: int


class Cancelled(Exception):
    """Raised when should_stop() says so between steps."""
