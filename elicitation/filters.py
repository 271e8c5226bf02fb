from datetime import UTC

import django_filters
from django import forms
from rest_framework.exceptions import ValidationError

from datasets.models import Stimulus

from . import reports
from .models import Condition, Judgment, Participant


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    """ISO 8601 in any offset Python accepts (up to +-24 h), sent to the database in UTC:
    PostgreSQL refuses offsets beyond +-15:59."""

    def filter(self, qs, value):
        if value is not None:
            try:
                value = value.astimezone(UTC)
            except OverflowError:
                raise ValidationError({self.field_name: "date out of range"}) from None
        return super().filter(qs, value)


class FlagField(forms.Field):
    """A boolean query parameter read as every one is (reports.flag_param): true/false,
    1/0, yes/no, on/off in any case; absent or empty is no filter (None)."""

    def to_python(self, value):
        if value in (None, ""):
            return None
        try:
            return reports.flag_param("value", value)
        except ValueError:
            raise forms.ValidationError(f"must be true or false, not {value!r}") from None


class FlagFilter(django_filters.BooleanFilter):
    """django-filter's BooleanFilter reads an unknown value as absent and returns every
    row; this one answers it with a 400."""

    field_class = FlagField


class JudgmentFilter(django_filters.FilterSet):
    study = django_filters.CharFilter(field_name="study__slug")
    condition = django_filters.CharFilter(field_name="session__condition__name")
    participant = django_filters.CharFilter(field_name="session__participant__public_id")
    repeat = FlagFilter(field_name="is_repeat")
    # Narrows what the exclusion rule keeps: excluded participants' judgments are
    # there only with include_excluded=1 (reports.counted).
    excluded = FlagFilter(field_name="session__excluded")
    since = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Judgment
        fields = [
            "study",
            "interface",
            "condition",
            "participant",
            "repeat",
            "excluded",
            "since",
            "until",
        ]


class ConditionFilter(django_filters.FilterSet):
    study = django_filters.CharFilter(field_name="study__slug")

    class Meta:
        model = Condition
        fields = ["study"]


class StimulusFilter(django_filters.FilterSet):
    stimulus_set = django_filters.CharFilter(field_name="pair__stimulus_set__name")
    study = django_filters.CharFilter(field_name="pair__stimulus_set__studies__slug")

    class Meta:
        model = Stimulus
        fields = ["stimulus_set", "study"]


class ParticipantFilter(django_filters.FilterSet):
    study = django_filters.CharFilter(field_name="sessions__study__slug")

    class Meta:
        model = Participant
        fields = ["study"]
