"""Training and evaluation loops. Pure torch/numpy: no Django, no database.

Images arrive as uint8 (N, H, W, C) and stay uint8 on the device; each batch is
converted to [0, 1] floats there. On CUDA the loop uses channels_last and bf16
autocast; on CPU plain float32.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from datasets.mixing import get_method

from . import metrics
from .config import Cancelled, EvalData, LabelMap, Progress, TrainConfig, TrainData
from .nets import build_model


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
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA was asked for but no GPU is visible")
        return torch.device("cuda")
    return torch.device("cpu")


def _to_device(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(device)


def _floats(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = batch.float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    x = images.astype(np.float32) / 255.0
    return x.mean(axis=(0, 1, 2)).tolist(), (x.std(axis=(0, 1, 2)) + 1e-3).tolist()


def train_model(
    cfg: TrainConfig,
    data: TrainData,
    label_map: LabelMap | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train on base images (one-hot) and mixed points (soft labels), or on online
    mixing of the base images when cfg.online_alpha > 0: each batch is mixed with a
    shuffled copy of itself by the registered method cfg.online_mixing (datasets.mixing,
    its torch path, on the training device) at lam ~ Beta(alpha, alpha), and labelled
    by label_map at the effective lam. Raises ValueError for an unknown method or a
    missing label map."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = pick_device(cfg.device)
    images = (
        np.concatenate([data.base_images, data.mixed_images])
        if len(data.mixed_images)
        else data.base_images
    )
    onehot = np.eye(data.num_classes)[data.base_labels]
    targets = np.concatenate([onehot, data.mixed_labels]) if len(data.mixed_labels) else onehot
    mean, std = channel_stats(data.base_images)
    model = build_model(cfg.architecture, images.shape[3], data.num_classes, mean, std).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    online = cfg.online_alpha > 0
    if online and label_map is None:
        raise ValueError("online mixup needs a label map")
    mixing = get_method(cfg.online_mixing)  # ValueError for an unknown method
    x_all = _to_device(data.base_images if online else images, device)
    y_all = torch.as_tensor(targets, dtype=torch.float32, device=device)
    hard = data.base_labels
    n = len(x_all)
    steps_per_epoch = max(1, (n + cfg.batch_size - 1) // cfg.batch_size)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    seen = 0
    start = time.perf_counter()
    model.train()
    for epoch in range(cfg.epochs):
        order = torch.from_numpy(rng.permutation(n)).to(device)
        for step in range(steps_per_epoch):
            if should_stop is not None and should_stop():
                raise Cancelled()
            index = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x = _floats(x_all[index], device)
            if online:
                lam = float(rng.beta(cfg.online_alpha, cfg.online_alpha))
                perm = torch.randperm(len(index), device=device)
                x, kept = mixing.mix_torch(x, x[perm], np.full(len(index), lam), rng)
                classes = hard[index.cpu().numpy()]
                # One lam per batch (Zhang et al. 2018), so every image keeps the same
                # share; the label map is given that effective share, not the lam drawn.
                y = torch.as_tensor(
                    label_map(classes, classes[perm.cpu().numpy()], float(kept[0])),
                    dtype=torch.float32,
                    device=device,
                )
            else:
                y = y_all[index]
            with autocast:
                logits = model(x)
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


@torch.no_grad()
def _predict(model: torch.nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return torch.softmax(model(x).float(), dim=1)


def evaluate(
    model: torch.nn.Module, data: EvalData, cfg: TrainConfig, batch_size: int = 512
) -> tuple[dict, bytes]:
    """Accuracy, CE against human soft labels, FGSM CE and accuracy, ECE (15 bins),
    RMS calibration error (adaptive bins of 100), and a reliability diagram (PNG)."""
    device = next(model.parameters()).device
    model.eval()
    clean, attacked = [], []
    for start in range(0, len(data.images), batch_size):
        x = _floats(_to_device(data.images[start : start + batch_size], device), device)
        labels = torch.as_tensor(data.labels[start : start + batch_size], device=device)
        clean.append(_predict(model, x, device).cpu())
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            x_adv = metrics.fgsm(model, x, labels, cfg.fgsm_eps)
        attacked.append(_predict(model, x_adv, device).cpu())
    probs = torch.cat(clean).numpy().astype(np.float64)
    probs_adv = torch.cat(attacked).numpy().astype(np.float64)
    reference = (
        data.soft_labels if data.soft_labels is not None else np.eye(probs.shape[1])[data.labels]
    )
    results = {
        "n_eval": len(data.labels),
        "accuracy": metrics.accuracy(probs, data.labels),
        "ce_human": (
            metrics.soft_cross_entropy(probs, data.soft_labels)
            if data.soft_labels is not None
            else None
        ),
        "fgsm_accuracy": metrics.accuracy(probs_adv, data.labels),
        "fgsm_ce": metrics.soft_cross_entropy(probs_adv, reference),
        "ece": metrics.expected_calibration_error(probs, data.labels),
        "rms_calibration_error": metrics.rms_calibration_error(probs, data.labels),
    }
    return results, metrics.reliability_diagram(probs, data.labels)


def human_cross_entropy(model: torch.nn.Module, data: EvalData, batch_size: int = 512) -> float:
    """Cross-entropy of the model's predictions against data.soft_labels."""
    device = next(model.parameters()).device
    model.eval()
    probs = []
    for start in range(0, len(data.images), batch_size):
        x = _floats(_to_device(data.images[start : start + batch_size], device), device)
        probs.append(_predict(model, x, device).cpu())
    return metrics.soft_cross_entropy(torch.cat(probs).numpy().astype(np.float64), data.soft_labels)


def checkpoint_bytes(model: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()
