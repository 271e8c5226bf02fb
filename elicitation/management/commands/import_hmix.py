from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from elicitation.services import import_hmix


class Command(BaseCommand):
    help = "Import the published H-Mix judgments and endpoint images (idempotent)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "folder",
            nargs="?",
            default=None,
            help="folder with the four H-Mix CSVs and hmix_endpoints.npz "
            "(default: HILLMIX_SHARED_DATA/hmix)",
        )

    def handle(self, *args, **opts) -> None:
        folder = Path(opts["folder"] or Path(settings.SHARED_DATA_DIR) / "hmix")
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a folder")
        try:
            report = import_hmix(folder)
        except (FileNotFoundError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        for interface, result in report.items():
            details = ", ".join(f"{k} {v}" for k, v in result.items() if k != "status")
            self.stdout.write(
                f"{interface}: {result['status']}" + (f" ({details})" if details else "")
            )
