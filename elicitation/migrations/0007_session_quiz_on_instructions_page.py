"""The quiz became the instructions page's last screen: no session waits at a separate
quiz step any more."""

from django.db import migrations, models


def quiz_to_instructions(apps, schema_editor) -> None:
    apps.get_model("elicitation", "Session").objects.filter(state="quiz").update(
        state="instructions"
    )


class Migration(migrations.Migration):
    dependencies = [("elicitation", "0006_session_index_without_last_seen")]

    operations = [
        migrations.RunPython(quiz_to_instructions, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="session",
            name="state",
            field=models.CharField(
                choices=[
                    ("instructions", "Instructions"),
                    ("trials", "Trials"),
                    ("feedback", "Feedback"),
                    ("complete", "Complete"),
                ],
                default="instructions",
                max_length=15,
            ),
        ),
    ]
