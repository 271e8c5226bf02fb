from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("elicitation", "0016_per_study_image_keys"),
    ]

    operations = []
