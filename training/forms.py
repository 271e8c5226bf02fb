from django import forms

from .models import JOB_SETTINGS, TrainingJob

# Recipe settings a researcher may leave empty in the admin form: their model default.
DEFAULTED = [
    "recipe",
    "momentum",
    "weight_decay",
    "lr_schedule",
    "lr_milestones",
    "lr_gamma",
    "online_mixing",
]


class TrainingJobForm(forms.ModelForm):
    class Meta:
        model = TrainingJob
        fields = JOB_SETTINGS

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in DEFAULTED:
            self.fields[name].required = False
            self.fields[
                name
            ].help_text = f"{self.fields[name].help_text} Empty: the default.".strip()

    def clean(self) -> dict:
        """Empty recipe settings take their model default."""
        data = super().clean()
        for name in DEFAULTED:
            if data.get(name) in (None, ""):
                data[name] = TrainingJob._meta.get_field(name).get_default()
        return data
