import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def closed_since_last_edit(apps, schema_editor) -> None:
    """Studies closed before closed_at existed: their last edit is when they closed (or
    later), so recruiter ids are not dropped too early."""
    study_model = apps.get_model("elicitation", "Study")
    for study in study_model.objects.filter(status="closed", closed_at__isnull=True):
        study_model.objects.filter(pk=study.pk).update(closed_at=study.updated_at)


def researchers_delete_pilot_sessions(apps, schema_editor) -> None:
    """The Researcher role (hillmix_site.roles) deletes pilot and preview sessions."""
    from django.contrib.auth.management import create_permissions
    from django.contrib.contenttypes.management import create_contenttypes

    # A fresh database creates permissions only after migrating (as hillmix_site.roles).
    app_config = apps.get_app_config("elicitation")
    app_config.models_module = getattr(app_config, "models_module", None) or True
    create_contenttypes(app_config, verbosity=0, apps=apps)
    create_permissions(app_config, verbosity=0, apps=apps)
    group = apps.get_model("auth", "Group").objects.filter(name="Researcher").first()
    if group is not None:
        group.permissions.add(
            apps.get_model("auth", "Permission").objects.get(
                content_type__app_label="elicitation", codename="delete_session"
            )
        )


class Migration(migrations.Migration):
    dependencies = [
        ("elicitation", "0012_session_kind"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("hillmix_site", "0001_role_groups"),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditLog",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True, db_index=True)),
                (
                    "username",
                    models.CharField(
                        blank=True,
                        help_text="Who acted (empty: a participant or the system).",
                        max_length=150,
                    ),
                ),
                ("action", models.CharField(db_index=True, max_length=40)),
                ("detail", models.TextField(blank=True)),
                (
                    "study",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="elicitation.study",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
            },
        ),
        migrations.AlterModelOptions(
            name="participant",
            options={
                "permissions": [
                    ("view_recruiter_ids", "Can see recruiter ids (e.g. Prolific PIDs)"),
                    (
                        "handle_data_requests",
                        "Can erase a participant's data or export it for an access request",
                    ),
                ]
            },
        ),
        migrations.AddField(
            model_name="session",
            name="withdrawn_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="study",
            name="closed_at",
            field=models.DateTimeField(
                blank=True,
                editable=False,
                help_text="When the study closed: recruiter ids are dropped "
                "HILLMIX_RECRUITER_ID_RETENTION_DAYS later.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="study",
            name="on_withdrawal",
            field=models.CharField(
                choices=[
                    ("erase", "Erase their answers"),
                    ("keep", "Keep the answers given so far"),
                ],
                default="erase",
                help_text="What a participant's withdrawal does to their answers; the "
                "consent page tells them. Either way the session is marked withdrawn and "
                "gives its place back.",
                max_length=10,
            ),
        ),
        migrations.AlterField(
            model_name="study",
            name="status",
            field=models.CharField(
                choices=[
                    ("draft", "Draft"),
                    ("pilot", "Pilot"),
                    ("live", "Live"),
                    ("closed", "Closed"),
                ],
                default="draft",
                max_length=10,
            ),
        ),
        migrations.RunPython(closed_since_last_edit, migrations.RunPython.noop),
        migrations.RunPython(researchers_delete_pilot_sessions, migrations.RunPython.noop),
    ]
