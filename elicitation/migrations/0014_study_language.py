from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("elicitation", "0013_pilot_and_consent"),
    ]

    operations = []
