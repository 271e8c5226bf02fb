"""Writes for the participant flow and the researcher's actions, one module per reason
to change: sessions (the flow from consent to feedback), judgments (saving an answer),
hmix_import (the published H-Mix data) and study_admin (researcher actions). Callers
import from here."""

from .adaptive import serve_next_trial
from .hmix_import import (
    HMIX_DATASET,
    HMIX_NAMESPACE,
    hmix_study_slug,
    import_hmix,
)
from .judgments import (
    MAX_IMAGE_FAILURES_PER_SESSION,
    MAX_IMAGE_LOAD_ATTEMPTS,
    SaveResult,
    _read_answer,
    forget_prepared_statements,
    record_image_failure,
    record_judgment,
)
from .sessions import (
    NO_SESSION,
    TOUCH_EVERY,
    AlreadyCompleted,
    FlowError,
    RecruiterIds,
    StudyFull,
    _trial_order,
    address_key,
    build_conditions,
    finish_instructions,
    lock_study,
    printable,
    resume_session,
    start_session,
    submit_feedback,
    submit_quiz,
    touch,
)
from .study_admin import (
    copy_study,
    save_study,
    set_excluded,
    set_study_status,
)

__all__ = [
    "AlreadyCompleted",
    "FlowError",
    "HMIX_DATASET",
    "HMIX_NAMESPACE",
    "MAX_IMAGE_FAILURES_PER_SESSION",
    "MAX_IMAGE_LOAD_ATTEMPTS",
    "NO_SESSION",
    "RecruiterIds",
    "SaveResult",
    "StudyFull",
    "TOUCH_EVERY",
    "_read_answer",
    "_trial_order",
    "address_key",
    "build_conditions",
    "copy_study",
    "finish_instructions",
    "forget_prepared_statements",
    "hmix_study_slug",
    "import_hmix",
    "lock_study",
    "printable",
    "record_image_failure",
    "record_judgment",
    "resume_session",
    "save_study",
    "serve_next_trial",
    "set_excluded",
    "set_study_status",
    "start_session",
    "submit_feedback",
    "submit_quiz",
    "touch",
]
