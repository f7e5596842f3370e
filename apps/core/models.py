"""The audit log of changes people and jobs make (prices, policies, keys, manual sweeps, re-pricing)."""

from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    # Who acted when it was not a logged-in person: "api-key:<prefix>", "command:reprice", "task:sweep".
    actor_label = models.CharField(max_length=120, blank=True)
    action = models.CharField(max_length=80, db_index=True)
    target_type = models.CharField(max_length=80)
    # Room for a price version, "<model>@<YYYY-MM-DD>", of a model named up to 255 characters (a fine-tuned id).
    target_id = models.CharField(max_length=300)
    tenant_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.action} {self.target_type}:{self.target_id}"
