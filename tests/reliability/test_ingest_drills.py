"""Short versions of the ingest drills (`manage.py drill load|redis-outage|postgres-restart` run the long
ones): real gunicorn, a private PostgreSQL, a private Redis, concurrent clients over loopback."""

import pytest

from apps.drills.ingest_drills import drill_load, drill_postgres_restart, drill_redis_outage

pytestmark = [pytest.mark.slow]


def _quiet(message):
    pass


def test_load_stores_every_run_once_with_no_5xx_and_matching_rollups(postgres_server):
    result = drill_load(clients=12, seconds=6, batch_size=10, workers=2, say=_quiet)
    assert result["runs_sent"] > 500, result
    assert result["runs_stored"] == result["runs_sent"], result
    assert result["duplicate_events_sent"] > 0 and result["status_updates_sent"] > 0, result
    assert result["duplicates"] == 0 and result["missing"] == 0 and result["wrong_state"] == 0, result
    assert result["http_5xx"] == 0 and result["http_503"] == 0, result
    assert set(result["status_codes"]) == {"200"}, result
    assert result["ledger_check"] == "match", result
    assert result["rollup_input_tokens"] == result["expected_input_tokens"], result
    assert result["ok"], result


def test_redis_outage_keeps_ingest_storing_and_alerts_catch_up(postgres_server, redis_binaries):
    result = drill_redis_outage(clients=6, seconds=12, outage_at=3, outage_seconds=5, say=_quiet)
    assert set(result["status_codes"]) == {"200"}, result
    assert result["runs_stored"] == result["runs_sent"] and result["missing"] == 0, result
    assert result["alerts_raised_during_outage"] > 0, result
    assert result["alerts_delivered"] == result["alerts_raised"], result
    assert result["alerts_received_by_webhook"] == result["alerts_raised"], result
    assert result["ok"], result


def test_postgres_restart_answers_503_never_500_and_loses_nothing_acknowledged(postgres_binaries):
    result = drill_postgres_restart(clients=8, seconds=14, down_at=3, down_seconds=2, say=_quiet)
    assert result["http_503"] > 0, result
    assert result["http_5xx"] == 0, result
    assert set(result["status_codes"]) <= {"200", "503"}, result
    assert result["missing"] == 0 and result["wrong_state"] == 0 and result["duplicates"] == 0, result
    assert result["ledger_check"] == "match", result
    assert result["ok"], result
