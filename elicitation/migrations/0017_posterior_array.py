"""An adaptive study's posteriors per pool of sessions (live, pilot, simulated), and on
PostgreSQL as ``double precision[]``, so the save adds a judgment's log-likelihood in
its own statement (services.judgments).

The rows are a cache of the stored judgments: the old blobs also counted pilot and
simulated answers, so every study's rows are rebuilt from its judgments, per pool, by
the project's recomputation (services.sessions.write_recomputed_posteriors)."""

from django.db import migrations, models

import elicitation.models

TABLE = "elicitation_pairposterior"


def to_array(apps, schema_editor):
    """PostgreSQL: the column becomes an array (filled by the rebuild below). Elsewhere
    the blob stays a blob."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"ALTER TABLE {TABLE} DROP COLUMN log_posterior, "
            "ADD COLUMN log_posterior double precision[] NOT NULL DEFAULT '{}'"
        )
        schema_editor.execute(f"ALTER TABLE {TABLE} ALTER COLUMN log_posterior DROP DEFAULT")


def rebuild(apps, schema_editor):
    """Rebuild the rows a database held before this migration, through the project's
    recomputation (current code: `manage.py rebuild_posteriors` does the same, for a
    database migrated past this point some other way). A new database has no rows, and
    then no current model is queried: a later migration's columns cannot break it."""
    PairPosterior = apps.get_model("elicitation", "PairPosterior")
    if not PairPosterior.objects.exists():
        return
    from elicitation.models import Study
    from elicitation.services.sessions import write_recomputed_posteriors

    for study in Study.objects.filter(posteriors__isnull=False).distinct():
        write_recomputed_posteriors(study)


class Migration(migrations.Migration):
    dependencies = [
        ("elicitation", "0016_per_study_image_keys"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="pairposterior", name="one_posterior_per_pair"),
        migrations.AddField(
            model_name="pairposterior",
            name="pool",
            field=models.CharField(
                choices=[("live", "Live"), ("pilot", "Pilot"), ("simulated", "Simulated")],
                default="live",
                max_length=10,
            ),
        ),
        migrations.AddConstraint(
            model_name="pairposterior",
            constraint=models.UniqueConstraint(
                fields=("study", "pair", "pool"), name="one_posterior_per_pair_and_pool"
            ),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="pairposterior",
                    name="log_posterior",
                    field=elicitation.models.LogPosteriorField(),
                ),
            ],
            database_operations=[migrations.RunPython(to_array)],
        ),
        migrations.RunPython(rebuild),
    ]
