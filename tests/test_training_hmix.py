"""Relabel against mixup on the real H-Mix data, evaluated against CIFAR-10H."""

import numpy as np
import pytest

from elicitation.models import Study
from elicitation.services import import_hmix
from tests.conftest import shared_data_dir
from training.models import TrainingJob
from training.selectors import heldout_split, job_data
from training.services import create_job

pytestmark = pytest.mark.shared_data


def test_relabel_vs_mixup_on_hmix_endpoints(db, django_capture_on_commit_callbacks, settings):
    folder = shared_data_dir() / "hmix"
    cifar10h = shared_data_dir() / "cifar10h" / "cifar10h-probs.npy"
    if not folder.is_dir() or not cifar10h.exists():
        pytest.skip(f"H-Mix or CIFAR-10H data not found under {shared_data_dir()}")
    settings.HILLMIX_CIFAR10H_PROBS = cifar10h
    import_hmix(folder)
    grid = Study.objects.get(slug="hmix-construct").stimulus_set
    studies = list(Study.objects.filter(slug__in=["hmix-construct", "hmix-select-shuffled"]))
    dataset = grid.dataset
    assert dataset.id_space == "cifar10-test"

    jobs = {}
    for policy in ("mixup", "relabel"):
        with django_capture_on_commit_callbacks(execute=True):
            jobs[policy] = create_job(
                name=f"hmix-{policy}",
                comparison="hmix",
                dataset=dataset,
                policy=policy,
                stimulus_sets=[grid],
                studies=studies if policy == "relabel" else [],
                epochs=2,
                seeds=[0],
                heldout_fraction=0.2,
                split_seed=0,
            )
    for job in jobs.values():
        job.refresh_from_db()
        assert job.status == "succeeded", (job.error, job.log)
        metrics = job.results.get().metrics
        assert metrics["n_eval"] == 97 and metrics["ce_human"] > 0, metrics
        assert "cross-entropy against CIFAR-10H" in job.log

    # Same mixed points for both policies; only their labels differ.
    mixup, relabel = (
        job_data(TrainingJob.objects.get(pk=jobs[p].pk), 0) for p in ("mixup", "relabel")
    )
    assert len(mixup.train.mixed_images) == len(relabel.train.mixed_images) > 1000
    np.testing.assert_array_equal(mixup.train.mixed_images, relabel.train.mixed_images)
    assert not np.allclose(mixup.train.mixed_labels, relabel.train.mixed_labels)
    # The held-out endpoint images are scored against their CIFAR-10H distributions.
    _, held = heldout_split(dataset.num_images, 0.2, 0)
    ids = np.load(folder / "hmix_endpoints.npz")["test_index"][held]
    np.testing.assert_allclose(mixup.evaluation.soft_labels, np.load(cifar10h)[ids])
