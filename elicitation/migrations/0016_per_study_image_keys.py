from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("elicitation", "0015_adaptive_studies"),
    ]

    operations = []
