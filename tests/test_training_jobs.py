"""Training jobs end to end: a scripted observer, real Celery worker, comparison page."""

import os
import signal

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from elicitation.services import RecruiterIds, finish_instructions, record_judgment, start_session
from tests.test_flow import construct_answer
from tests.worker import wait_for
from training.models import TrainingJob
from training.services import create_job

FINISHED = ("succeeded", "failed", "cancelled")


def scripted_observers(study, count: int = 4, midpoint: float = 0.6) -> None:
    """People who put every pair's 50/50 point at `midpoint`, through the participant
    services (consent was given; no quiz in this study)."""
    for i in range(count):
        session = start_session(study, RecruiterIds(f"observer-{i}"))
        finish_instructions(session)
        while True:
            session.refresh_from_db()
            if session.position >= session.trial_count:
                break
            start = round(10 * session.trial_order[session.position]["start_lam"])  # grid step
            step = 1 if midpoint * 10 > start else -1
            steps = [start + step * k for k in range(abs(round(midpoint * 10) - start) + 1)]
            record_judgment(
                session.token,
                construct_answer(
                    session,
                    confidence=80,
                    response={"start_step": start, "final_step": steps[-1], "steps": steps},
                ),
            )


@pytest.fixture
def observed_study(make_study):
    study = make_study(
        "construct",
        n_pairs=30,
        conditions=1,
        quiz=[],
        repeat_trials=0,
        feedback_questions=[],
        ask_confidence=True,
    )
    scripted_observers(study)
    return study


def launch(study, policy: str, comparison: str, **extra) -> TrainingJob:
    return create_job(
        name=f"{comparison}-{policy}",
        comparison=comparison,
        dataset=study.stimulus_set.dataset,
        policy=policy,
        architecture="small_cnn",
        seeds=[0, 1],
        stimulus_sets=[study.stimulus_set],
        studies=[study] if policy.startswith("relabel") else [],
        **{"epochs": 3, **extra},
    )


@pytest.mark.django_db(transaction=True)
def test_policies_train_on_a_real_worker_and_show_on_the_comparison_page(
    observed_study, start_worker, admin_client
):
    worker = start_worker()
    jobs = [launch(observed_study, policy, "demo") for policy in ("onehot", "mixup", "relabel")]
    wait_for(
        lambda: all(j.status in FINISHED for j in TrainingJob.objects.all()),
        600,
        worker,
        "three jobs to finish",
    )
    for job in TrainingJob.objects.all():
        assert job.status == "succeeded", (job.error, job.log)
        assert job.worker and job.task_id and job.attempts == 1
        assert sorted(job.results.values_list("seed", flat=True)) == [0, 1]
        for result in job.results.all():
            assert 0 <= result.metrics["accuracy"] <= 1 and result.metrics["ece"] >= 0
            assert 0 <= result.metrics["pgd_accuracy"] <= result.metrics["top2_accuracy"] <= 1
            assert result.reliability_diagram and result.checkpoint
    relabel = TrainingJob.objects.get(pk=jobs[2].pk)
    assert "mixed points" in relabel.log and "0 mixed points" not in relabel.log
    page = admin_client.get("/admin/training/trainingjob/compare/", {"comparison": "demo"})
    html = page.content.decode()
    assert page.status_code == 200
    rows = {row["policy"]: row for row in page.context["rows"]}
    assert list(rows) == ["onehot", "mixup", "relabel"]
    for row in rows.values():
        assert row["stats"]["accuracy"]["n"] == 2 and row["stats"]["fgsm_ce"]["mean"] > 0
        assert row["stats"]["pgd_ce"]["ci_high"] >= row["stats"]["pgd_ce"]["mean"]
        assert f"/admin/training/trainingjob/{row['jobs'][0].pk}/change/" in html
    assert 'id="differences"' in html and len(page.context["differences"]) > 0


