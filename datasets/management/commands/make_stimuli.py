from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from datasets.mixing import IMAGE_MIXING_METHODS
from datasets.models import Dataset, StimulusSet
from datasets.services import create_stimulus_set


class Command(BaseCommand):
    help = "Build a stimulus set (grid or single) from random or explicit pairs."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="slug for the stimulus set")
        parser.add_argument("--dataset", required=True)
        parser.add_argument("--kind", choices=StimulusSet.Kind.values, default="grid")
        parser.add_argument("--policy", choices=IMAGE_MIXING_METHODS, default="mixup")
        parser.add_argument("--lams", type=float, nargs="+", help="default: the kind's grid")
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--random-pairs", type=int, metavar="N")
        group.add_argument("--pair", action="append", metavar="Class1_id1_Class2_id2")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, **opts) -> None:
        dataset = Dataset.objects.filter(name=opts["dataset"]).first()
        if dataset is None:
            raise CommandError(f"no dataset named {opts['dataset']!r}")
        try:
            stimulus_set = create_stimulus_set(
                name=opts["name"],
                dataset=dataset,
                kind=opts["kind"],
                lams=opts["lams"],
                mixing_policy=opts["policy"],
                pairs=opts["pair"],
                n_pairs=opts["random_pairs"],
                seed=opts["seed"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        stimulus_set.refresh_from_db()
        self.stdout.write(
            self.style.SUCCESS(
                f"Stimulus set {stimulus_set.name}: {stimulus_set.status}, "
                f"{stimulus_set.done}/{stimulus_set.total} stimuli"
            )
        )
