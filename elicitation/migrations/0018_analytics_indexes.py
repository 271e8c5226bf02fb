from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("elicitation", "0017_posterior_array"),
    ]

    operations = []
