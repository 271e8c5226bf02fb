from django import forms

from .models import JOB_SETTINGS, TrainingJob


class TrainingJobForm(forms.ModelForm):
    class Meta:
        model = TrainingJob
        fields = JOB_SETTINGS