@pytest.mark.django_db(transaction=True)
def test_killed_worker_process_means_retried_never_left_running(observed_study, start_worker):
    worker = start_worker()
    job = launch(observed_study, "mixup", "kill", epochs=60)
    job.seeds = [0]
    TrainingJob.objects.filter(pk=job.pk).update(seeds=[0])

    def training_started():
        job.refresh_from_db()
        return job.status == "running" and job.progress.get("images_seen", 0) > 0 and job.worker

    wait_for(training_started, 120, worker, "the job to start training")
    pid = int(job.worker.rpartition(":")[2])
    os.kill(pid, signal.SIGKILL)  # the pool process running the task dies mid-job
    wait_for(
        lambda: TrainingJob.objects.get(pk=job.pk).status in FINISHED,
        240,
        worker,
        "the job to end after the worker was killed",
    )
    job.refresh_from_db()
    assert job.status in ("succeeded", "failed")
    if job.status == "succeeded":
        assert job.attempts == 2 and "attempt 2" in job.log
        assert job.results.count() == 1


def test_job_settings_are_checked(observed_study):
    dataset = observed_study.stimulus_set.dataset
    cases = [
        ({"policy": "relabel", "stimulus_sets": [observed_study.stimulus_set]}, "needs studies"),
        ({"policy": "mixup"}, "needs stimulus sets"),
        ({"policy": "relabel", "online_alpha": 1.0, "studies": [observed_study]}, "labels any lam"),
        ({"policy": "mixup", "online_alpha": 1.0, "heldout_fraction": 1.5}, "heldout_fraction"),
        ({"policy": "mixup", "online_alpha": 1.0, "seeds": [1, 1]}, "distinct"),
        ({"policy": "nonsense"}, "policy"),
    ]
    for fields, message in cases:
        with pytest.raises(ValidationError, match=message):
            create_job(name="bad", dataset=dataset, enqueue=False, **fields)
    assert TrainingJob.objects.count() == 0


def test_seeds_a_worker_cannot_use_are_refused_when_the_job_is_made(
    observed_study, client, role_user
):
    """numpy refuses negative seeds and torch seeds past 2**64: such a job was stored,
    queued and failed on the worker. Seeds and the split seed lie in 0..2**32 - 1."""
    dataset = observed_study.stimulus_set.dataset
    online = {"policy": "mixup", "online_alpha": 1.0}
    for fields, message in (
        ({**online, "seeds": [-1]}, "seeds"),
        ({**online, "seeds": [0, 2**64]}, "seeds"),
        ({**online, "split_seed": -3}, "split_seed"),
    ):
        with pytest.raises(ValidationError, match=message):
            create_job(name="bad", dataset=dataset, epochs=1, enqueue=False, **fields)
    client.force_login(role_user("r", "Researcher"))
    body = {"name": "api", "dataset": dataset.name, "epochs": 1, **online}
    for bad, field in (({"seeds": [-1]}, "seeds"), ({"split_seed": -1}, "split_seed")):
        reply = client.post("/api/training-jobs/", {**body, **bad}, content_type="application/json")
        assert reply.status_code == 400 and field in reply.json(), reply.content
    assert TrainingJob.objects.count() == 0
    job = create_job(
        name="ok", dataset=dataset, epochs=1, enqueue=False, seeds=[2**32 - 1], **online
    )
    assert job.seeds == [2**32 - 1]


def test_a_split_that_leaves_a_side_empty_is_refused(observed_study):
    """A held-out fraction that rounds to no held-out image (or no training image) was
    accepted, trained, and failed in evaluation on an empty set."""
    dataset = observed_study.stimulus_set.dataset
    n = dataset.num_images
    online = {"policy": "mixup", "online_alpha": 1.0}
    for fraction in (0.4 / n, 1 - 0.4 / n):
        with pytest.raises(ValidationError, match="heldout_fraction"):
            create_job(
                name="bad",
                dataset=dataset,
                epochs=1,
                enqueue=False,
                heldout_fraction=fraction,
                **online,
            )
    assert TrainingJob.objects.count() == 0


def test_cancel_queued_job(observed_study):
    from training.services import cancel_job

    job = create_job(
        name="later", dataset=observed_study.stimulus_set.dataset, policy="onehot", enqueue=False
    )
    cancel_job(job)
    job.refresh_from_db()
    assert job.status == "cancelled" and job.cancel_requested


