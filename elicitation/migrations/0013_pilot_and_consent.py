from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("elicitation", "0012_session_kind"),
    ]

    operations = []
