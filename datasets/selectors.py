"""Reads for datasets and stimuli."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from django.core.files.storage import default_storage
from django.db.models import QuerySet

from .models import Dataset, Pair, Stimulus, StimulusSet
from .sources import ImageArrays


@lru_cache(maxsize=4)
def _load_arrays(file_name: str, version: str) -> ImageArrays:
    with default_storage.open(file_name, "rb") as handle, np.load(handle) as data:
        return ImageArrays(
            images=data["images"],
            labels=data["labels"],
            ids=data["ids"],
            class_names=tuple(str(n) for n in data["class_names"]),
        )


def dataset_arrays(dataset: Dataset) -> ImageArrays:
    """The dataset's pixels and labels, cached per process. A dataset's file never
    changes, but a deleted dataset's name (and file name) can come back with other
    images, so the cache key is the row as well as the file."""
    return _load_arrays(dataset.arrays.name, f"{dataset.pk}:{dataset.created_at.isoformat()}")


def stimuli_of_set(stimulus_set: StimulusSet) -> QuerySet[Stimulus]:
    return Stimulus.objects.filter(pair__stimulus_set=stimulus_set).select_related("pair")


def pairs_of_set(stimulus_set: StimulusSet) -> QuerySet[Pair]:
    return Pair.objects.filter(stimulus_set=stimulus_set).order_by("position")


def stimulus_file_name(key: str) -> str | None:
    """The stored file of the stimulus served under `key`, or None (no such stimulus,
    or one without an image). For users allowed to view every stimulus."""
    return Stimulus.objects.filter(key=key).values_list("image", flat=True).first() or None