def test_running_job_stops_when_cancelled(observed_study):
    from training import services

    job = create_job(
        name="stop",
        dataset=observed_study.stimulus_set.dataset,
        policy="onehot",
        epochs=50,
        enqueue=False,
    )
    real_progress = services._Heartbeat.progress

    def cancel_on_first_progress(self, p):
        TrainingJob.objects.filter(pk=job.pk).update(cancel_requested=True)
        self.last = 0
        real_progress(self, p)

    services._Heartbeat.progress = cancel_on_first_progress
    try:
        assert services.run_job(job.pk) == "cancelled"
    finally:
        services._Heartbeat.progress = real_progress
    job.refresh_from_db()
    assert job.status == "cancelled" and job.results.count() == 0


def test_rerun_of_finished_job_changes_nothing(observed_study, django_capture_on_commit_callbacks):
    from training.services import run_job

    with django_capture_on_commit_callbacks(execute=True):
        job = launch(observed_study, "mixup", "twice", epochs=1)
    job.refresh_from_db()
    assert job.status == "succeeded" and job.results.count() == 2
    metrics = list(job.results.values_list("metrics", flat=True))
    assert run_job(job.pk) == "succeeded"
    assert list(job.results.values_list("metrics", flat=True)) == metrics
    assert TrainingJob.objects.get(pk=job.pk).attempts == 1


