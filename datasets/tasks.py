from celery import shared_task

from . import services


@shared_task(acks_late=True)
def generate_stimulus_set(stimulus_set_id: int) -> int:
    """Render a stimulus set's images; returns how many were stored."""
    return services.generate_stimuli(stimulus_set_id).done
