import secrets

from django.db import models
from django.urls import reverse

from .mixing import image_mixing_choices
from .sources import SOURCE_KINDS


class Dataset(models.Model):
    """A set of labelled source images; the pixels live in one .npz file in storage."""

    name = models.SlugField(max_length=100, unique=True)
    source_kind = models.CharField(max_length=20, choices=[(k, k) for k in SOURCE_KINDS])
    source_path = models.CharField(max_length=500, blank=True)
    split = models.CharField(max_length=20, blank=True)
    class_names = models.JSONField()
    num_images = models.PositiveIntegerField()
    height = models.PositiveSmallIntegerField()
    width = models.PositiveSmallIntegerField()
    channels = models.PositiveSmallIntegerField()
    arrays = models.FileField(upload_to="datasets/")
    id_space = models.CharField(
        max_length=20,
        blank=True,
        help_text="cifar10-test when ids are CIFAR-10 test indices (CIFAR-10H soft labels apply)",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        permissions = [("import_dataset", "Can import datasets")]

    def __str__(self) -> str:
        return self.name


class StimulusSet(models.Model):
    class Kind(models.TextChoices):
        GRID = "grid", "Grid (Construct, Select-Shuffled)"
        SINGLE = "single", "Single (Infer, Soft-label)"

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    name = models.SlugField(max_length=100, unique=True)
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="stimulus_sets")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    mixing_policy = models.CharField(
        max_length=20, choices=image_mixing_choices, default="mixup"
    )
    lams = models.JSONField()
    seed = models.IntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class Pair(models.Model):
    stimulus_set = models.ForeignKey(StimulusSet, on_delete=models.CASCADE, related_name="pairs")
    position = models.PositiveIntegerField()
    class1 = models.CharField(max_length=50)
    id1 = models.IntegerField()
    class2 = models.CharField(max_length=50)
    id2 = models.IntegerField()
    name = models.CharField(max_length=120)

    class Meta:
        ordering = ["stimulus_set", "position"]
        constraints = [
            models.UniqueConstraint(fields=["stimulus_set", "name"], name="unique_pair_in_set"),
        ]

    def __str__(self) -> str:
        return self.name


def new_stimulus_key() -> str:
    """An unguessable name for serving a stimulus: its H-Mix name would tell the
    participant's browser the lam and both classes."""
    return secrets.token_urlsafe(16)


class Stimulus(models.Model):
    """One mixed image: `lam` of the pair's first image, stored at native resolution.
    `name` is the H-Mix name (exports); `key` is for admin previews, and participants
    see a name per study (elicitation.live.image_key)."""

    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="stimuli")
    lam = models.FloatField()
    name = models.CharField(max_length=160)
    image = models.FileField(
        upload_to="stimuli/",
        blank=True,
        help_text="Empty for imported stimuli whose source images are not in the dataset.",
    )
    size_bytes = models.PositiveIntegerField(default=0)
    key = models.CharField(max_length=32, unique=True, default=new_stimulus_key, editable=False)

    class Meta:
        ordering = ["pair", "lam"]
        verbose_name_plural = "stimuli"
        constraints = [
            models.UniqueConstraint(fields=["pair", "lam"], name="unique_lam_per_pair"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def served_url(self) -> str:
        """Where users who may view stimuli fetch the image (admin and API previews,
        hillmix_site.media.stimulus_image). Participants never see it: each study shows
        the image under a name of its own (elicitation.live.study_image_url)."""
        return stimulus_url(self.key)


def stimulus_url(key: str) -> str:
    return reverse("stimulus-image", args=[key])
