"""The lab's Prolific API token, never in the database in clear.

Either PROLIFIC_API_TOKEN is set in the environment (it wins), or the token is stored
encrypted with Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`) under keys
kept in the environment: PROLIFIC_TOKEN_KEYS, a comma-separated list, newest first.
MultiFernet encrypts with the first key and decrypts with any, so a key is rotated by
putting a new one first, running `manage.py prolific_token --rotate`, and then
dropping the old one.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from .models import ProlificCredential


def _fernet() -> MultiFernet:
    keys = [key for key in settings.PROLIFIC_TOKEN_KEYS if key]
    if not keys:
        raise ImproperlyConfigured(
            "Set PROLIFIC_TOKEN_KEYS (make a key with: python -c 'from cryptography.fernet "
            "import Fernet; print(Fernet.generate_key().decode())') to store the Prolific "
            "token, or set PROLIFIC_API_TOKEN."
        )
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError as error:
        raise ImproperlyConfigured(
            f"PROLIFIC_TOKEN_KEYS holds a key that is not a Fernet key: {error}"
        ) from error


def store_token(token: str) -> None:
    """Encrypt `token` with the newest key and keep it as the lab's only stored token."""
    token = token.strip()
    if not token:
        raise ValueError("An empty token cannot be stored.")
    ciphertext = _fernet().encrypt(token.encode()).decode()
    with transaction.atomic():
        ProlificCredential.objects.all().delete()
        ProlificCredential.objects.create(encrypted_token=ciphertext)


def rotate_token() -> bool:
    """Re-encrypt the stored token under the newest key (MultiFernet.rotate); False
    when none is stored."""
    with transaction.atomic():
        row = ProlificCredential.objects.select_for_update().first()
        if row is None:
            return False
        row.encrypted_token = _fernet().rotate(row.encrypted_token.encode()).decode()
        row.save(update_fields=["encrypted_token", "updated_at"])
        return True


def token_source() -> str:
    """Where the token comes from: "environment", "stored" or "" (none)."""
    if settings.PROLIFIC_API_TOKEN:
        return "environment"
    return "stored" if ProlificCredential.objects.exists() else ""


def api_token() -> str:
    """The token to call Prolific with: PROLIFIC_API_TOKEN, else the stored one
    decrypted; "" when neither is there. ImproperlyConfigured when a stored token
    cannot be decrypted with PROLIFIC_TOKEN_KEYS."""
    if settings.PROLIFIC_API_TOKEN:
        return settings.PROLIFIC_API_TOKEN
    row = ProlificCredential.objects.first()
    if row is None:
        return ""
    try:
        return _fernet().decrypt(row.encrypted_token.encode()).decode()
    except InvalidToken as error:
        raise ImproperlyConfigured(
            "The stored Prolific token does not decrypt with PROLIFIC_TOKEN_KEYS."
        ) from error
