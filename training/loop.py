"""Training and evaluation loops. Pure torch/numpy: no Django, no database.

Everything a step needs lives on the training device: the images are uploaded once as
uint8 (N, C, H, W), and each batch is indexed, augmented (random crop and flip),
converted to [0, 1] floats, mixed (the mixing registry's torch path) and labelled (the
policy's torch label map) there, so no step waits for a copy to or from the host. On
CUDA the loop uses channels_last and bf16 autocast (TrainConfig.amp and
.channels_last turn them on elsewhere too: the tests run those lines on CPU), and
optionally torch.compile.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from datasets.mixing import get_method

from . import metrics
from .config import Cancelled, EvalData, Progress, TrainConfig, TrainData
from .nets import HiddenMix, build_model
from .policies import OnlineLabelMap


@dataclass
class TrainResult:
    model: torch.nn.Module
    device: str
    train_seconds: float
    images_seen: int

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.train_seconds if self.train_seconds else 0.0


def pick_device(preference: str) -> torch.device:
    """torch.device for "cpu", "cuda" or "auto" (CUDA when visible); raises RuntimeError
    for "cuda" without a GPU."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA was asked for but no GPU is visible")
        return torch.device("cuda")
    return torch.device("cpu")


def _to_device(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, C) numpy -> uint8 (N, C, H, W) on the device (one upload)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(device)


