from celery import shared_task
from django.conf import settings

from . import services


@shared_task(
    bind=True,
    acks_late=True,  # the message stays in Redis until the job is done...
    reject_on_worker_lost=True,  # ...and goes back to the queue if the worker dies
    time_limit=settings.HILLMIX_TRAINING_TIME_LIMIT,
    soft_time_limit=settings.HILLMIX_TRAINING_TIME_LIMIT - 60,
    max_retries=20,
)
def run_training_job(self, job_id: int) -> str:
    try:
        return services.run_job(job_id)
    except services.Busy as busy:
        # Another live worker holds the job; look again once its heartbeat could be stale.
        raise self.retry(countdown=services.HEARTBEAT_STALE.total_seconds()) from busy
