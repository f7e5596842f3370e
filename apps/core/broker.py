"""The Celery broker's queues, declared once before several processes use them.

kombu's SQLAlchemy transport (the embedded broker of `make run` and the drills, a SQLite file) creates a
queue's row the first time any process declares it, with a read then an INSERT that is not safe against
another process doing the same: a worker starting while another process sends a task can fail with
"UNIQUE constraint failed: kombu_queue.name". Declared once, in one process, before the others start, every
later declaration finds the row. On Redis, declaring a queue writes nothing; this is then a no-op."""

from __future__ import annotations


def broker_queues_declare() -> list[str]:
    """Declare every queue the Celery app routes tasks to (idempotent); their names."""
    from config.celery import app

    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in app.amqp.queues.values():
            queue(channel).declare()
    return list(app.amqp.queues)
