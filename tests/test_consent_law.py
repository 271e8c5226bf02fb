"""Consent law (issue 19 item 3): withdrawal, erasure and access by recruiter id,
dropping recruiter ids after a study closes, and the audit log of who touched
personal data."""

from elicitation.models import AuditLog
from elicitation.services import audit


def test_audit_record_names_user_and_study(make_study, django_user_model):
    study = make_study()
    user = django_user_model.objects.create_user("ana", password="pw")
    entry = audit.record(user, AuditLog.Action.EXPORT, study=study, detail="csv")
    entry.refresh_from_db()
    assert (entry.username, entry.action, entry.study, entry.detail) == (
        "ana", "export", study, "csv"
    )
    user.delete()
    entry.refresh_from_db()
    assert entry.user is None and entry.username == "ana"  # who acted outlives the account
    system = audit.record(None, AuditLog.Action.DROP_RECRUITER_IDS, study=study.pk)
    assert system.username == "" and system.study_id == study.pk
