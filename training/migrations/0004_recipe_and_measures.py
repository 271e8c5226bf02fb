from django.db import migrations, models

import datasets.mixing


class Migration(migrations.Migration):
    """Per-job training recipe (optimiser, schedule, augmentation, preset), the online
    mixing method and torch.compile."""

    dependencies = [
        ("training", "0003_policy_choices_from_registry"),
    ]

    operations = [
        migrations.AddField(
            model_name="trainingjob",
            name="augment",
            field=models.BooleanField(
                default=False, help_text="Random crop (4-pixel padding) and horizontal flip."
            ),
        ),
        migrations.AddField(
            model_name="trainingjob",
            name="lr_gamma",
            field=models.FloatField(default=0.1),
        ),
        migrations.AddField(
            model_name="trainingjob",
            name="lr_milestones",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="multistep: epochs after which the lr is multiplied by lr_gamma, "
                "e.g. [100, 150]",
            ),
        ),
        migrations.AddField(
            model_name="trainingjob",
            name="lr_schedule",
            field=models.CharField(
                choices=[("onecycle", "onecycle"), ("multistep", "multistep"), ("cosine", "cosine")],
                default="onecycle",
                max_length=20,
            ),
        ),
        migrations.AddField(
            model_name="trainingjob",
            name="momentum",
            field=models.FloatField(default=0.9),
        ),
        migrations.AddField(
            model_name="trainingjob",
            name="nesterov",
            field=models.BooleanField(default=True),
        ),
        migrations.AddField(
            model_name="trainingjob",
            name="online_mixing",
            field=models.CharField(
                choices=datasets.mixing.mixing_choices,
                default="mixup",
                help_text="The mixing method of online mixing (with online_alpha > 0).",
                max_length=30,
            ),
        ),
        migrations.AddField(
            model_name="trainingjob",
            name="recipe",
            field=models.CharField(
                choices=[("custom", "custom"), ("mixup_cifar", "mixup_cifar")],
                default="custom",
                help_text="mixup_cifar: the mixup paper's CIFAR recipe (PreAct ResNet-18, 200 "
                "epochs, batch 128, SGD momentum 0.9, lr 0.1 / 10 at epochs 100 and 150, weight "
                "decay 1e-4, crop and flip) sets the training settings below, replacing what is "
                "given; custom: the settings as given.",
                max_length=20,
            ),
        ),
        migrations.AddField(
            model_name="trainingjob",
            name="torch_compile",
            field=models.BooleanField(
                default=False,
                help_text="torch.compile the model for training (pays off on GPUs).",
            ),
        ),
        migrations.AddField(
            model_name="trainingjob",
            name="weight_decay",
            field=models.FloatField(default=0.0005),
        ),
    ]
