"""The reply to a new training job tells one story about it."""

import pytest


@pytest.mark.django_db(transaction=True)
def test_in_process_job_reply_shows_the_state_it_has_run_to(demo_dataset, client, settings):
    """With tasks run in-process the job has run before the reply is written (its
    transaction committed, so on_commit fired): the reply is the stored job."""
    from django.contrib.auth import get_user_model

    from training.models import TrainingJob

    user = get_user_model().objects.create_superuser("r", password="p")
    client.force_login(user)
    body = {
        "name": "in-process",
        "dataset": demo_dataset.name,
        "policy": "onehot",
        "architecture": "small_cnn",
        "epochs": 1,
        "seeds": [0],
    }
    reply = client.post("/api/training-jobs/", body, content_type="application/json")
    assert reply.status_code == 201, reply.content
    data = reply.json()
    stored = TrainingJob.objects.get(pk=data["id"])
    assert stored.status == "succeeded"
    assert data["status"] == stored.status and len(data["results"]) == 1
    assert data["finished_at"] is not None
