from django.apps import AppConfig


class LifecycleConfig(AppConfig):
    name = "apps.lifecycle"
    label = "lifecycle"

    def ready(self):
        from .conf import check_environment

        check_environment()
        # The ingest API hands vector stores, files and containers to this app (the one place they are stored).
        from apps.ledger.services import resource_handler_register

        from .services import resources_record_ingest

        for kind in ("vector_store", "file", "container"):
            resource_handler_register(kind=kind, handler=resources_record_ingest)