def _floats(batch: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = batch.float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    x = images.astype(np.float32) / 255.0
    return x.mean(axis=(0, 1, 2)).tolist(), (x.std(axis=(0, 1, 2)) + 1e-3).tolist()


def crop_flip(
    x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, padding: int
) -> torch.Tensor:
    """Crop each image of x (N, C, H, W) from its copy zero-padded by `padding` pixels
    on every side, at row `top[i]` and column `left[i]` (0..2 * padding; padding,
    padding is the image itself), then mirror it left-right where flip[i]. One
    gather for the whole batch, on x's device and in x's dtype."""
    n, _, height, width = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = top[:, None] + torch.arange(height, device=x.device)  # (N, H)
    cols = torch.arange(width, device=x.device).expand(n, width)
    cols = torch.where(flip[:, None], width - 1 - cols, cols) + left[:, None]  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indices (N, H, W) around the channel slice -> (N, H, W, C).
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def random_crop_flip(x: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation (He et al. 2016; the mixup paper's recipe):
    a random crop of the image padded by `padding` zero pixels, and a horizontal flip
    with probability 1/2, drawn per image from torch's generator on x's device."""
    n = x.shape[0]
    top = torch.randint(0, 2 * padding + 1, (n,), device=x.device)
    left = torch.randint(0, 2 * padding + 1, (n,), device=x.device)
    flip = torch.rand(n, device=x.device) < 0.5
    return crop_flip(x, top, left, flip, padding)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with the config's lr, momentum, Nesterov flag and weight decay."""
    return torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov and cfg.momentum > 0,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The config's schedule (config.LR_SCHEDULES), stepped once per batch:
    "onecycle" over all steps; "multistep": lr * gamma ** (milestones passed), a
    milestone m taking effect at the first step of epoch m (0-based), as the mixup
    paper's lr / 10 after epochs 100 and 150; "cosine": cosine annealing from lr to 0.
    Raises ValueError for another name."""
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.lr_schedule == "onecycle":
        # The job's momentum holds throughout: OneCycleLR would otherwise cycle it
        # between 0.85 and 0.95 whatever the job says.
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total, cycle_momentum=False
        )
    if cfg.lr_schedule == "multistep":
        milestones = sorted(cfg.lr_milestones)

        def factor(step: int) -> float:
            epoch = step // steps_per_epoch
            return cfg.lr_gamma ** sum(1 for m in milestones if epoch >= m)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        )
    raise ValueError(f"unknown lr schedule {cfg.lr_schedule!r}")


def _cuda_settings(cfg: TrainConfig, device: torch.device) -> tuple[bool, bool]:
    on_cuda = device.type == "cuda"
    amp = on_cuda if cfg.amp is None else cfg.amp
    channels_last = on_cuda if cfg.channels_last is None else cfg.channels_last
    return amp, channels_last


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def train_model(
    cfg: TrainConfig,
    data: TrainData,
    label_map: OnlineLabelMap | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train on base images (one-hot) and mixed points (soft labels), or on online
    mixing of the base images when cfg.online_alpha > 0: each batch is mixed with a
    shuffled copy of itself at lam ~ Beta(alpha, alpha), one lam per batch (Zhang et
    al. 2018), by the registered method cfg.online_mixing (datasets.mixing, its torch
    path, on the training device; "manifold_mixup" mixes hidden states at a random
    eligible block of the model instead, Verma et al. 2019), and labelled by
    label_map.torch at the effective lam. With cfg.augment every image is randomly
    cropped and flipped first. Raises ValueError for an unknown method or schedule,
    or online mixing without a label map."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = pick_device(cfg.device)
    amp, channels_last = _cuda_settings(cfg, device)
    online = cfg.online_alpha > 0
    if online and label_map is None:
        raise ValueError("online mixup needs a label map")
    mixing = get_method(cfg.online_mixing)  # ValueError for an unknown method
    hidden = not mixing.makes_images  # Manifold Mixup: mixed inside the model
    images = (
        np.concatenate([data.base_images, data.mixed_images])
        if len(data.mixed_images) and not online
        else data.base_images
    )
    mean, std = channel_stats(data.base_images)
    model = build_model(cfg.architecture, images.shape[3], data.num_classes, mean, std).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model, backend=cfg.compile_backend) if cfg.compile else model
    x_all = _to_device(images, device)
    hard = torch.as_tensor(data.base_labels, dtype=torch.long, device=device)
    if not online:
        onehot = F.one_hot(hard, data.num_classes).float()
        soft = torch.as_tensor(data.mixed_labels, dtype=torch.float32, device=device)
        y_all = torch.cat([onehot, soft]) if len(data.mixed_labels) else onehot
    n = len(x_all)
    steps_per_epoch = max(1, (n + cfg.batch_size - 1) // cfg.batch_size)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    seen = 0
    start = time.perf_counter()
    model.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, device=device)
        for step in range(steps_per_epoch):
            if should_stop is not None and should_stop():
                raise Cancelled()
            index = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            batch = x_all[index]
            if cfg.augment:
                batch = random_crop_flip(batch, cfg.crop_padding)
            x = _floats(batch, channels_last)
            mix = None
            if online:
                lam = float(rng.beta(cfg.online_alpha, cfg.online_alpha))
                perm = torch.randperm(len(index), device=device)
                classes = hard[index]
                if hidden:
                    block = int(rng.choice(model.mix_blocks))
                    mix = HiddenMix(block, perm, lam)
                    kept = lam
                else:
                    x, kept_all = mixing.mix_torch(x, x[perm], np.full(len(index), lam), rng)
                    # One lam per batch, so every image keeps the same share; the label
                    # map is given that effective share, not the lam drawn.
                    kept = float(kept_all[0])
                y = label_map.torch(classes, classes[perm], kept)
            else:
                y = y_all[index]
            with _autocast(device, amp):
                logits = forward(x) if mix is None else forward(x, mix)
            loss = -(y * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(index)
            if on_progress is not None and (step == steps_per_epoch - 1 or step % 20 == 0):
                on_progress(Progress(epoch, step, steps_per_epoch, float(loss.detach()), seen))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return TrainResult(model, device.type, time.perf_counter() - start, seen)


def _predict(model: torch.nn.Module, x: torch.Tensor, amp: bool) -> torch.Tensor:
    with torch.no_grad(), _autocast(x.device, amp):
        return torch.softmax(model(x).float(), dim=1)


def predict_probs(
    model: torch.nn.Module, images: np.ndarray, cfg: TrainConfig, batch_size: int = 512
) -> np.ndarray:
    """(N, K) float64 softmax outputs for uint8 (N, H, W, C) images."""
    device = next(model.parameters()).device
    amp, channels_last = _cuda_settings(cfg, device)
    model.eval()
    x_all = _to_device(images, device)
    probs = [
        _predict(model, _floats(x_all[s : s + batch_size], channels_last), amp)
        for s in range(0, len(x_all), batch_size)
    ]
    return torch.cat(probs).cpu().numpy().astype(np.float64)


def evaluate(
    model: torch.nn.Module, data: EvalData, cfg: TrainConfig, batch_size: int = 512
) -> tuple[dict, bytes]:
    """Accuracy, top-2 and worst-class accuracy, CE / total variation / entropy rank
    correlation against human soft labels (where known), FGSM and PGD CE and accuracy,
    ECE (15 bins), RMS calibration error (adaptive bins of 100), and a reliability
    diagram (PNG). The attacks use the seed's own generator (PGD's random start).
    A figure that is undefined (NaN outputs of a diverged model) is None."""
    device = next(model.parameters()).device
    amp, channels_last = _cuda_settings(cfg, device)
    model.eval()
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    x_all = _to_device(data.images, device)
    y_all = torch.as_tensor(data.labels, dtype=torch.long, device=device)
    clean, fgsm_probs, pgd_probs = [], [], []
    for start in range(0, len(x_all), batch_size):
        x = _floats(x_all[start : start + batch_size], channels_last)
        labels = y_all[start : start + batch_size]
        clean.append(_predict(model, x, amp))
        with _autocast(device, amp):
            x_fgsm = metrics.fgsm(model, x, labels, cfg.fgsm_eps)
            x_pgd = metrics.pgd(
                model,
                x,
                labels,
                cfg.pgd_eps,
                cfg.pgd_step,
                cfg.pgd_steps,
                cfg.pgd_random_start,
                generator,
            )
        fgsm_probs.append(_predict(model, x_fgsm, amp))
        pgd_probs.append(_predict(model, x_pgd, amp))
    probs, probs_fgsm, probs_pgd = (
        torch.cat(p).cpu().numpy().astype(np.float64) for p in (clean, fgsm_probs, pgd_probs)
    )
    reference = (
        data.soft_labels if data.soft_labels is not None else np.eye(probs.shape[1])[data.labels]
    )
    results = {
        "n_eval": len(data.labels),
        "accuracy": metrics.accuracy(probs, data.labels),
        "top2_accuracy": metrics.top_k_accuracy(probs, data.labels, 2),
        "worst_class_accuracy": metrics.worst_class_accuracy(probs, data.labels),
        **metrics.human_measures(probs, data.soft_labels),
        "fgsm_accuracy": metrics.accuracy(probs_fgsm, data.labels),
        "fgsm_ce": metrics.soft_cross_entropy(probs_fgsm, reference),
        "pgd_accuracy": metrics.accuracy(probs_pgd, data.labels),
        "pgd_ce": metrics.soft_cross_entropy(probs_pgd, reference),
        "ece": metrics.expected_calibration_error(probs, data.labels),
        "rms_calibration_error": metrics.rms_calibration_error(probs, data.labels),
    }
    return metrics.undefined_as_none(results), metrics.reliability_diagram(probs, data.labels)


def human_reference_measures(model: torch.nn.Module, data: EvalData, cfg: TrainConfig) -> dict:
    """metrics.human_measures of the model's predictions against data.soft_labels."""
    return metrics.undefined_as_none(
        metrics.human_measures(predict_probs(model, data.images, cfg), data.soft_labels)
    )


def checkpoint_bytes(model: torch.nn.Module, cfg: TrainConfig | None = None) -> bytes:
    """torch.save of {"state_dict": CPU tensors, "config": the TrainConfig as a dict}."""
    buffer = io.BytesIO()
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "config": asdict(cfg) if cfg else None}, buffer)
    return buffer.getvalue()
