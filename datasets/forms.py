from django import forms
from django.core.exceptions import ValidationError

from .mixing import image_mixing_choices
from .models import Dataset, StimulusSet
from .sources import SOURCE_KINDS


class DatasetImportForm(forms.Form):
    name = forms.SlugField(max_length=100)
    kind = forms.ChoiceField(choices=[(k, k) for k in SOURCE_KINDS])
    upload = forms.FileField(
        required=False,
        help_text="A .npz or a CIFAR-10 archive (cifar-10-python.tar.gz) from your computer.",
    )
    path = forms.CharField(
        required=False,
        max_length=500,
        help_text="Or a file or folder in the server's import folders (HILLMIX_IMPORT_DIRS): "
        "CIFAR-10 archive or folder, class-per-folder images, or .npz.",
    )
    split = forms.ChoiceField(choices=[("test", "test"), ("train", "train")], initial="test")
    download = forms.BooleanField(
        required=False, help_text="CIFAR-10 only: fetch the official archive (needs a network)."
    )

    def clean(self) -> dict:
        data = super().clean()
        if data.get("upload") and (data.get("path") or data.get("download")):
            raise ValidationError("give an upload, a server path or download, not several")
        return data


class StimulusSetForm(forms.Form):
    name = forms.SlugField(max_length=100)
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.all())
    kind = forms.ChoiceField(choices=StimulusSet.Kind.choices)
    mixing_policy = forms.ChoiceField(choices=image_mixing_choices)
    lams = forms.CharField(
        required=False,
        help_text="Comma-separated; empty: 0.0..1.0 step 0.1 for grids, 0.1,0.25,0.5,0.75,0.9 "
        "for singles.",
    )
    random_pairs = forms.IntegerField(required=False, min_value=1, label="Number of random pairs")
    explicit_pairs = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One per line, e.g. Airplane_1596_Frog_3615. Leave empty for random pairs.",
    )
    seed = forms.IntegerField(initial=0)

    def clean_lams(self) -> list[float] | None:
        text = self.cleaned_data["lams"].strip()
        if not text:
            return None
        try:
            return [float(x) for x in text.replace(" ", "").split(",") if x]
        except ValueError:
            raise ValidationError("lam values must be numbers separated by commas") from None

    def clean_explicit_pairs(self) -> list[str] | None:
        lines = [ln.strip() for ln in self.cleaned_data["explicit_pairs"].splitlines()]
        return [ln for ln in lines if ln] or None
