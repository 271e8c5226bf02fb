from celery import shared_task

from . import services


@shared_task(acks_late=True)
def import_hmix(folder: str) -> dict:
    """Import the H-Mix data (idempotent, so a redelivered task is harmless)."""
    return services.import_hmix(folder)


@shared_task
def drop_expired_recruiter_ids() -> dict:
    """Drop recruiter ids HILLMIX_RECRUITER_ID_RETENTION_DAYS after their study closed
    (services.consent.drop_expired_recruiter_ids; idempotent). Run daily by Celery beat
    (CELERY_BEAT_SCHEDULE)."""
    from .services import consent

    return consent.drop_expired_recruiter_ids()
