from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("elicitation", "0011_interface_choices_from_registry"),
    ]

    operations = [
        migrations.AddField(
            model_name="session",
            name="kind",
            field=models.CharField(
                choices=[
                    ("live", "Live"),
                    ("pilot", "Pilot"),
                    ("preview", "Preview"),
                    ("simulated", "Simulated"),
                ],
                default="live",
                max_length=10,
            ),
        ),
    ]
