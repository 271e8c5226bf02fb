"""Writes for training: creating, running, cancelling jobs and storing results."""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from datasets.mixing import get_method

from . import policies
from .config import RECIPES, Cancelled, Progress, TrainConfig
from .models import SeedResult, TrainingJob
from .selectors import heldout_size, job_data

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
# A running job whose heartbeat is older than this is taken to have lost its worker.
HEARTBEAT_STALE = timedelta(seconds=90)
PROGRESS_EVERY_S = 1.0  # database writes from the training loop, at most this often
# Bounds on a job's optimiser settings (beside settings.HILLMIX_LIMITS): values outside
# them are mistakes, not experiments.
MAX_LEARNING_RATE = 10.0
MAX_WEIGHT_DECAY = 0.1
MAX_MILESTONES = 20
# Seeds feed numpy's Generator (which refuses negative seeds) and torch.manual_seed (which
# refuses seeds past 2**64 - 1): 0..2**32 - 1, the range every seeding API takes.
MAX_SEED = 2**32 - 1


def apply_recipe(fields: dict) -> dict:
    """The job settings with its recipe's preset (config.RECIPES) written over them;
    fields unchanged for recipe "custom" (or none)."""
    preset = RECIPES.get(fields.get("recipe") or "custom", {})
    return {**fields, **preset}


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def create_job(*, stimulus_sets=(), studies=(), enqueue: bool = True, **fields) -> TrainingJob:
    """Check a job's settings (its recipe's preset applied: apply_recipe), store it and
    queue it for a worker. Raises ValidationError naming what is wrong."""
    job = TrainingJob(**apply_recipe(fields))
    job.full_clean(exclude=["seeds", "lr_milestones"])
    seeds = job.seeds or [0]
    if (
        not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
        or len(set(seeds)) != len(seeds)
        or not all(0 <= s <= MAX_SEED for s in seeds)
    ):
        raise ValidationError({"seeds": f"seeds must be distinct whole numbers in 0..{MAX_SEED}"})
    if not 0 <= job.split_seed <= MAX_SEED:
        raise ValidationError({"split_seed": f"the split seed must lie in 0..{MAX_SEED}"})
    job.seeds = seeds
    if not 0 < job.heldout_fraction < 1:
        raise ValidationError("heldout_fraction must lie strictly between 0 and 1")
    if not 0 < heldout_size(job.dataset.num_images, job.heldout_fraction) < job.dataset.num_images:
        raise ValidationError(
            {
                "heldout_fraction": f"of {job.dataset.num_images} images, this fraction leaves "
                "no image to hold out or none to train on"
            }
        )
    if job.epochs < 1 or job.batch_size < 1 or job.learning_rate <= 0:
        raise ValidationError("epochs, batch size and learning rate must be positive")
    check_job_bounds(
        epochs=job.epochs,
        batch_size=job.batch_size,
        seeds=seeds,
        learning_rate=job.learning_rate,
        momentum=job.momentum,
        weight_decay=job.weight_decay,
        lr_schedule=job.lr_schedule,
        lr_milestones=job.lr_milestones,
        lr_gamma=job.lr_gamma,
    )
    policy = policies.get_policy(job.policy)  # full_clean has checked the name
    if policy.needs_judgments and not studies:
        raise ValidationError(
            f"the {job.policy} policy needs studies whose judgments label the stimuli"
        )
    if job.online_alpha < 0:
        raise ValidationError("online_alpha cannot be negative")
    if job.online_alpha > 0 and policy.label_map(1) is None:
        raise ValidationError(
            "online mixup needs a policy that labels any lam: "
            f"{sorted(policies.LABEL_MAP_POLICIES)}"
        )
    if not get_method(job.online_mixing).makes_images and job.online_alpha == 0:
        raise ValidationError(
            {"online_mixing": f"{job.online_mixing} mixes online only: set online_alpha > 0"}
        )
    if policy.adds_points and job.online_alpha == 0 and not stimulus_sets:
        raise ValidationError(f"the {job.policy} policy needs stimulus sets (or online mixup)")
    for stimulus_set in stimulus_sets:
        if stimulus_set.dataset_id != job.dataset_id:
            raise ValidationError(f"stimulus set {stimulus_set} is not from {job.dataset}")
    with transaction.atomic():
        job.save()
        job.stimulus_sets.set(stimulus_sets)
        job.studies.set(studies)
        if enqueue:
            transaction.on_commit(lambda: enqueue_job(job.pk))
    return job


