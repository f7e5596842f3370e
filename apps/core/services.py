"""Writing to the audit log."""

from collections.abc import Iterable

from .models import AuditEvent


def audit_record(
    *, action: str, target_type: str, target_id, actor=None, actor_label: str = "", tenant_id=None, data=None
) -> AuditEvent:
    return AuditEvent.objects.create(**_audit_fields(action, target_type, target_id, actor, actor_label, tenant_id,
                                                      data))


def audit_record_many(*, action: str, target_type: str, targets: Iterable[tuple], actor=None, actor_label: str = "",
                      data=None) -> int:
    """audit_record for each (target_id, tenant_id) of `targets`, in one INSERT: an action taken on many objects at
    once (acknowledging a page of alerts) still leaves one record per object. Returns how many."""
    events = [AuditEvent(**_audit_fields(action, target_type, target_id, actor, actor_label, tenant_id, data))
              for target_id, tenant_id in targets]
    AuditEvent.objects.bulk_create(events, batch_size=1000)
    return len(events)


def _audit_fields(action, target_type, target_id, actor, actor_label, tenant_id, data) -> dict:
    user = actor if getattr(actor, "is_authenticated", False) and getattr(actor, "pk", None) else None
    return {
        "action": action,
        "target_type": target_type,
        "target_id": str(target_id),
        "actor": user,
        "actor_label": actor_label or (getattr(actor, "audit_label", "") if actor is not None else ""),
        "tenant_id": tenant_id,
        "data": data or {},
    }
