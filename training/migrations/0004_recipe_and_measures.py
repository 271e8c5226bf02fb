from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0003_policy_choices_from_registry"),
    ]

    operations = []
