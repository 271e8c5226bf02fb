"""The roles of ../shared/DESIGN.md (section 7) as Django groups, created by the
hillmix_site app's migrations; an admin gives people a role by adding them to its group:

- Analyst: views and exports pseudonymous data.
- Researcher: everything an Analyst may, and builds and runs studies, stimulus sets,
  dataset imports and training jobs.

Recruiter ids ("Can see recruiter ids") and data requests by recruiter id ("Can erase
a participant's data or export it for an access request") belong to neither: an admin
grants them to whoever pays participants and answers their requests. Admins (users and
permissions) are superusers.
"""

from __future__ import annotations

ANALYST = "Analyst"
RESEARCHER = "Researcher"

_VIEWED = {
    "datasets": ["dataset", "stimulusset", "pair", "stimulus"],
    "elicitation": ["study", "condition", "conditionitem", "participant", "session", "judgment"],
    "training": ["trainingjob", "seedresult"],
}

ROLE_PERMISSIONS: dict[str, list[str]] = {
    ANALYST: [
        *(f"{app}.view_{model}" for app, models in _VIEWED.items() for model in models),
        "elicitation.export_judgments",
    ],
}
ROLE_PERMISSIONS[RESEARCHER] = [
    *ROLE_PERMISSIONS[ANALYST],
    "datasets.import_dataset",
    "datasets.delete_dataset",
    "datasets.add_stimulusset",
    "datasets.delete_stimulusset",
    "elicitation.add_study",
    "elicitation.change_study",
    "elicitation.delete_study",
    "elicitation.change_session",  # exclude / include a participant
    "elicitation.delete_session",  # delete pilot and preview sessions (never live ones)
    "elicitation.import_hmix",
    "training.launch_trainingjob",
    # Prolific approvals, rejections and bonuses (its migration: recruitment 0001).
    "recruitment.manage_prolific",
]


def create_role_groups(apps) -> None:
    """Create (or complete) the role groups with ROLE_PERMISSIONS. `apps` is a
    migration's historical registry or django.apps.apps. Permissions missing from the
    database are created first (a fresh database creates them only after migrating);
    those of an app whose models are not migrated yet at this point of the chain are
    left to that app's own migration (e.g. recruitment 0001). Idempotent; never removes
    what an admin added to a group."""
    from django.contrib.auth.management import create_permissions
    from django.contrib.contenttypes.management import create_contenttypes

    for app_config in apps.get_app_configs():
        app_config.models_module = getattr(app_config, "models_module", None) or True
        create_contenttypes(app_config, verbosity=0, apps=apps)
        create_permissions(app_config, verbosity=0, apps=apps)
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    for name, perms in ROLE_PERMISSIONS.items():
        group, _ = group_model.objects.get_or_create(name=name)
        for perm in perms:
            app_label, codename = perm.split(".")
            group.permissions.add(
                *permission_model.objects.filter(
                    content_type__app_label=app_label, codename=codename
                )
            )