def test_training_job_api(observed_study, client, role_user, django_capture_on_commit_callbacks):
    client.force_login(role_user("r", "Researcher"))
    body = {
        "name": "api-job",
        "dataset": observed_study.stimulus_set.dataset.name,
        "policy": "relabel",
        "stimulus_sets": [observed_study.stimulus_set.name],
        "studies": [observed_study.slug],
        "epochs": 1,
        "seeds": [3],
    }
    bad = client.post(
        "/api/training-jobs/", {**body, "studies": []}, content_type="application/json"
    )
    assert bad.status_code == 400 and "needs studies" in str(bad.json())
    assert TrainingJob.objects.count() == 0
    with django_capture_on_commit_callbacks(execute=True):
        created = client.post("/api/training-jobs/", body, content_type="application/json")
    assert created.status_code == 201, created.content
    job = client.get(f"/api/training-jobs/{created.json()['id']}/").json()
    assert job["status"] == "succeeded" and job["results"][0]["seed"] == 3
    assert "accuracy" in job["results"][0]["metrics"]
    cancelled = client.post(f"/api/training-jobs/{job['id']}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "succeeded"
    assert Client().get("/api/training-jobs/").status_code in (401, 403)


def test_without_cifar10h_ce_uses_the_studies_soft_labels(
    make_study, django_capture_on_commit_callbacks
):
    """The demo digits have no CIFAR-10H: CE is measured on held-out mixed stimuli
    against the soft labels people gave them."""
    import uuid

    from elicitation.services import finish_instructions, record_judgment, start_session

    study = make_study(
        "soft_label", n_pairs=12, conditions=1, quiz=[], repeat_trials=0, feedback_questions=[]
    )
    session = start_session(study, RecruiterIds("labeller"))
    finish_instructions(session)
    for _ in range(session.trial_count):
        session.refresh_from_db()
        record_judgment(
            session.token,
            {
                "session": session.reference,
                "trial_index": session.position,
                "idempotency_key": str(uuid.uuid4()),
                "rt_ms": 900,
                "response": {
                    "first_class": "Three",
                    "first_prob": 70,
                    "second_class": "Eight",
                    "second_prob": 20,
                    "impossible": [],
                },
            },
        )
    with django_capture_on_commit_callbacks(execute=True):
        job = create_job(
            name="own-labels",
            dataset=study.stimulus_set.dataset,
            policy="onehot",
            epochs=1,
            seeds=[0],
            heldout_fraction=0.6,
            studies=[study],
            stimulus_sets=[study.stimulus_set],
        )
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    metrics = job.results.get().metrics
    assert metrics["ce_human"] > 0 and "held-out stimuli" in metrics["ce_human_reference"]
    assert "soft labels on" in job.log


def test_stalled_jobs_can_be_marked_failed_from_the_admin(observed_study, admin_client):
    from datetime import timedelta

    from django.utils import timezone

    dataset = observed_study.stimulus_set.dataset
    stalled = create_job(name="lost", dataset=dataset, policy="onehot", enqueue=False)
    alive = create_job(name="busy", dataset=dataset, policy="onehot", enqueue=False)
    TrainingJob.objects.filter(pk=stalled.pk).update(
        status="running", heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    TrainingJob.objects.filter(pk=alive.pk).update(status="running", heartbeat_at=timezone.now())
    admin_client.post(
        "/admin/training/trainingjob/",
        {"action": "fail_stalled", "_selected_action": [stalled.pk, alive.pk]},
    )
    assert TrainingJob.objects.get(pk=stalled.pk).status == "failed"
    assert TrainingJob.objects.get(pk=alive.pk).status == "running"


# --- issue 20: the recipe, the online mixing method, the measures over seeds -----------


def test_recipe_preset_and_the_bounds_of_the_new_settings(observed_study):
    dataset = observed_study.stimulus_set.dataset
    job = create_job(
        name="paper",
        dataset=dataset,
        policy="onehot",
        recipe="mixup_cifar",
        epochs=3,
        enqueue=False,
    )
    job.refresh_from_db()
    assert (job.architecture, job.epochs, job.batch_size, job.learning_rate) == (
        "preact_resnet18",
        200,
        128,
        0.1,
    )
    assert (job.momentum, job.nesterov, job.weight_decay) == (0.9, False, 1e-4)
    assert (job.lr_schedule, job.lr_milestones, job.lr_gamma, job.augment) == (
        "multistep",
        [100, 150],
        0.1,
        True,
    )
    from training.services import train_config

    config = train_config(job, 4)
    assert (config.lr, config.weight_decay, config.lr_milestones, config.seed) == (
        0.1,
        1e-4,
        [100, 150],
        4,
    )
    online = {"policy": "mixup", "online_alpha": 1.0}
    cases = [
        ({**online, "weight_decay": 0.5}, "weight_decay"),
        ({**online, "momentum": 1.0}, "momentum"),
        ({**online, "lr_gamma": 0.0}, "lr_gamma"),
        ({**online, "learning_rate": 50.0}, "learning_rate"),
        ({**online, "lr_schedule": "multistep", "lr_milestones": [10]}, "lr_milestones"),
        ({**online, "lr_schedule": "multistep", "lr_milestones": [2, 2]}, "lr_milestones"),
        ({**online, "lr_schedule": "multistep", "lr_milestones": ["2"]}, "lr_milestones"),
        ({**online, "lr_milestones": [2]}, "multistep schedule only"),
        ({**online, "lr_schedule": "sometimes"}, "lr_schedule"),
        ({**online, "online_mixing": "nonsense"}, "online_mixing"),
        ({"policy": "onehot", "online_mixing": "manifold_mixup"}, "online_alpha > 0"),
        ({**online, "recipe": "fastest"}, "recipe"),
    ]
    for fields, message in cases:
        with pytest.raises(ValidationError, match=message):
            create_job(name="bad", dataset=dataset, epochs=10, enqueue=False, **fields)
    assert TrainingJob.objects.count() == 1


def test_api_job_with_online_cutmix_the_recipe_settings_and_its_checkpoint(
    observed_study, client, role_user, django_capture_on_commit_callbacks
):
    """The online mixing method is chosen through the API (it was not before), with
    augmentation and a multistep schedule; the per-seed checkpoint carries its settings
    and is downloadable only with the permission to view results."""
    import io

    import torch

    client.force_login(role_user("r", "Researcher"))
    body = {
        "name": "api-cutmix",
        "dataset": observed_study.stimulus_set.dataset.name,
        "policy": "mixup",
        "online_alpha": 1.0,
        "online_mixing": "cutmix",
        "augment": True,
        "lr_schedule": "multistep",
        "lr_milestones": [1],
        "weight_decay": 1e-4,
        "epochs": 2,
        "seeds": [0],
    }
    for bad, field in (
        ({"online_mixing": "nonsense"}, "online_mixing"),
        ({"lr_milestones": [5]}, "lr_milestones"),
    ):
        reply = client.post("/api/training-jobs/", {**body, **bad}, content_type="application/json")
        assert reply.status_code == 400 and field in reply.json(), reply.content
    assert TrainingJob.objects.count() == 0
    with django_capture_on_commit_callbacks(execute=True):
        created = client.post("/api/training-jobs/", body, content_type="application/json")
    assert created.status_code == 201, created.content
    job = client.get(f"/api/training-jobs/{created.json()['id']}/").json()
    assert job["status"] == "succeeded", job["log"]
    assert (job["online_mixing"], job["augment"], job["lr_milestones"]) == ("cutmix", True, [1])
    assert "online cutmix, alpha 1.0" in job["log"]
    metrics = job["results"][0]["metrics"]
    for name in ("top2_accuracy", "worst_class_accuracy", "pgd_accuracy", "pgd_ce"):
        assert 0 <= metrics[name] and (name == "pgd_ce" or metrics[name] <= 1), name
    assert metrics["top2_accuracy"] >= metrics["accuracy"] >= metrics["worst_class_accuracy"]
    url = job["results"][0]["checkpoint"]
    download = client.get(url)
    assert download.status_code == 200
    saved = torch.load(io.BytesIO(b"".join(download.streaming_content)), weights_only=True)
    assert saved["config"]["online_mixing"] == "cutmix" and saved["config"]["augment"]
    assert saved["config"]["lr_milestones"] == [1] and "1.classifier.weight" in saved["state_dict"]
    # A preset replaces what is given (stored, not run here: 200 epochs).
    paper = client.post(
        "/api/training-jobs/",
        {**body, "name": "paper", "recipe": "mixup_cifar"},
        content_type="application/json",
    )
    assert paper.status_code == 201, paper.content
    assert (paper.json()["epochs"], paper.json()["lr_milestones"]) == (200, [100, 150])
    assert Client().get(url).status_code == 404
    client.force_login(_user_without_roles())
    assert client.get(url).status_code == 404


def _user_without_roles():
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("plain", password="pw")


def test_device_comes_from_the_setting(observed_study, settings):
    """A job on device "auto" trains where HILLMIX_TRAIN_DEVICE says: cpu, or cuda (which
    fails cleanly where no GPU is visible)."""
    import torch

    from training.services import run_job

    dataset = observed_study.stimulus_set.dataset
    settings.HILLMIX_TRAIN_DEVICE = "cpu"
    job = create_job(name="cpu", dataset=dataset, policy="onehot", epochs=1, enqueue=False)
    assert run_job(job.pk) == "succeeded"
    assert job.results.get().device == "cpu"
    if torch.cuda.is_available():
        return
    settings.HILLMIX_TRAIN_DEVICE = "cuda"
    job = create_job(name="cuda", dataset=dataset, policy="onehot", epochs=1, enqueue=False)
    assert run_job(job.pk) == "failed"
    job.refresh_from_db()
    assert "CUDA was asked for" in job.error


def test_comparison_page_says_which_differences_exceed_seed_noise(observed_study, admin_client):
    """Per-seed figures stored for two policies: accuracy is better by 0.1 on every
    seed (beyond seed noise, paired by seed), ECE differs by noise around 0."""
    from training.models import SeedResult

    dataset = observed_study.stimulus_set.dataset
    figures = {
        "onehot": {"accuracy": [0.50, 0.62, 0.71], "ece": [0.10, 0.05, 0.08]},
        "mixup": {"accuracy": [0.60, 0.72, 0.80], "ece": [0.07, 0.09, 0.06]},
    }
    for policy, values in figures.items():
        job = create_job(
            name=policy,
            comparison="noise",
            dataset=dataset,
            policy=policy,
            online_alpha=1.0 if policy == "mixup" else 0.0,
            seeds=[0, 1, 2],
            enqueue=False,
        )
        for seed in range(3):
            SeedResult.objects.create(
                job=job,
                seed=seed,
                metrics={name: v[seed] for name, v in values.items()},
                device="cpu",
                train_images_per_second=1.0,
            )
    page = admin_client.get("/admin/training/trainingjob/compare/", {"comparison": "noise"})
    assert page.status_code == 200
    rows = {row["label"]: row for row in page.context["rows"]}
    assert list(rows) == ["onehot", "mixup (online mixup, alpha 1)"]
    accuracy = rows["onehot"]["stats"]["accuracy"]
    assert accuracy["n"] == 3 and accuracy["std"] == pytest.approx(
        np.std([0.5, 0.62, 0.71], ddof=1)
    )
    assert accuracy["ci_low"] < accuracy["mean"] < accuracy["ci_high"]
    beyond = page.context["beyond_noise"]
    assert [(d["metric"], d["better"]) for d in beyond] == [
        ("accuracy", "mixup (online mixup, alpha 1)")
    ]
    assert beyond[0]["mean"] == pytest.approx(-0.0966667) and beyond[0]["seeds"] == [0, 1, 2]
    ece = [d for d in page.context["differences"] if d["metric"] == "ece"][0]
    assert not ece["exceeds_noise"]
    html = page.content.decode()
    differences = html[html.index('id="differences"') :]
    assert "accuracy" in differences and "Calib: ECE" not in differences.split("</table>")[0]
    assert f"[{accuracy['ci_low']:.3f}, {accuracy['ci_high']:.3f}]" in html


def test_comparison_page_with_one_seed_uneven_seeds_and_a_bad_name(observed_study, admin_client):
    """One seed: a mean with std 0 and no interval, nothing to compare; jobs of different
    seed counts pair on the seeds they share; a comparison name holding NUL (PostgreSQL
    refuses it in text) is a 400, not a 500."""
    from training.models import SeedResult

    dataset = observed_study.stimulus_set.dataset
    runs = (("onehot", [0]), ("mixup", [0, 1, 2]), ("onehot_smooth", [1, 2]), ("solo", [5]))
    for policy, seeds in runs:
        job = create_job(
            name=policy,
            comparison="solo" if policy == "solo" else "uneven",
            dataset=dataset,
            policy="mixup" if policy == "mixup" else "onehot",
            online_alpha=1.0 if policy == "mixup" else 0.0,
            seeds=seeds,
            enqueue=False,
        )
        for seed in seeds:
            SeedResult.objects.create(
                job=job,
                seed=seed,
                metrics={"accuracy": 0.5 + 0.01 * seed + (0.1 if policy == "mixup" else 0)},
                device="cpu",
                train_images_per_second=1.0,
            )
    page = admin_client.get("/admin/training/trainingjob/compare/", {"comparison": "uneven"})
    assert page.status_code == 200
    rows = {row["label"]: row for row in page.context["rows"]}
    onehot = rows["onehot"]["stats"]["accuracy"]  # seeds 0 (one job) and 1, 2 (another)
    assert onehot["n"] == 3 and onehot["half_width"] is not None
    differences = [d for d in page.context["differences"] if d["metric"] == "accuracy"]
    assert [d["seeds"] for d in differences] == [[0, 1, 2]]
    single = admin_client.get("/admin/training/trainingjob/compare/", {"comparison": "solo"})
    assert single.status_code == 200
    solo = single.context["rows"][0]["stats"]["accuracy"]
    assert (solo["n"], solo["std"], solo["half_width"]) == (1, 0.0, None)
    assert "Nothing to compare" in single.content.decode()
    bad = admin_client.get("/admin/training/trainingjob/compare/", {"comparison": "a\x00b"})
    assert bad.status_code == 400


def test_admin_launch_form_takes_the_mixing_method_and_defaults_empty_settings(
    observed_study, admin_client
):
    response = admin_client.post(
        "/admin/training/trainingjob/add/",
        {
            "name": "form-fmix",
            "dataset": observed_study.stimulus_set.dataset.pk,
            "heldout_fraction": 0.2,
            "split_seed": 0,
            "policy": "mixup",
            "architecture": "small_cnn",
            "epochs": 2,
            "batch_size": 32,
            "learning_rate": 0.05,
            "seeds": "[0]",
            "online_alpha": 1.0,
            "online_mixing": "cutmix",
            "augment": "on",
            "weight_decay": "",
            "lr_milestones": "",
            "device": "auto",
        },
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    job = TrainingJob.objects.get(name="form-fmix")
    assert (job.online_mixing, job.augment, job.recipe) == ("cutmix", True, "custom")
    assert (job.weight_decay, job.lr_milestones, job.momentum, job.lr_schedule) == (
        5e-4,
        [],
        0.9,
        "onecycle",
    )
