from django.apps import AppConfig


class SiteConfig(AppConfig):
    """The site itself: role groups (migrations) and login rules (hillmix_site.auth)."""

    name = "hillmix_site"
    verbose_name = "HILL-Mix site"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import pre_save

        from .auth import drop_tokens_on_password_change

        pre_save.connect(drop_tokens_on_password_change, sender=get_user_model())
