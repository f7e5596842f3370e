"""The price admin: a new price rates the runs stored unpriced for its model, and says so."""

from __future__ import annotations

import datetime as dt

from django.contrib.messages import get_messages

from apps.core.models import AuditEvent
from apps.ledger.models import Run
from apps.ledger.services import ingest_events, ledger_check
from apps.pricing.models import ModelPrice
from tests import builders

FORM = {"model": "admin-model", "effective_from": "2026-01-01", "input_usd_per_1m": "1.00",
        "cached_input_usd_per_1m": "", "output_usd_per_1m": "4.00", "source": "test", "source_date": "2026-01-01"}


def _superuser_login(client, staff_user) -> None:
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)


def _unpriced(tenant, output_tokens: int) -> None:
    ingest_events(events=[{"tenant": tenant.slug, "object": builders.response(
        created_at=dt.datetime(2026, 6, 2, tzinfo=dt.UTC), model="admin-model", input_tokens=1,
        output_tokens=output_tokens)}])


def test_a_new_price_rates_the_unpriced_runs_and_says_how_many(client, staff_user, tenant):
    _unpriced(tenant, 1_000_000)
    _superuser_login(client, staff_user)

    response = client.post("/admin/pricing/modelprice/add/", FORM, follow=True)

    assert response.status_code == 200
    assert "1 unpriced runs are now rated." in [str(m) for m in get_messages(response.wsgi_request)]
    assert Run.objects.for_tenant(tenant).get().priced is True


def test_a_price_whose_re_rating_would_overflow_is_not_added_and_nothing_changes(client, staff_user, tenant,
                                                                                   monkeypatch):
    # A small run, then one of 10**12 output tokens (the most ingest takes): at $1,000 per million a billion
    # USD, past what an end user's month can hold. One run a batch, so the small one is rated first.
    monkeypatch.setattr("apps.ledger.services.REPRICE_BATCH", 1)
    _unpriced(tenant, 1_000_000)
    _unpriced(tenant, 10**12)
    _superuser_login(client, staff_user)

    response = client.post("/admin/pricing/modelprice/add/", {**FORM, "output_usd_per_1m": "1000"}, follow=True)

    assert response.status_code == 200
    shown = [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]
    assert [level for level, _ in shown] == ["error"]  # and no "was added successfully"
    assert "The price was not added (nothing changed)" in shown[0][1] and "Add a corrected one" in shown[0][1]
    assert not ModelPrice.objects.filter(model="admin-model").exists()
    assert not Run.objects.for_tenant(tenant).filter(priced=True).exists()
    assert not AuditEvent.objects.filter(action__in=["admin.modelprice.create", "ledger.reprice"]).exists()
    assert ledger_check() == []


def test_save_as_new_with_an_overflowing_price_is_refused_the_same_way(client, staff_user, tenant):
    existing = ModelPrice.objects.create(model="admin-model", effective_from=dt.date(2026, 1, 1),
                                         input_usd_per_1m=1, output_usd_per_1m=4)
    _unpriced(tenant, 10**12)  # priced by `existing` at $4 per million: 4 million USD
    ModelPrice.objects.filter(pk=existing.pk).update(effective_from=dt.date(2026, 7, 1))  # so June is unpriced
    Run.objects.for_tenant(tenant).update(priced=False, model_price_id=None, cost_input_usd=0, cost_output_usd=0,
                                          cost_cached_input_usd=0, cost_tools_usd=0, cost_total_usd=0)
    ledger_check(fix=True)
    _superuser_login(client, staff_user)

    response = client.post(f"/admin/pricing/modelprice/{existing.pk}/change/",
                           {**FORM, "output_usd_per_1m": "1000", "_saveasnew": "1"}, follow=True)

    assert response.status_code == 200
    assert [m.level_tag for m in get_messages(response.wsgi_request)] == ["error"]
    assert list(ModelPrice.objects.values_list("pk", flat=True).filter(model="admin-model")) == [existing.pk]
    assert ledger_check() == []
