from django.conf import settings
from django.db import models

from datasets.models import Dataset, StimulusSet
from elicitation.models import Study

from .config import ARCHITECTURES
from .policies import policy_choices


class TrainingJob(models.Model):
    """A training run: dataset and split, labelled stimuli, policy, model and seeds."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Device(models.TextChoices):
        AUTO = "auto", "CUDA when present, else CPU"
        CPU = "cpu"
        CUDA = "cuda"

    name = models.CharField(max_length=120)
    comparison = models.SlugField(
        max_length=80,
        blank=True,
        help_text="Jobs sharing this name form one table on the comparison page.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="training_jobs")
    heldout_fraction = models.FloatField(default=0.2)
    split_seed = models.IntegerField(default=0)
    stimulus_sets = models.ManyToManyField(StimulusSet, blank=True)
    studies = models.ManyToManyField(
        Study, blank=True, help_text="Studies whose judgments label the stimuli."
    )
    policy = models.CharField(max_length=20, choices=policy_choices)
    architecture = models.CharField(
        max_length=20, choices=[(a, a) for a in ARCHITECTURES], default="small_cnn"
    )
    epochs = models.PositiveIntegerField(default=10)
    batch_size = models.PositiveIntegerField(default=128)
    learning_rate = models.FloatField(default=0.05)
    seeds = models.JSONField(default=list, help_text="e.g. [0, 1, 2]")
    online_alpha = models.FloatField(
        default=0.0, help_text="> 0: online mixup with lam ~ Beta(alpha, alpha) via the policy."
    )
    device = models.CharField(max_length=10, choices=Device.choices, default=Device.AUTO)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.JSONField(default=dict, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    task_id = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid running it")
    cancel_requested = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("launch_trainingjob", "Can launch and cancel training jobs")]

    def __str__(self) -> str:
        return f"{self.name} ({self.policy})"


# What a researcher chooses when launching a job (the form and the API both take these).
JOB_SETTINGS = [
    "name",
    "comparison",
    "dataset",
    "heldout_fraction",
    "split_seed",
    "stimulus_sets",
    "studies",
    "policy",
    "architecture",
    "epochs",
    "batch_size",
    "learning_rate",
    "seeds",
    "online_alpha",
    "device",
]
JOB_STATE = [
    "status",
    "progress",
    "attempts",
    "error",
    "log",
    "created_at",
    "started_at",
    "finished_at",
]


class SeedResult(models.Model):
    """Metrics of one seed of a job; written once per (job, seed), so a re-run task
    replaces rather than duplicates."""

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="results")
    seed = models.IntegerField()
    metrics = models.JSONField()
    device = models.CharField(max_length=10)
    train_images_per_second = models.FloatField()
    reliability_diagram = models.FileField(upload_to="training/diagrams/", blank=True)
    checkpoint = models.FileField(upload_to="training/checkpoints/", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "seed"]
        constraints = [models.UniqueConstraint(fields=["job", "seed"], name="one_result_per_seed")]

    def __str__(self) -> str:
        return f"{self.job} seed {self.seed}"
