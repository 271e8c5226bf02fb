"""The audit log: one row per export, view of recruiter ids, erasure, withdrawal or
payment (GDPR art. 5(2) accountability: the lab can show who touched personal data
and when). Recording never fails the action it records for a bad argument: the
caller's transaction decides whether the row stays."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser

from ..models import AuditLog, Study


def record(
    user,
    action: str,
    *,
    study: Study | int | None = None,
    detail: str = "",
) -> AuditLog:
    """Write one AuditLog row: `user` (a User, or None / AnonymousUser for a
    participant or the system) did `action` (an AuditLog.Action value, at most 40
    characters) on `study` (a Study, its pk, or None), with a free-text `detail`
    (never a recruiter id in clear unless the action is about that id). Returns the
    row. Inside a transaction the row commits or rolls back with the action."""
    if isinstance(user, AnonymousUser) or (user is not None and not user.is_authenticated):
        user = None
    study_id = study.pk if isinstance(study, Study) else study
    return AuditLog.objects.create(
        user=user,
        username=user.get_username() if user is not None else "",
        action=action[:40],
        study_id=study_id,
        detail=detail,
    )
