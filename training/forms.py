from django import forms

from .models import TrainingJob


class TrainingJobForm(forms.ModelForm):
    class Meta:
        model = TrainingJob
        fields = [
            "name",
            "comparison",
            "dataset",
            "heldout_fraction",
            "split_seed",
            "stimulus_sets",
            "studies",
            "policy",
            "architecture",
            "epochs",
            "batch_size",
            "learning_rate",
            "seeds",
            "online_alpha",
            "device",
        ]
