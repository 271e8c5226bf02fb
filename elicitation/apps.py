from django.apps import AppConfig


class ElicitationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "elicitation"
    verbose_name = "Studies and judgments"
