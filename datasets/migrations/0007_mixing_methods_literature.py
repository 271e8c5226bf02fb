import datasets.mixing
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("datasets", "0006_mixing_choices_from_registry"),
    ]

    # FMix, ResizeMix and SaliencyMix join the registry; a stimulus set offers only the
    # methods that make images (not Manifold Mixup), and "saliencymix" needs 11 characters.
    operations = [
        migrations.AlterField(
            model_name="stimulusset",
            name="mixing_policy",
            field=models.CharField(
                choices=datasets.mixing.image_mixing_choices, default="mixup", max_length=20
            ),
        ),
    ]
