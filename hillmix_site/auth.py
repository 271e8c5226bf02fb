"""Researcher logins for the REST API: tokens that expire and rotate, a token endpoint
that django-axes watches like the admin login (hillmix_site.auth_views), and no token
outliving a password."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from .client_address import client_address


def token_ttl() -> timedelta:
    """How long an API token is accepted after it was issued (HILLMIX_TOKEN_TTL_HOURS)."""
    return timedelta(hours=settings.HILLMIX_TOKEN_TTL_HOURS)


def token_expired(token: Token) -> bool:
    return token.created <= timezone.now() - token_ttl()


def issue_token(user) -> Token:
    """The user's current token, or a new one where there is none or it has expired."""
    with transaction.atomic():
        token = Token.objects.select_for_update().filter(user=user).first()
        if token is not None and token_expired(token):
            token.delete()
            token = None
        return token or Token.objects.create(user=user)


def rotate_token(user) -> Token:
    """Drop the user's token (whether or not it still works) and issue a new one."""
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        return Token.objects.create(user=user)


class ExpiringTokenAuthentication(TokenAuthentication):
    """DRF's token authentication that also refuses tokens older than token_ttl()."""

    def authenticate_credentials(self, key: str):
        user, token = super().authenticate_credentials(key)
        if token_expired(token):
            raise exceptions.AuthenticationFailed("Token has expired; log in again.")
        return user, token


def drop_tokens_on_password_change(sender, instance, update_fields=None, **kwargs) -> None:
    """pre_save of the user model: a changed password hash drops the user's API token,
    so whoever held the old password's token has to log in again."""
    if instance.pk is None or (update_fields is not None and "password" not in update_fields):
        return
    stored = sender.objects.filter(pk=instance.pk).values_list("password", flat=True).first()
    if stored is not None and stored != instance.password:
        Token.objects.filter(user_id=instance.pk).delete()


def axes_client_address(request: HttpRequest) -> str:
    """The address django-axes counts failed logins under: the same client address the
    rest of the site uses (trusted proxies honoured)."""
    return client_address(request.META, settings.HILLMIX_TRUSTED_PROXIES)
