"""What a training run is given: settings, data and progress records.

Plain dataclasses with no torch import, so the web process (admin, API, job records)
can name them without loading PyTorch; only the workers that train import loop.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ARCHITECTURES = ("small_cnn", "preact_resnet18")
FGSM_EPS = 4 / 255  # in [0, 1] pixel space
# PGD as CIFAR-10S-style robustness is reported: L-inf ball of 4/255, 10 steps of 1/255,
# in [0, 1] pixel space, from a uniform random start in the ball (Madry et al. 2018).
PGD_EPS = 4 / 255
PGD_STEP = 1 / 255
PGD_STEPS = 10
PGD_RANDOM_START = True

# Learning-rate schedules a job can ask for (loop.build_scheduler): "onecycle" (one
# cycle over the whole run, Smith & Topin 2019: the platform's default), "multistep"
# (lr x gamma at each milestone epoch, as the mixup paper trains), "cosine" (cosine
# annealing to 0 over the run, per step).
LR_SCHEDULES = ("onecycle", "multistep", "cosine")

# Training recipes a job can take as a preset. "mixup_cifar" is the CIFAR-10 setting of
# Zhang et al. 2018 ("mixup: Beyond Empirical Risk Minimization", section 3.2, and its
# reference code facebookresearch/mixup-cifar10): PreAct ResNet-18, SGD with momentum
# 0.9 (no Nesterov), lr 0.1 divided by 10 after epochs 100 and 150, 200 epochs, batch
# 128, weight decay 1e-4, random crops of 32x32 from images padded by 4 pixels and
# horizontal flips. A job with recipe "custom" keeps its own settings.
RECIPES: dict[str, dict] = {
    "mixup_cifar": {
        "architecture": "preact_resnet18",
        "epochs": 200,
        "batch_size": 128,
        "learning_rate": 0.1,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 1e-4,
        "lr_schedule": "multistep",
        "lr_milestones": [100, 150],
        "lr_gamma": 0.1,
        "augment": True,
    },
}
RECIPE_NAMES = ("custom", *RECIPES)


@dataclass
class TrainConfig:
    architecture: str = "small_cnn"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_schedule: str = "onecycle"  # one of LR_SCHEDULES
    lr_milestones: list[int] = field(default_factory=list)  # epochs, for "multistep"
    lr_gamma: float = 0.1  # lr factor at each milestone, for "multistep"
    augment: bool = False  # random crop (padding crop_padding) and horizontal flip
    crop_padding: int = 4
    seed: int = 0
    online_alpha: float = 0.0  # > 0: mix each batch online with lam ~ Beta(alpha, alpha)
    online_mixing: str = "mixup"  # the mixing method online (datasets.mixing registry)
    device: str = "auto"  # auto | cpu | cuda
    # None: on exactly when the device is CUDA. Set True to run the CUDA settings on CPU
    # (bf16 autocast and channels_last exist there too), as the tests do.
    amp: bool | None = None
    channels_last: bool | None = None
    compile: bool = False  # torch.compile the model for training
    compile_backend: str = "inductor"
    fgsm_eps: float = FGSM_EPS
    pgd_eps: float = PGD_EPS
    pgd_step: float = PGD_STEP
    pgd_steps: int = PGD_STEPS
    pgd_random_start: bool = PGD_RANDOM_START


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
