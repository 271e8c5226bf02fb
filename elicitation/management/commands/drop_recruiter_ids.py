"""Drop recruiter ids of studies closed more than the retention period ago."""

from django.core.management.base import BaseCommand

from elicitation.services import consent


class Command(BaseCommand):
    help = (
        "Drop the recruiter ids (PROLIFIC_PID, STUDY_ID, SESSION_ID) of studies closed "
        "more than HILLMIX_RECRUITER_ID_RETENTION_DAYS (or --days) ago. Celery beat runs "
        "the same daily; this is for deployments without beat."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--days", type=int, default=None, help="override the setting")

    def handle(self, *args, days: int | None = None, **options) -> None:
        result = consent.drop_expired_recruiter_ids(days=days)
        self.stdout.write(
            f"Dropped recruiter ids of {result['sessions']} sessions and "
            f"{result['participants']} participants and {result['bonuses']} settled bonus "
            f"payments in {len(result['studies'])} studies"
            + (f": {', '.join(result['studies'])}" if result["studies"] else ".")
        )
