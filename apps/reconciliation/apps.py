from django.apps import AppConfig


class ReconciliationConfig(AppConfig):
    name = "apps.reconciliation"
    label = "reconciliation"

    def ready(self) -> None:
        # A re-rating changes the ledger's cost of past days: their results are compared again (services).
        from apps.ledger.services import runs_repriced

        from .services import reconciliation_after_repricing

        runs_repriced.connect(reconciliation_after_repricing, dispatch_uid="reconciliation.after_repricing")
