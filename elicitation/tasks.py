from celery import shared_task

from . import services


@shared_task(acks_late=True)
def import_hmix(folder: str) -> dict:
    """Import the H-Mix data (idempotent, so a redelivered task is harmless)."""
    return services.import_hmix(folder)
