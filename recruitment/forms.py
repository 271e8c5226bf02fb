"""The dashboard's forms: linking a Prolific study, approving, rejecting, bonuses."""

from __future__ import annotations

from decimal import Decimal

from django import forms

from .prolific import MIN_REJECTION_MESSAGE, REJECTION_CATEGORIES

# A bonus above this is refused as a likely typo (Prolific reads "30" as 30.00, not
# as cents); pay larger bonuses in parts with different reasons.
MAX_BONUS = Decimal("100.00")


class LinkForm(forms.Form):
    prolific_study_id = forms.RegexField(
        regex=r"^[A-Za-z0-9_-]{1,64}$",
        label="Prolific study id",
        error_messages={"invalid": "Prolific's study id: letters, digits, - and _."},
    )


class SelectionForm(forms.Form):
    """Submissions chosen on the dashboard, by their opaque references."""

    submission = forms.MultipleChoiceField(required=False)

    def __init__(self, *args, references: list[str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["submission"].choices = [(ref, ref) for ref in references or []]

    @classmethod
    def references_from(cls, data) -> list[str]:
        return [ref for ref in data.getlist("submission") if ref]


class RejectForm(forms.Form):
    # The approve, reject and bonus buttons share one form on the page: a browser-side
    # "required" on the rejection message would block approving. The server checks.
    use_required_attribute = False

    message = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        min_length=MIN_REJECTION_MESSAGE,
        strip=True,
        help_text=f"Sent to each participant; Prolific needs {MIN_REJECTION_MESSAGE}+ characters.",
    )
    rejection_category = forms.ChoiceField(choices=[(c, c) for c in REJECTION_CATEGORIES])


class BonusForm(forms.Form):
    use_required_attribute = False  # as RejectForm

    amount = forms.DecimalField(
        min_value=Decimal("0.01"),
        max_value=MAX_BONUS,
        decimal_places=2,
        max_digits=6,
        help_text="Per participant, in the study's currency (e.g. 0.50).",
    )
    reason = forms.CharField(
        max_length=100, help_text="One bonus per participant and reason, ever."
    )

    def cents(self) -> int:
        return int(self.cleaned_data["amount"] * 100)


class ReconcileForm(forms.Form):
    bonus = forms.IntegerField(min_value=1)
    outcome = forms.ChoiceField(
        choices=[
            ("retry", "Not set up or paid on Prolific: pay it again"),
            ("paid", "Paid on Prolific"),
            ("cancel", "Do not pay"),
        ]
    )
