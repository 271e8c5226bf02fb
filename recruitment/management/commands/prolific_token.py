"""Store the lab's Prolific API token encrypted (read from standard input, so it
never lands in the shell history), or re-encrypt it under the newest key."""

import sys

from django.core.management.base import BaseCommand, CommandError

from recruitment import credentials


class Command(BaseCommand):
    help = "Store the Prolific API token (from stdin) encrypted, or --rotate its key."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--rotate", action="store_true", help="re-encrypt under the newest key")

    def handle(self, *args, rotate: bool = False, **options) -> None:
        if rotate:
            done = credentials.rotate_token()
            self.stdout.write("Re-encrypted." if done else "No stored token.")
            return
        token = sys.stdin.readline().strip()
        if not token:
            raise CommandError("Give the token on standard input.")
        credentials.store_token(token)
        self.stdout.write("Stored (encrypted).")
