"""The study form of the admin: consent statements, instruction pages, quiz questions
and feedback questions edited as fields of their own (one box per item, a question
with its options and the number of the right one), never as raw JSON. The rules
themselves are study_rules', checked again by Study.clean()."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.html import format_html, format_html_join

from .models import Study
from .study_rules import quiz_errors

EXTRA_ITEMS = 2  # empty boxes offered for new items; save to get more


def _as_list(value: Any) -> list:
    """A stored value that is not a list (a broken study) is shown as one item."""
    if value in (None, ""):
        return []
    return value if isinstance(value, list) else [str(value)]


class TextListWidget(forms.Widget):
    """One text box per item (`<name>_0`, `<name>_1`, ...) plus EXTRA_ITEMS empty ones."""

    def __init__(self, rows: int = 2, attrs: dict | None = None) -> None:
        super().__init__(attrs)
        self.rows = rows

    def value_from_datadict(self, data, files, name: str) -> list[str]:
        items, i = [], 0
        while f"{name}_{i}" in data:
            items.append(data[f"{name}_{i}"])
            i += 1
        return items

    def value_omitted_from_data(self, data, files, name: str) -> bool:
        return f"{name}_0" not in data

    def render(self, name: str, value: Any, attrs=None, renderer=None) -> str:
        items = [str(item) for item in _as_list(value)] + [""] * EXTRA_ITEMS
        return format_html(
            '<div class="text-list" id="id_{}">{}</div>',
            name,
            format_html_join(
                "",
                '<div><label for="id_{0}_{1}">{2}.</label> '
                '<textarea name="{0}_{1}" id="id_{0}_{1}" rows="{3}" cols="70">{4}</textarea>'
                "</div>",
                ((name, i, i + 1, self.rows, item) for i, item in enumerate(items)),
            ),
        )


class TextListField(forms.Field):
    """A list of non-empty texts; empty boxes are dropped."""

    widget = TextListWidget

    def __init__(self, *, rows: int = 2, at_least: int = 0, **kwargs) -> None:
        kwargs.setdefault("required", at_least > 0)
        super().__init__(widget=TextListWidget(rows=rows), **kwargs)
        self.at_least = at_least

    def to_python(self, value: Any) -> list[str]:
        return [str(item).strip() for item in _as_list(value) if str(item).strip()]

    def validate(self, value: list[str]) -> None:
        if len(value) < self.at_least:
            raise ValidationError(f"Give at least {self.at_least}.", code="required")

    def has_changed(self, initial: Any, data: Any) -> bool:
        return self.to_python(initial) != self.to_python(data)


class QuizWidget(forms.Widget):
    """Per question: its text, its options (one per line) and the number of the right
    option, plus EXTRA_ITEMS empty questions."""

    def value_from_datadict(self, data, files, name: str) -> list[dict]:
        questions, i = [], 0
        while f"{name}_{i}_question" in data:
            questions.append(
                {
                    "question": data.get(f"{name}_{i}_question", ""),
                    "options_text": data.get(f"{name}_{i}_options", ""),
                    "answer_text": data.get(f"{name}_{i}_answer", ""),
                }
            )
            i += 1
        return questions

    def value_omitted_from_data(self, data, files, name: str) -> bool:
        return f"{name}_0_question" not in data

    @staticmethod
    def _shown(item: Any) -> tuple[str, str, str]:
        """(question, options one per line, right option's number) of a stored
        question (0-based answer) or of one sent back with the form (raw text)."""
        if not isinstance(item, dict):
            return str(item), "", ""
        if "options_text" in item:
            return item["question"], item["options_text"], item["answer_text"]
        options = item.get("options")
        answer = item.get("answer")
        return (
            str(item.get("question", "")),
            "\n".join(map(str, options)) if isinstance(options, list) else "",
            str(answer + 1) if isinstance(answer, int) and not isinstance(answer, bool) else "",
        )

    def render(self, name: str, value: Any, attrs=None, renderer=None) -> str:
        items = [self._shown(item) for item in _as_list(value)] + [("", "", "")] * EXTRA_ITEMS
        return format_html(
            '<div class="quiz-editor" id="id_{}">{}</div>',
            name,
            format_html_join(
                "",
                '<fieldset class="quiz-question"><legend>Question {2}</legend>'
                '<div><label for="id_{0}_{1}_question">Question</label> '
                '<input type="text" name="{0}_{1}_question" id="id_{0}_{1}_question" '
                'value="{3}" size="70"></div>'
                '<div><label for="id_{0}_{1}_options">Options, one per line</label> '
                '<textarea name="{0}_{1}_options" id="id_{0}_{1}_options" rows="3" '
                'cols="50">{4}</textarea></div>'
                '<div><label for="id_{0}_{1}_answer">Number of the right option</label> '
                '<input type="number" min="1" name="{0}_{1}_answer" id="id_{0}_{1}_answer" '
                'value="{5}"></div></fieldset>',
                (
                    (name, i, i + 1, question, options, answer)
                    for i, (question, options, answer) in enumerate(items)
                ),
            ),
        )


class QuizField(forms.Field):
    """Quiz questions as the model stores them: [{"question", "options", "answer"}],
    answer 0-based; people give the right option's number from 1. A question left
    wholly empty is dropped; no questions is no quiz."""

    widget = QuizWidget

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> list[dict]:
        quiz, errors = [], []
        for number, item in enumerate(_as_list(value), start=1):
            if not isinstance(item, dict) or "options_text" not in item:
                quiz.append(item)  # a stored question: study_rules judges it
                continue
            question = item["question"].strip()
            options = [line.strip() for line in item["options_text"].splitlines() if line.strip()]
            answer_text = item["answer_text"].strip()
            if not (question or options or answer_text):
                continue
            try:
                answer = int(answer_text) - 1
            except ValueError:
                errors.append(f"Question {number}: give the number of the right option.")
                continue
            quiz.append({"question": question, "options": options, "answer": answer})
        if errors:
            raise ValidationError(errors)
        return quiz

    def validate(self, value: list[dict]) -> None:
        if problems := quiz_errors(value):
            # Shown with option numbers from 1, as they are typed.
            raise ValidationError([p[0].upper() + p[1:] + "." for p in problems])

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return _as_list(initial) != self.to_python(data)
        except ValidationError:
            return True


class StudyForm(forms.ModelForm):
    """The admin's study form; Study.clean() checks the whole study again."""

    # How many a study needs depends on its status: Study.clean decides.
    consent_items = TextListField(
        required=False,
        help_text="Statements participants tick, one per box; all must be ticked to go on.",
    )
    instruction_pages = TextListField(
        rows=6, required=False, help_text="One page of plain text per box, shown in order."
    )
    quiz = QuizField(
        help_text="A wrong answer sends the participant back to the instructions. Leave "
        "every question empty for no quiz."
    )
    feedback_questions = TextListField(
        required=False, help_text="Free-text questions at the end, one per box (optional)."
    )

    class Meta:
        model = Study
        # The admin adds the rest of its fieldsets' fields.
        fields = ["consent_items", "instruction_pages", "quiz", "feedback_questions"]

    def clean(self) -> dict:
        """A study that opens (or changes its interface or stimulus set while open) may
        not show what another open study on the same images hides, or hide what it shows
        (services.open_conflicts, which holds a lock until the admin's save commits)."""
        from .live import OPEN_STATUSES
        from .services import open_conflicts

        cleaned = super().clean()
        study = self.instance
        status = cleaned.get("status", study.status)
        interface = cleaned.get("interface", study.interface)
        stimulus_set = cleaned.get("stimulus_set")
        set_id = stimulus_set.pk if stimulus_set is not None else study.stimulus_set_id
        if status not in OPEN_STATUSES or not interface or set_id is None:
            return cleaned
        stored = (
            Study.objects.filter(pk=study.pk)
            .values_list("status", "interface", "stimulus_set_id")
            .first()
            if study.pk
            else None
        )
        if stored is None or stored[0] not in OPEN_STATUSES or stored[1:] != (interface, set_id):
            conflicts = open_conflicts(interface, set_id, study.pk)
            if conflicts:
                self.add_error(None, f"This study cannot open: {'; '.join(conflicts)}.")
        return cleaned
