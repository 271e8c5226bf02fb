"""The Infer slider's start can be random per trial; trials whose images a browser
could not load are logged for the researcher."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("elicitation", "0008_session_secret_hash_and_condition_targets")]

    operations = [
        migrations.AddField(
            model_name="study",
            name="slider_start",
            field=models.CharField(
                choices=[
                    ("50", "In the middle (50)"),
                    ("random", "Anywhere on the scale, random per trial"),
                ],
                default="50",
                max_length=10,
            ),
        ),
        migrations.CreateModel(
            name="ImageLoadFailure",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("trial_index", models.PositiveIntegerField()),
                (
                    "failed",
                    models.PositiveSmallIntegerField(
                        help_text="How many of the trial's images failed."
                    ),
                ),
                (
                    "attempts",
                    models.PositiveSmallIntegerField(help_text="Loads tried per image."),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "session",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="image_failures",
                        to="elicitation.session",
                    ),
                ),
            ],
            options={"ordering": ["session", "created_at"]},
        ),
    ]
