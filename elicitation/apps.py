from django.apps import AppConfig


class ElicitationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "elicitation"
    verbose_name = "Studies and judgments"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from .services import forget_prepared_statements

        connection_created.connect(forget_prepared_statements)
