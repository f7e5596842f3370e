"""Writing to the audit log."""

from .models import AuditEvent


def audit_record(
    *, action: str, target_type: str, target_id, actor=None, actor_label: str = "", tenant_id=None, data=None
) -> AuditEvent:
    user = actor if getattr(actor, "is_authenticated", False) and getattr(actor, "pk", None) else None
    return AuditEvent.objects.create(
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        actor=user,
        actor_label=actor_label or (getattr(actor, "audit_label", "") if actor is not None else ""),
        tenant_id=tenant_id,
        data=data or {},
    )
