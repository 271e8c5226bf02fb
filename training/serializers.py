from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from datasets.models import Dataset, StimulusSet
from elicitation.models import Study

from . import services
from .models import JOB_SETTINGS, JOB_STATE, SeedResult, TrainingJob


class SeedResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = SeedResult
        fields = [
            "seed",
            "metrics",
            "device",
            "train_images_per_second",
            "reliability_diagram",
            "checkpoint",
        ]


class TrainingJobSerializer(serializers.ModelSerializer):
    """A job's settings (JOB_SETTINGS: data, policy, recipe, optimiser and schedule,
    augmentation, online mixing method and alpha, device, torch.compile) and state."""

    dataset = serializers.SlugRelatedField(slug_field="name", queryset=Dataset.objects.all())
    stimulus_sets = serializers.SlugRelatedField(
        slug_field="name", many=True, queryset=StimulusSet.objects.all(), required=False
    )
    studies = serializers.SlugRelatedField(
        slug_field="slug", many=True, queryset=Study.objects.all(), required=False
    )
    seeds = serializers.ListField(child=serializers.IntegerField(), required=False)
    lr_milestones = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, max_length=50
    )
    results = SeedResultSerializer(many=True, read_only=True)

    class Meta:
        model = TrainingJob
        fields = ["id", *JOB_SETTINGS, *JOB_STATE, "results"]
        read_only_fields = JOB_STATE

    def create(self, validated: dict) -> TrainingJob:
        stimulus_sets = validated.pop("stimulus_sets", [])
        studies = validated.pop("studies", [])
        try:
            return services.create_job(
                stimulus_sets=stimulus_sets,
                studies=studies,
                created_by=self.context["request"].user,
                **validated,
            )
        except DjangoValidationError as exc:
            if hasattr(exc, "error_dict"):  # errors of named settings (e.g. bounds) name them
                raise serializers.ValidationError(exc.message_dict) from None
            raise serializers.ValidationError({"detail": exc.messages}) from None
