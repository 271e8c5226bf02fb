from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("datasets", "0006_mixing_choices_from_registry"),
    ]

    operations = []
