from django.apps import AppConfig


class ReconciliationConfig(AppConfig):
    name = "apps.reconciliation"
    label = "reconciliation"

    def ready(self) -> None:
        # A re-rating changes the ledger's cost of past days: their results are compared again (services).
        from apps.ledger.services import runs_ingested, runs_repriced

        from .services import late_ledger_days_mark, reconciliation_after_repricing

        runs_repriced.connect(reconciliation_after_repricing, dispatch_uid="reconciliation.after_repricing")
        # So do runs reported after the daily run stopped re-checking their day: marked, compared hourly.
        runs_ingested.connect(late_ledger_days_mark, dispatch_uid="reconciliation.late_ledger_days")
