"""Create an API key and print it once: `manage.py create_api_key --name billing --scope billing [--tenant acme]`."""

from django.core.management.base import BaseCommand, CommandError

from apps.tenants.models import ApiKey, Tenant
from apps.tenants.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key. The key is printed once and only its hash is stored."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--scope", required=True, choices=ApiKey.Scope.values)
        parser.add_argument("--tenant", help="slug of the only tenant this key may see and write")

    def handle(self, *args, name, scope, tenant, **options):
        tenant_obj = None
        if tenant:
            tenant_obj = Tenant.objects.filter(slug=tenant).first()
            if tenant_obj is None:
                raise CommandError(f"No tenant with slug {tenant!r}. List them with the admin or GET /api/v1/tenants/.")
        key, plaintext = api_key_create(name=name, scope=scope, tenant=tenant_obj)
        self.stderr.write(f"Created key {key.prefix}… ({scope}{', tenant ' + tenant if tenant else ''}). "
                          f"Store it now; it cannot be shown again.")
        self.stdout.write(plaintext)
