"""The lab's Prolific credential, which Prolific study a study recruits from, and the
bonus ledger that keeps a bonus from ever being paid twice."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from elicitation.models import Study


class ProlificCredential(models.Model):
    """The lab's Prolific API token, encrypted (recruitment.credentials): the
    database holds only Fernet ciphertext, the keys stay in the environment.
    PROLIFIC_API_TOKEN, when set, is used instead. One row at most."""

    encrypted_token = models.TextField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Prolific token (stored {self.updated_at:%Y-%m-%d})"


class ProlificStudy(models.Model):
    """The Prolific study whose submissions are a study's participants."""

    study = models.OneToOneField(Study, on_delete=models.CASCADE, related_name="prolific")
    prolific_study_id = models.CharField(
        max_length=64, help_text="Prolific's study id (the STUDY_ID in the study link)."
    )

    class Meta:
        verbose_name_plural = "Prolific studies"
        permissions = [
            ("manage_prolific", "Can approve, reject and pay bonuses on Prolific"),
        ]

    def __str__(self) -> str:
        return f"{self.study.slug} on Prolific"


class BonusPayment(models.Model):
    """One bonus in the ledger, written before Prolific is asked anything.

    States (recruitment.services.pay_bonuses moves them, each move committed before
    the next call to Prolific):
      pending   the intent is recorded; Prolific was never asked to set it up.
      creating  a set-up request was sent; its answer (the bonus id) is not recorded.
      created   Prolific's bulk bonus id is recorded; paying it was never asked.
      paying    the pay request was sent; its answer is not recorded.
      paid      Prolific accepted the payment (or shows it paid).
      reconcile a crash or lost answer left it unknown whether Prolific set up or
                paid it: nothing is sent again until a researcher looks at Prolific
                and settles it (services.reconcile_bonus).
      failed    Prolific refused the set-up (e.g. an id not in the study); nothing
                was set up, so a researcher may retry it.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        CREATING = "creating"
        CREATED = "created"
        PAYING = "paying"
        PAID = "paid"
        RECONCILE = "reconcile", "needs reconciliation"
        FAILED = "failed"

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="bonus_payments")
    # Prolific's participant id (PROLIFIC_PID): a recruiter id, shown only to holders of
    # elicitation.view_recruiter_ids (hillmix_site.permissions.RECRUITER_ID_FIELDS).
    recruiter_pid = models.CharField(max_length=100)
    amount_cents = models.PositiveIntegerField()
    reason = models.CharField(
        max_length=100, help_text="Why the bonus is paid (one bonus per participant and reason)."
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    bonus_id = models.CharField(
        max_length=64, blank=True, help_text="Prolific's bulk bonus payment id, once set up."
    )
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "recruiter_pid", "reason"], name="one_bonus_per_reason"
            ),
            models.CheckConstraint(
                condition=models.Q(amount_cents__gt=0), name="bonus_amount_positive"
            ),
        ]
        indexes = [models.Index(fields=["study", "state"], name="bonus_study_state")]

    def __str__(self) -> str:
        return f"{self.study.slug}: {self.amount_cents} cents ({self.state})"
