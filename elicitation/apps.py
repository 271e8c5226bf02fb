from django.apps import AppConfig


class ElicitationConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "elicitation"
    verbose_name = "Studies and judgments"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_delete, post_save

        from .live import forget_live_studies
        from .models import Study
        from .services import forget_prepared_statements

        connection_created.connect(forget_prepared_statements)
        # Which studies' images are public is cached per process (live.live_image_file).
        post_save.connect(forget_live_studies, sender=Study, dispatch_uid="live-studies-save")
        post_delete.connect(forget_live_studies, sender=Study, dispatch_uid="live-studies-delete")
