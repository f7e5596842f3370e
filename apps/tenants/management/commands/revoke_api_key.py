"""Revoke an API key by its visible prefix: `manage.py revoke_api_key rl_ab12cd34` (the whole key works too)."""

from django.core.management.base import BaseCommand, CommandError

from apps.tenants.models import ApiKey
from apps.tenants.services import KEY_PREFIX, PREFIX_HEX_DIGITS, api_key_prefix, api_key_revoke


class Command(BaseCommand):
    help = "Revoke an API key at once, by its prefix (shown in the admin and when it was created) or the whole key."

    def add_arguments(self, parser):
        parser.add_argument("prefix", help=f"{KEY_PREFIX} and {PREFIX_HEX_DIGITS} hex digits, e.g. {KEY_PREFIX}ab12cd34; "
                                           "the whole key is taken too")

    def handle(self, *args, prefix, **options):
        # Someone holding the whole key (a leaked one, say) pastes it whole: it names its prefix.
        given = api_key_prefix(prefix.strip())
        key = ApiKey.objects.filter(prefix=given).first()
        if key is None:
            raise CommandError(f"No key with prefix {given!r}: give the key's first {len(KEY_PREFIX) + PREFIX_HEX_DIGITS} "
                               f"characters ({KEY_PREFIX} and {PREFIX_HEX_DIGITS} hex digits, e.g. {KEY_PREFIX}ab12cd34); "
                               "the admin's API keys page lists them.")
        if key.revoked_at is not None:
            self.stdout.write(f"{key.prefix} ({key.name}) was already revoked at {key.revoked_at:%Y-%m-%d %H:%M} UTC.")
            return
        api_key_revoke(key=key)
        self.stdout.write(f"Revoked {key.prefix} ({key.name}).")
