from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("elicitation", "0014_study_language"),
    ]

    operations = []
