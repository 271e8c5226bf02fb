"""Session tokens are kept only as SHA-256 hashes (a browser's existing cookie keeps
working: its token is hashed in place); a study can set a target per condition and a
return link for its 'study full' page."""

import hashlib

from django.db import migrations, models

import elicitation.models


def hash_tokens(apps, schema_editor) -> None:
    Session = apps.get_model("elicitation", "Session")
    for session in Session.objects.only("id", "token_hash").iterator():
        session.token_hash = hashlib.sha256(session.token_hash.encode()).hexdigest()
        session.save(update_fields=["token_hash"])


class Migration(migrations.Migration):
    dependencies = [("elicitation", "0007_session_quiz_on_instructions_page")]

    operations = [
        migrations.RenameField(model_name="session", old_name="token", new_name="token_hash"),
        migrations.RunPython(hash_tokens, migrations.RunPython.noop, elidable=True),
        migrations.AlterField(
            model_name="session",
            name="token_hash",
            field=models.CharField(
                default=elicitation.models.unheld_secret_hash, max_length=64, unique=True
            ),
        ),
        migrations.AddField(
            model_name="study",
            name="participants_per_condition",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Target per condition: when every condition holds this many "
                "completed or active sessions (excluded ones never count), newcomers see a "
                "'study full' page. Empty: no limit.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="study",
            name="full_return_url",
            field=models.URLField(
                blank=True,
                help_text="Where the 'study full' page sends people back to the recruiter "
                "(e.g. the recruiter's return link). Empty: the page asks them to return the "
                "study.",
                max_length=500,
            ),
        ),
    ]
