import elicitation.models
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("elicitation", "0013_pilot_and_consent"),
    ]

    operations = [
        migrations.AddField(
            model_name="study",
            name="language",
            field=models.CharField(
                choices=elicitation.models.language_choices,
                default="en",
                help_text="The language of the participant pages and their messages (texts "
                "you write, such as the consent text, are shown as written).",
                max_length=10,
            ),
        ),
    ]
