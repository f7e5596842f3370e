"""Writes for tenants, memberships and API keys."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Callable

from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from apps.core.services import audit_record

from .models import STAFF_POLICY_FIELDS, ApiKey, Membership, Tenant

KEY_PREFIX = "rl_"
# last_used_at is a hint for humans; writing it once a minute per key keeps hot keys off the write path.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)
TENANT_AUDITED_FIELDS = ["name", "external_id", *STAFF_POLICY_FIELDS]


def _hash_key(plaintext: str) -> str:
    # Keys carry 256 random bits, so a fast hash is safe (no dictionary to attack) and cheap per request.
    return hashlib.sha256(plaintext.encode()).hexdigest()


# A key is KEY_PREFIX, this many hex digits (together its visible prefix, stored), "_" and its secret.
PREFIX_HEX_DIGITS = 8


def api_key_prefix(text: str) -> str:
    """The visible prefix a whole key names (what is stored and shown); any other text as it is."""
    if text.startswith(KEY_PREFIX) and "_" in text[len(KEY_PREFIX):]:
        return text[: text.index("_", len(KEY_PREFIX))]
    return text


def api_key_create(*, name: str, scope: str, tenant: Tenant | None = None, created_by=None) -> tuple[ApiKey, str]:
    """Create a key and return it with its plaintext, which is never stored and cannot be recovered."""
    if scope not in ApiKey.Scope.values:
        raise ValueError(f"scope must be one of {', '.join(ApiKey.Scope.values)}")
    visible = secrets.token_hex(PREFIX_HEX_DIGITS // 2)
    plaintext = f"{KEY_PREFIX}{visible}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(
        name=name,
        prefix=f"{KEY_PREFIX}{visible}",
        key_hash=_hash_key(plaintext),
        scope=scope,
        tenant=tenant,
        created_by=created_by if getattr(created_by, "pk", None) else None,
    )
    audit_record(
        action="api_key.create", target_type="api_key", target_id=key.prefix, actor=created_by,
        actor_label="" if created_by else "command:create_api_key", tenant_id=tenant.pk if tenant else None,
        data={"name": name, "scope": scope},
    )
    return key, plaintext


def api_key_revoke(*, key: ApiKey, actor=None) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit_record(
            action="api_key.revoke", target_type="api_key", target_id=key.prefix, actor=actor,
            actor_label="" if actor else "command:revoke_api_key", tenant_id=key.tenant_id,
        )
    return key


def api_key_authenticate(plaintext: str) -> ApiKey | None:
    """The active key matching this plaintext, or None. Compared in constant time."""
    if not plaintext.startswith(KEY_PREFIX) or plaintext.count("_") < 2:
        return None
    if not (plaintext.isascii() and plaintext.isprintable()):
        # No key we issue has such a character, and a NUL sent to PostgreSQL in the lookup is a 500, not a 401.
        return None
    key = ApiKey.objects.select_related("tenant").filter(prefix=api_key_prefix(plaintext)).first()
    if key is None or not hmac.compare_digest(key.key_hash, _hash_key(plaintext)) or key.revoked_at:
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


@transaction.atomic
def tenant_create(*, slug: str, name: str, actor=None, **policy) -> Tenant:
    tenant = Tenant(slug=slug, name=name, **policy)
    tenant.full_clean()
    tenant.save()
    # With the values it starts with, as tenant.update records them: the log alone says what a policy was when.
    audit_record(action="tenant.create", target_type="tenant", target_id=slug, actor=actor, tenant_id=tenant.pk,
                 data={"after": {field: str(getattr(tenant, field)) for field in TENANT_AUDITED_FIELDS}})
    return tenant


# Sent once the change has committed, with the names of the fields whose value changed. Apps whose data depends
# on a tenant's policy listen (the ledger re-flags high-cost runs) without this app knowing about them.
tenant_policy_changed = Signal()


class TenantChangedMeanwhile(Exception):
    """The stored tenant is no longer in the state the caller based its change on (tenant_update's `precondition`
    failed); nothing was written."""


@transaction.atomic
def tenant_update(*, tenant: Tenant, actor=None, audit_action: str = "tenant.update",
                  precondition: Callable[[Tenant], bool] | None = None, **changes) -> Tenant:
    """Set these fields and nothing else; returns the tenant as now stored. With a `precondition`, the change is
    made only if it holds for the stored row (an API If-Match), else TenantChangedMeanwhile and nothing changes."""
    # The caller's copy may be stale (two PATCHes of different fields at once, a form opened before another
    # change): saving all of its fields wrote the other change back to its old value, silently and with an audit
    # "before" that was not the stored value. So: lock the row, read "before" from it, write only these fields.
    tenant = Tenant.objects.select_for_update().get(pk=tenant.pk)
    # Checked on the locked row, not before the lock: two writers holding the same ETag would both pass a check
    # made before it, and the second would overwrite the first. Under the lock the second sees the first's write.
    if precondition is not None and not precondition(tenant):
        raise TenantChangedMeanwhile(tenant.slug)
    old_values = {field: getattr(tenant, field) for field in changes}
    for field, value in changes.items():
        setattr(tenant, field, value)
    # Only the fields being set (and the uniqueness rules): a value stored before a validator existed (a markup
    # outside 0..1000 from the admin) must not block an unrelated change, such as setting a legal hold.
    tenant.full_clean(exclude=[field.name for field in Tenant._meta.fields if field.name not in changes])
    # Compared as values (0.1 and 0.1000 are one threshold), recorded as text.
    changed = {field for field in changes if getattr(tenant, field) != old_values[field]}
    if not changed:
        # Nothing to write: saved anyway, updated_at moved and with it the API's ETag, so a PATCH that changed
        # nothing (an empty body, the values already stored) failed every other client's If-Match.
        tenant.refresh_from_db()
        return tenant
    tenant.save(update_fields=[*changes, "updated_at"])
    before = {field: str(old_values[field]) for field in changes}
    after = {field: str(getattr(tenant, field)) for field in changes}
    audit_record(
        action=audit_action, target_type="tenant", target_id=tenant.slug, actor=actor,
        tenant_id=tenant.pk, data={"before": before, "after": after},
    )
    # The listeners of tenant_policy_changed (runs re-flagged at a new high-cost threshold, budget crossings
    # checked) hear of it once it has committed; every change goes through here (API, dashboard, admin).
    # robust: the change has committed; a listener's failure is logged, never the request's.
    transaction.on_commit(lambda: tenant_policy_changed.send(sender=Tenant, tenant=tenant, changed=changed),
                          robust=True)
    return tenant


def membership_set(*, user, tenant: Tenant, role: str = Membership.Role.VIEWER) -> Membership:
    membership, _ = Membership.objects.update_or_create(user=user, tenant=tenant, defaults={"role": role})
    return membership
