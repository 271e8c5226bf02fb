"""Online training with every mixing method of the registry: the label map sees each
method's effective lam, and a job over the H-Mix endpoints runs on a real worker."""

import io

import numpy as np
import pytest

from datasets.mixing import MIXING_METHODS
from training.config import TrainConfig, TrainData
from training.policies import get_policy

FINISHED = ("succeeded", "failed", "cancelled")


@pytest.mark.parametrize("name", list(MIXING_METHODS))
def test_online_labels_get_each_methods_effective_lam(name):
    """On 5 x 7 images a Beta draw is almost never a whole share of the 35 pixels: the
    lams the label map is given are effective lams (fixed points of the method's
    effective_lams), whole shares for the methods that cut and paste pixels."""
    pytest.importorskip("torch")
    from training.loop import train_model

    method = MIXING_METHODS[name]
    rng = np.random.default_rng(0)
    data = TrainData(
        rng.integers(0, 256, (96, 5, 7, 3), dtype=np.uint8),
        rng.integers(0, 3, 96),
        np.zeros((0, 5, 7, 3), np.uint8),
        np.zeros((0, 3)),
        num_classes=3,
    )
    given = []
    mixup_map = get_policy("mixup").label_map(3)

    class Recording(type(mixup_map)):
        def torch(self, c1, c2, lam):
            given.append(float(lam))
            return super().torch(c1, c2, lam)

    label_map = Recording(mixup_map.any_lam, mixup_map.any_lam_torch, 3)
    cfg = TrainConfig(epochs=1, batch_size=16, online_alpha=1.0, online_mixing=name, device="cpu")
    result = train_model(cfg, data, label_map=label_map)
    assert result.images_seen == 96 and len(given) == 6
    for lam in given:
        assert method.effective_lams(np.array([lam]), 5, 7)[0] == lam
    whole_shares = [abs(lam * 35 - round(lam * 35)) < 1e-9 for lam in given]
    assert all(whole_shares) == (name in ("cutmix", "fmix", "resizemix", "saliencymix"))


@pytest.mark.shared_data
@pytest.mark.django_db(transaction=True)
def test_a_human_fit_job_with_every_mixing_method_runs_on_a_real_worker(shared_data, start_worker):
    """For every registered method (a new one is covered without an edit), a human_fit
    job labels online batches mixed by it (one epoch, the small CNN, the H-Mix endpoint
    images) through one real Celery worker; each stored checkpoint records the method it
    was trained with. One worker and one H-Mix import serve all the jobs."""
    torch = pytest.importorskip("torch")
    from elicitation.models import Study
    from elicitation.services import import_hmix
    from tests.worker import wait_for
    from training.models import TrainingJob
    from training.services import create_job

    import_hmix(shared_data / "hmix")
    grid = Study.objects.get(slug="hmix-construct").stimulus_set
    studies = list(Study.objects.filter(slug__in=["hmix-construct", "hmix-select-shuffled"]))
    worker = start_worker()
    jobs = {
        name: create_job(
            name=f"online-{name}",
            comparison="methods",
            dataset=grid.dataset,
            policy="human_fit",
            architecture="small_cnn",
            stimulus_sets=[grid],
            studies=studies,
            online_alpha=1.0,
            online_mixing=name,
            epochs=1,
            batch_size=128,
            seeds=[0],
            device="cpu",
        ).pk
        for name in MIXING_METHODS
    }
    wait_for(
        lambda: all(j.status in FINISHED for j in TrainingJob.objects.all()),
        240 * len(jobs),
        worker,
        "a job per mixing method to finish",
    )
    failed = {
        name: (job.error, job.log)
        for name, job in ((n, TrainingJob.objects.get(pk=pk)) for n, pk in jobs.items())
        if job.status != "succeeded"
    }
    assert not failed, failed
    for name, pk in jobs.items():
        job = TrainingJob.objects.get(pk=pk)
        assert job.worker and job.attempts == 1, name
        result = job.results.get()
        assert result.metrics["n_eval"] == 97 and 0 <= result.metrics["accuracy"] <= 1, name
        with result.checkpoint.open("rb") as handle:
            saved = torch.load(io.BytesIO(handle.read()), weights_only=False)
        assert saved["config"]["online_mixing"] == name
        assert saved["config"]["online_alpha"] == 1.0