def check_job_bounds(
    *,
    epochs: int,
    batch_size: int,
    seeds: list[int],
    learning_rate: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    lr_schedule: str = "onecycle",
    lr_milestones: list[int] | None = None,
    lr_gamma: float = 0.1,
) -> None:
    """Raise ValidationError if a job asks for more than settings.HILLMIX_LIMITS allows
    (epochs, number of seeds, batch size): one job must not hold a worker for ever; or
    for optimiser settings outside their sense (learning rate in (0, MAX_LEARNING_RATE],
    momentum in [0, 1), weight decay in [0, MAX_WEIGHT_DECAY], lr_gamma in (0, 1],
    milestones: at most MAX_MILESTONES distinct whole epochs in 1..epochs - 1, and only
    for the multistep schedule). Errors name their setting."""
    limits = settings.HILLMIX_LIMITS
    errors = {}
    if not 0 < learning_rate <= MAX_LEARNING_RATE:
        errors["learning_rate"] = f"the learning rate must lie in (0, {MAX_LEARNING_RATE}]"
    if not 0 <= momentum < 1:
        errors["momentum"] = "momentum must lie in [0, 1)"
    if not 0 <= weight_decay <= MAX_WEIGHT_DECAY:
        errors["weight_decay"] = f"weight decay must lie in [0, {MAX_WEIGHT_DECAY}]"
    if not 0 < lr_gamma <= 1:
        errors["lr_gamma"] = "lr_gamma must lie in (0, 1]"
    milestones = lr_milestones or []
    if (
        not isinstance(milestones, list)
        or len(milestones) > MAX_MILESTONES
        or not all(isinstance(m, int) and not isinstance(m, bool) for m in milestones)
        or len(set(milestones)) != len(milestones)
        or not all(1 <= m < epochs for m in milestones)
    ):
        errors["lr_milestones"] = (
            f"milestones must be at most {MAX_MILESTONES} distinct whole epochs in 1..{epochs - 1}"
        )
    elif milestones and lr_schedule != "multistep":
        errors["lr_milestones"] = "milestones apply to the multistep schedule only"
    if epochs > limits["max_epochs"]:
        errors["epochs"] = f"at most {limits['max_epochs']} epochs (HILLMIX_MAX_EPOCHS)"
    if len(seeds) > limits["max_seeds"]:
        errors["seeds"] = f"at most {limits['max_seeds']} seeds (HILLMIX_MAX_SEEDS)"
    if not limits["min_batch_size"] <= batch_size <= limits["max_batch_size"]:
        errors["batch_size"] = (
            f"batch size must lie in {limits['min_batch_size']}..{limits['max_batch_size']} "
            "(HILLMIX_MIN_BATCH_SIZE, HILLMIX_MAX_BATCH_SIZE)"
        )
    if errors:
        raise ValidationError(errors)


def enqueue_job(job_id: int) -> None:
    from .tasks import run_training_job

    result = run_training_job.apply_async(args=[job_id])
    TrainingJob.objects.filter(pk=job_id, task_id="").update(task_id=result.id)


def _append_log(job_id: int, line: str) -> None:
    stamp = timezone.now().strftime("%H:%M:%S")
    TrainingJob.objects.filter(pk=job_id).update(log=Concat(F("log"), Value(f"{stamp} {line}\n")))


def _alive_here(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return int(pid) != os.getpid()


class Busy(Exception):
    """Another live worker is running this job right now."""


def claim_job(job_id: int) -> TrainingJob | None:
    """Take a job for this worker, or None when there is nothing left to do.

    A job marked running whose worker died (same host: its process is gone; another
    host: no heartbeat for HEARTBEAT_STALE) is taken over as a new attempt; past
    MAX_ATTEMPTS it is marked failed rather than left running.
    """
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status in (
            TrainingJob.Status.SUCCEEDED,
            TrainingJob.Status.FAILED,
            TrainingJob.Status.CANCELLED,
        ):
            return None
        if job.cancel_requested:
            _finish(job, TrainingJob.Status.CANCELLED)
            return None
        if job.status == TrainingJob.Status.RUNNING and job.worker != worker_name():
            fresh = job.heartbeat_at and timezone.now() - job.heartbeat_at < HEARTBEAT_STALE
            if _alive_here(job.worker) or (
                fresh and not job.worker.startswith(socket.gethostname() + ":")
            ):
                raise Busy(job.worker)
        if job.attempts >= MAX_ATTEMPTS:
            job.error = f"gave up after {job.attempts} attempts (the worker was lost each time)"
            _finish(job, TrainingJob.Status.FAILED)
            return None
        job.status = TrainingJob.Status.RUNNING
        job.attempts += 1
        job.worker = worker_name()
        job.heartbeat_at = timezone.now()
        job.started_at = job.started_at or timezone.now()
        job.save(update_fields=["status", "attempts", "worker", "heartbeat_at", "started_at"])
    _append_log(job.pk, f"attempt {job.attempts} on {job.worker}")
    return job


def _finish(job: TrainingJob, status: str) -> None:
    job.status = status
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "finished_at", "error"])


