"""API keys: hashed at rest, shown once, checked in constant time, revocable at once."""

import io

import pytest
from django.core.management import call_command
from django.db import connection

from apps.tenants.models import ApiKey
from apps.tenants.services import api_key_authenticate, api_key_create, api_key_revoke

pytestmark = pytest.mark.django_db


def test_plaintext_appears_nowhere_in_the_database(tenant):
    key, plaintext = api_key_create(name="billing", scope="billing", tenant=tenant)
    secret = plaintext.split("_", 2)[2]
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            for row in cursor.fetchall():
                assert not any(secret in str(value) for value in row), table
    assert key.prefix in plaintext and len(key.key_hash) == 64


def test_authenticate_accepts_the_key_and_rejects_tampering(db):
    key, plaintext = api_key_create(name="k", scope="admin")
    assert api_key_authenticate(plaintext) == key
    assert api_key_authenticate(plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
    assert api_key_authenticate("rl_nothing_here") is None
    assert api_key_authenticate("garbage") is None


def test_revoked_key_fails_at_once(db):
    key, plaintext = api_key_create(name="k", scope="billing")
    api_key_revoke(key=key)
    assert api_key_authenticate(plaintext) is None


def test_authenticate_records_last_used(db):
    key, plaintext = api_key_create(name="k", scope="billing")
    api_key_authenticate(plaintext)
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_create_api_key_command_prints_the_key_once_and_binds_the_tenant(tenant):
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", name="acme billing", scope="billing", tenant="acme", stdout=out, stderr=err)
    plaintext = out.getvalue().strip()
    key = api_key_authenticate(plaintext)
    assert key is not None and key.tenant == tenant and key.scope == ApiKey.Scope.BILLING
    assert plaintext not in err.getvalue()


def test_create_api_key_command_names_an_unknown_tenant(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No tenant with slug 'nope'"):
        call_command("create_api_key", name="x", scope="billing", tenant="nope", stdout=io.StringIO())


def test_revoke_api_key_command(db):
    key, plaintext = api_key_create(name="k", scope="ingest")
    call_command("revoke_api_key", key.prefix, stdout=io.StringIO())
    assert api_key_authenticate(plaintext) is None


def test_revoke_api_key_takes_the_whole_key_says_when_it_was_already_revoked_and_what_a_prefix_is(db):
    from django.core.management.base import CommandError

    key, plaintext = api_key_create(name="leaked", scope="billing")
    first, again = io.StringIO(), io.StringIO()

    call_command("revoke_api_key", plaintext, stdout=first)  # pasted whole, as someone holding it would
    call_command("revoke_api_key", key.prefix, stdout=again)

    assert api_key_authenticate(plaintext) is None
    assert first.getvalue().startswith(f"Revoked {key.prefix} (leaked)")
    assert again.getvalue().startswith(f"{key.prefix} (leaked) was already revoked at ")
    with pytest.raises(CommandError, match=r"No key with prefix 'rl_nope': give the key's first 11 characters"):
        call_command("revoke_api_key", "rl_nope", stdout=io.StringIO())


@pytest.mark.parametrize("path", ["/api/v1/tenants/", "/api/v1/ingest/"])
@pytest.mark.parametrize("presented", ["rl_abc\x00_def", "rl_ab\x00cd_ef", "rl_abc_d\x00ef"])
def test_a_key_with_a_nul_byte_is_a_401_not_a_500(api_client, tenant, path, presented):
    """PostgreSQL refuses a NUL in a query parameter: looking the key's prefix up raised a DataError (500)."""
    answer = api_client.get(path, HTTP_AUTHORIZATION=f"Bearer {presented}")
    assert answer.status_code == 401
    assert answer["WWW-Authenticate"] == "Bearer"
