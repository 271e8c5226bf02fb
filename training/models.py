from django.conf import settings
from django.db import models

from datasets.mixing import mixing_choices
from datasets.models import Dataset, StimulusSet
from elicitation.models import Study

from .config import ARCHITECTURES, LR_SCHEDULES, RECIPE_NAMES
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
    recipe = models.CharField(
        max_length=20,
        choices=[(r, r) for r in RECIPE_NAMES],
        default="custom",
        help_text="mixup_cifar: the mixup paper's CIFAR recipe (PreAct ResNet-18, 200 "
        "epochs, batch 128, SGD momentum 0.9, lr 0.1 / 10 at epochs 100 and 150, weight "
        "decay 1e-4, crop and flip) sets the training settings below, replacing what is "
        "given; custom: the settings as given.",
    )
    epochs = models.PositiveIntegerField(default=10)
    batch_size = models.PositiveIntegerField(default=128)
    learning_rate = models.FloatField(default=0.05)
    momentum = models.FloatField(default=0.9)
    nesterov = models.BooleanField(default=True)
    weight_decay = models.FloatField(default=5e-4)
    lr_schedule = models.CharField(
        max_length=20, choices=[(s, s) for s in LR_SCHEDULES], default="onecycle"
    )
    lr_milestones = models.JSONField(
        default=list,
        blank=True,
        help_text="multistep: epochs after which the lr is multiplied by lr_gamma, e.g. [100, 150]",
    )
    lr_gamma = models.FloatField(default=0.1)
    augment = models.BooleanField(
        default=False, help_text="Random crop (4-pixel padding) and horizontal flip."
    )
    seeds = models.JSONField(default=list, help_text="e.g. [0, 1, 2]")
    online_alpha = models.FloatField(
        default=0.0, help_text="> 0: online mixup with lam ~ Beta(alpha, alpha) via the policy."
    )
    online_mixing = models.CharField(
        max_length=30,
        choices=mixing_choices,
        default="mixup",
        help_text="The mixing method of online mixing (with online_alpha > 0).",
    )
    torch_compile = models.BooleanField(
        default=False, help_text="torch.compile the model for training (pays off on GPUs)."
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
    "recipe",
    "epochs",
    "batch_size",
    "learning_rate",
    "momentum",
    "nesterov",
    "weight_decay",
    "lr_schedule",
    "lr_milestones",
    "lr_gamma",
    "augment",
    "seeds",
    "online_alpha",
    "online_mixing",
    "torch_compile",
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