class _Heartbeat:
    """Progress writes and cancel checks from inside the loop, at most once a second."""

    def __init__(self, job_id: int, seed: int, seed_index: int) -> None:
        self.job_id, self.seed, self.seed_index = job_id, seed, seed_index
        self.last = 0.0
        self.cancelled = False

    def progress(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_S and p.step != p.steps_per_epoch - 1:
            return
        self.last = now
        TrainingJob.objects.filter(pk=self.job_id).update(
            heartbeat_at=timezone.now(),
            progress={
                "seed": self.seed,
                "seed_index": self.seed_index,
                "epoch": p.epoch,
                "step": p.step,
                "steps_per_epoch": p.steps_per_epoch,
                "loss": round(p.loss, 5),
                "images_seen": p.images_seen,
            },
        )
        self.cancelled = TrainingJob.objects.filter(pk=self.job_id, cancel_requested=True).exists()

    def should_stop(self) -> bool:
        return self.cancelled


def run_job(job_id: int) -> str:
    """Run every seed that has no result yet; returns the job's final status."""
    job = claim_job(job_id)
    if job is None:
        return TrainingJob.objects.filter(pk=job_id).values_list("status", flat=True).first() or ""
    try:
        done = set(job.results.values_list("seed", flat=True))
        for index, seed in enumerate(job.seeds):
            if seed in done:
                continue  # finished by an earlier attempt
            _run_seed(job, seed, index)
    except Cancelled:
        _append_log(job.pk, "cancelled")
        _finish(job, TrainingJob.Status.CANCELLED)
    except Exception as exc:  # noqa: BLE001 - any failure ends the job as failed
        logger.exception("training job %s failed", job.pk)
        job.error = f"{type(exc).__name__}: {exc}"
        _append_log(job.pk, f"failed: {job.error}")
        _finish(job, TrainingJob.Status.FAILED)
    else:
        _append_log(job.pk, "succeeded")
        _finish(job, TrainingJob.Status.SUCCEEDED)
    return job.status


def _run_seed(job: TrainingJob, seed: int, index: int) -> SeedResult:
    # PyTorch is imported here, on the worker that trains, not in every web process.
    from .loop import checkpoint_bytes, evaluate, human_reference_measures, train_model

    data = job_data(job, seed)
    for note in data.notes:
        _append_log(job.pk, f"seed {seed}: {note}")
    config = train_config(job, seed)
    heartbeat = _Heartbeat(job.pk, seed, index)
    trained = train_model(
        config, data.train, data.label_map, heartbeat.progress, heartbeat.should_stop
    )
    metrics, diagram = evaluate(trained.model, data.evaluation, config)
    if metrics["ce_human"] is None and data.human_reference is not None:
        metrics.update(human_reference_measures(trained.model, data.human_reference, config))
        metrics["ce_human_reference"] = f"{len(data.human_reference.images)} held-out stimuli"
    _append_log(
        job.pk,
        f"seed {seed}: {trained.images_per_second:.0f} images/s on "
        f"{trained.device}; accuracy {metrics['accuracy']:.3f}",
    )
    result, _ = SeedResult.objects.update_or_create(
        job=job,
        seed=seed,
        defaults={
            "metrics": metrics,
            "device": trained.device,
            "train_images_per_second": trained.images_per_second,
        },
    )
    result.reliability_diagram.save(f"job{job.pk}-seed{seed}.png", ContentFile(diagram), save=False)
    result.checkpoint.save(
        f"job{job.pk}-seed{seed}.pt",
        ContentFile(checkpoint_bytes(trained.model, config)),
        save=False,
    )
    result.save(update_fields=["reliability_diagram", "checkpoint"])
    return result


def train_config(job: TrainingJob, seed: int) -> TrainConfig:
    """The loop's settings for one seed of a job. A job's device "auto" means the
    worker's setting HILLMIX_TRAIN_DEVICE (auto: CUDA when visible, else CPU)."""
    device = job.device if job.device != "auto" else settings.HILLMIX_TRAIN_DEVICE
    return TrainConfig(
        architecture=job.architecture,
        epochs=job.epochs,
        batch_size=job.batch_size,
        lr=job.learning_rate,
        momentum=job.momentum,
        nesterov=job.nesterov,
        weight_decay=job.weight_decay,
        lr_schedule=job.lr_schedule,
        lr_milestones=list(job.lr_milestones),
        lr_gamma=job.lr_gamma,
        augment=job.augment,
        seed=seed,
        online_alpha=job.online_alpha,
        online_mixing=job.online_mixing,
        device=device,
        compile=job.torch_compile,
    )


def cancel_job(job: TrainingJob) -> None:
    """Stop a job: a queued one at once, a running one at its next step."""
    from hillmix_site.celery import app

    TrainingJob.objects.filter(pk=job.pk).update(cancel_requested=True)
    updated = TrainingJob.objects.filter(pk=job.pk, status=TrainingJob.Status.QUEUED).update(
        status=TrainingJob.Status.CANCELLED, finished_at=timezone.now()
    )
    if updated and job.task_id:
        app.control.revoke(job.task_id)


def fail_stale_jobs(jobs=None, older_than: timedelta = timedelta(minutes=10)) -> int:
    """Running jobs whose worker stopped beating long ago (a host lost for good, so no
    redelivery came) end as failed instead of showing as running forever."""
    jobs = TrainingJob.objects.all() if jobs is None else jobs
    return jobs.filter(
        status=TrainingJob.Status.RUNNING, heartbeat_at__lt=timezone.now() - older_than
    ).update(
        status=TrainingJob.Status.FAILED,
        finished_at=timezone.now(),
        error="the worker stopped responding",
    )
