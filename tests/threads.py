"""Work in another thread with its own database connection, for tests of what two sessions do at once
(PostgreSQL: they need transaction=True, so each thread sees what the others committed)."""

from __future__ import annotations

import threading
import time

import psycopg
from django.db import connection


def dsn() -> str:
    """The test database's connection string, for a psycopg connection of the test's own."""
    settings = connection.settings_dict
    return psycopg.conninfo.make_conninfo(
        dbname=settings["NAME"], user=settings["USER"], password=settings["PASSWORD"] or None,
        host=settings["HOST"] or None, port=settings["PORT"] or None,
    )


class InAnotherThread:
    """Runs `work` in a thread with its own database connection; `.result` is what it returned."""

    def __init__(self, work):
        self.result = self.error = None

        def run():
            try:
                self.result = work()
            except Exception as exc:  # surfaced by the caller's assertions
                self.error = exc
            finally:
                connection.close()

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def waiting_after(self, seconds: float) -> bool:
        self.thread.join(timeout=seconds)
        return self.thread.is_alive()

    def finish(self):
        self.thread.join(timeout=60)
        assert self.error is None, self.error
        return self.result


def a_session_waits_on_a_row(*, within: float = 10.0) -> bool:
    """PostgreSQL: whether, within `within` seconds, some session of the test database waits on a row another
    transaction holds (locked or written and not committed; not an advisory lock): the point a concurrency test
    wants a thread to reach."""
    deadline = time.monotonic() + within
    with psycopg.connect(dsn(), autocommit=True) as watcher:
        while time.monotonic() < deadline:
            waiting = watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                      "AND wait_event_type = 'Lock' AND wait_event IN ('transactionid', 'tuple')"
                                      ).fetchone()[0]
            if waiting:
                return True
            time.sleep(0.02)
    return False
