from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from datasets.services import import_dataset
from datasets.sources import SOURCE_KINDS


class Command(BaseCommand):
    help = "Import a dataset: CIFAR-10 (python format), an image folder, a .npz or the demo."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="slug for the dataset, e.g. cifar10-test")
        parser.add_argument("--kind", choices=SOURCE_KINDS, required=True)
        parser.add_argument("--path", help="archive, folder or .npz file")
        parser.add_argument("--split", default="test", choices=["train", "test"])
        parser.add_argument(
            "--download",
            action="store_true",
            help="CIFAR-10 only: fetch the official archive into --path (needs a network)",
        )

    def handle(self, *args, **opts) -> None:
        try:
            dataset = import_dataset(
                name=opts["name"],
                kind=opts["kind"],
                path=opts["path"],
                split=opts["split"],
                download=opts["download"],
                # Whoever runs this has a shell on the server already; the import
                # folders bound what the admin's users can read.
                any_path=True,
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {dataset.name}: {dataset.num_images} images of "
                f"{dataset.height}x{dataset.width}x{dataset.channels}, "
                f"classes {', '.join(dataset.class_names)}"
            )
        )
