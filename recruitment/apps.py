from django.apps import AppConfig


class RecruitmentConfig(AppConfig):
    """Recruiters' side of a study: Prolific submissions, approvals, rejections and
    the bonus ledger."""

    name = "recruitment"
    verbose_name = "Recruitment (Prolific)"
