"""Start Django for a benchmark on a throw-away SQLite database and media folder,
unless DATABASE_URL is set."""

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup() -> Path:
    sys.path.insert(0, str(ROOT))
    work = Path(tempfile.mkdtemp(prefix="hillmix-bench-"))
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{work / 'bench.sqlite3'}")
    os.environ.setdefault("MEDIA_ROOT", str(work / "media"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hillmix_site.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return work
