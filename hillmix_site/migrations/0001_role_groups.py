"""The Analyst and Researcher groups (hillmix_site.roles)."""

from django.db import migrations

from hillmix_site.roles import create_role_groups


def create_groups(apps, schema_editor) -> None:
    create_role_groups(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("datasets", "0005_import_dataset_permission"),
        ("elicitation", "0010_export_and_import_permissions"),
        ("training", "0002_launch_permission"),
    ]

    operations = [migrations.RunPython(create_groups, migrations.RunPython.noop)]
