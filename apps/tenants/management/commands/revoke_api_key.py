"""Revoke an API key by its visible prefix: `manage.py revoke_api_key rl_ab12cd34`."""

from django.core.management.base import BaseCommand, CommandError

from apps.tenants.models import ApiKey
from apps.tenants.services import api_key_revoke


class Command(BaseCommand):
    help = "Revoke an API key at once, by its prefix (shown in the admin and when it was created)."

    def add_arguments(self, parser):
        parser.add_argument("prefix")

    def handle(self, *args, prefix, **options):
        key = ApiKey.objects.filter(prefix=prefix).first()
        if key is None:
            raise CommandError(f"No key with prefix {prefix!r}; the admin's API keys page lists them.")
        api_key_revoke(key=key)
        self.stdout.write(f"Revoked {key.prefix} ({key.name}).")
