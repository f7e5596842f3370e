"""Moving the test database's ledger app (or another) to an earlier migration and back, for tests of data
migrations (they need `django_db(transaction=True)`: SQLite refuses schema changes inside a transaction)."""

from __future__ import annotations

from django.apps.registry import Apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def migrate_ledger_to(name: str) -> Apps:
    """Migrate the ledger app to migration `name` (forwards or backwards); the models as they were there."""
    return migrate_app_to("ledger", name)


def migrate_app_to(app: str, name: str) -> Apps:
    """Migrate `app` to its migration `name` (forwards or backwards); the models as they were there."""
    executor = MigrationExecutor(connection)
    executor.migrate([(app, name)])
    executor.loader.build_graph()
    return executor.loader.project_state((app, name)).apps


def migrate_ledger_to_latest() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
