"""broker_queues_declare: the embedded broker's queues exist before several processes start using them."""

import sqlite3

import pytest

from apps.core.broker import broker_queues_declare

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # kombu's SQLAlchemy transport, not ours


@pytest.fixture
def sqlite_broker(tmp_path):
    """The embedded broker's transport on a file of this test's own."""
    from config.celery import app

    path = tmp_path / "broker.sqlite3"
    before = app.conf.broker_url, app.conf.broker_transport_options
    # As the settings make it without REDIS_URL: kombu hands the SQLAlchemy transport's options to
    # create_engine(), which takes none of Redis's (visibility_timeout).
    app.conf.broker_url, app.conf.broker_transport_options = f"sqla+sqlite:///{path}", {}
    yield path
    app.conf.broker_url, app.conf.broker_transport_options = before


def test_the_task_queue_is_declared_once_however_often_it_is_asked(sqlite_broker):
    assert broker_queues_declare() == ["default"]
    assert broker_queues_declare() == ["default"]
    with sqlite3.connect(sqlite_broker) as database:
        assert database.execute("SELECT name FROM kombu_queue").fetchall() == [("default",)]


def test_a_task_sent_after_it_finds_the_queue_and_adds_no_second_one(sqlite_broker):
    from config.celery import app

    broker_queues_declare()
    # On a connection of its own (the app's pooled one would outlive this test's broker).
    with app.connection_for_write() as connection:
        app.send_task("lifecycle.sweep_start", args=["threads"], producer=connection.Producer())
    with sqlite3.connect(sqlite_broker) as database:
        assert database.execute("SELECT count(*) FROM kombu_queue").fetchone() == (1,)
        assert database.execute("SELECT count(*) FROM kombu_message").fetchone() == (1,)
