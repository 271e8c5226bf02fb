import secrets

from django.db import migrations, models

import datasets.models


def fill_keys(apps, schema_editor):
    Stimulus = apps.get_model("datasets", "Stimulus")
    batch = []
    for stimulus in Stimulus.objects.only("pk").iterator(chunk_size=2000):
        stimulus.key = secrets.token_urlsafe(16)
        batch.append(stimulus)
        if len(batch) >= 2000:
            Stimulus.objects.bulk_update(batch, ["key"])
            batch = []
    Stimulus.objects.bulk_update(batch, ["key"])


class Migration(migrations.Migration):
    """Stimuli get an opaque key to be served under, instead of their H-Mix file name."""

    dependencies = [
        ("datasets", "0003_dataset_id_space"),
    ]

    operations = [
        migrations.AddField(
            model_name="stimulus",
            name="key",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.RunPython(fill_keys, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="stimulus",
            name="key",
            field=models.CharField(
                default=datasets.models.new_stimulus_key,
                editable=False,
                max_length=32,
                unique=True,
            ),
        ),
    ]
