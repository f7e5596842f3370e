"""Writes for billing: closing a month freezes its statement for good."""

from __future__ import annotations

import datetime as dt

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.core.services import audit_record
from apps.core.timeutils import next_month

from . import selectors
from .models import Statement


class StatementCloseError(Exception):
    """A month that cannot be closed (yet); `code` is the API error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def statement_close(
    *, tenant, period: dt.date, actor=None, allow_unpriced: bool = False, now: dt.datetime | None = None
) -> tuple[Statement, bool]:
    """Freeze a tenant's statement for a month that has ended. Returns (statement, closed_now).

    Idempotent: closing a closed month returns the stored statement unchanged. The JSON and CSV are
    rendered once here and stored with their hash; nothing ever re-renders a closed statement. Runs that
    reach the ledger later for this month are billed as adjustments on the next open month.
    A month with unpriced runs (no price for their model yet), its own or late ones of earlier months that it
    carries as adjustments, is refused unless `allow_unpriced`, because those runs would be billed at $0 now
    and only as an adjustment later."""
    now = now or timezone.now()
    period = period.replace(day=1)
    existing = selectors.statement_get_closed(tenant=tenant, period=period)
    if existing is not None:
        return existing, False
    if next_month(period) > now.date():
        raise StatementCloseError(
            "period_not_ended", f"{period:%Y-%m} has not ended yet; it can be closed from {next_month(period).isoformat()} (UTC)."
        )
    data = selectors.statement_data_at_one_moment(tenant=tenant, period=period)
    document = selectors.statement_document(data, status=Statement.Status.CLOSED, closed_at=now)
    # Late unpriced runs of closed months ride on this statement as adjustments, billed at $0 just as the
    # month's own would be: they need the same consent (the document's unpriced_runs counts only the month's).
    late_unpriced = sum(max(entry.get("unpriced_runs", 0), 0) for entry in data.adjustments)
    if (document["unpriced_runs"] or late_unpriced) and not allow_unpriced:
        which = [f"{document['unpriced_runs']} run(s) in {period:%Y-%m}"] if document["unpriced_runs"] else []
        if late_unpriced:
            which.append(f"{late_unpriced} late run(s) of earlier months carried as adjustments")
        raise StatementCloseError(
            "unpriced_runs",
            f"{' and '.join(which)} use a model with no price. Add the price "
            f"(POST /api/v1/prices/) and close again, or close with allow_unpriced=true to bill them later as an adjustment.",
        )
    frozen_json = selectors.render_json(document)
    try:
        with transaction.atomic():
            statement = Statement.objects.create(
                tenant=tenant,
                period=period,
                status=Statement.Status.CLOSED,
                closed_at=now,
                closed_by=getattr(actor, "audit_label", "") or str(actor or ""),
                total_usd=document["total_usd"],
                document=selectors.statement_document_for_storage(data),
                frozen_json=frozen_json,
                frozen_csv=selectors.render_csv(document),
                content_hash=selectors.content_hash(frozen_json),
            )
            audit_record(
                action="statement.close", target_type="statement", target_id=f"{tenant.slug}/{period:%Y-%m}",
                actor=actor, tenant_id=tenant.pk,
                data={"total_usd": document["total_usd"], "content_hash": statement.content_hash,
                      "adjustments": len(data.adjustments), "unpriced_runs": document["unpriced_runs"]},
            )
    except IntegrityError:
        # Closed concurrently by another request: theirs is the statement.
        statement = selectors.statement_get_closed(tenant=tenant, period=period)
        if statement is None:
            raise
        return statement, False
    return statement, True

