import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("datasets", "0007_mixing_methods_literature"),
        ("elicitation", "0014_study_language"),
    ]

    operations = [
        migrations.AddField(
            model_name="study",
            name="adaptive_budget",
            field=models.PositiveSmallIntegerField(
                default=60, help_text="Adaptive: trials per session (repeats included)."
            ),
        ),
        migrations.AddField(
            model_name="study",
            name="adaptive_max_per_pair",
            field=models.PositiveSmallIntegerField(
                default=3,
                help_text="Adaptive: each participant sees a pair at most this often "
                "(repeats aside).",
            ),
        ),
        migrations.AddField(
            model_name="study",
            name="adaptive_objective",
            field=models.CharField(
                choices=[
                    (
                        "curve",
                        "The whole curve: information about each pair's midpoint and slope",
                    ),
                    ("midpoint", "Midpoints: every pair's midpoint to +-0.05 first"),
                ],
                default="curve",
                help_text="Adaptive: what the next trial should tell most about "
                "(adaptive.chooser).",
                max_length=10,
            ),
        ),
        migrations.AddField(
            model_name="study",
            name="adaptive_noise",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="Adaptive: the response noise per interface "
                "(adaptive.hmix_fit.fit_noise, fitted to H-Mix); empty: the defaults.",
            ),
        ),
        migrations.AddField(
            model_name="study",
            name="adaptive_repeat_spacing",
            field=models.PositiveSmallIntegerField(
                default=10,
                help_text="Adaptive: a repeat (there are 'repeat trials' of them) comes at "
                "least this many trials after the trial it repeats.",
            ),
        ),
        migrations.AddField(
            model_name="study",
            name="design",
            field=models.CharField(
                choices=[
                    ("fixed", "Fixed: every session shows its condition's stimuli in random order"),
                    ("adaptive", "Adaptive: each next trial is the most informative one"),
                ],
                default="fixed",
                max_length=10,
            ),
        ),
        migrations.CreateModel(
            name="PairPosterior",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("log_posterior", models.BinaryField()),
                ("judgment_count", models.PositiveIntegerField(default=0)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "pair",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="datasets.pair",
                    ),
                ),
                (
                    "study",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="posteriors",
                        to="elicitation.study",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("study", "pair"), name="one_posterior_per_pair"
                    )
                ],
            },
        ),
    ]
