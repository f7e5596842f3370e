"""Lifecycle settings: Django settings, else a variable of the same name in the environment, else the default;
a bad value stops start-up naming its variable."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from apps.lifecycle.conf import check_environment, setting


def test_the_environment_sets_what_django_settings_leave_unset(monkeypatch, settings):
    monkeypatch.setenv("LIFECYCLE_SWEEP_UNASSIGNED", "true")
    monkeypatch.setenv("LIFECYCLE_SWEEP_BATCH_SIZE", "120")
    assert setting("LIFECYCLE_SWEEP_UNASSIGNED") is True
    assert setting("LIFECYCLE_SWEEP_BATCH_SIZE") == 120
    monkeypatch.setenv("LIFECYCLE_SWEEP_UNASSIGNED", "off")
    assert setting("LIFECYCLE_SWEEP_UNASSIGNED") is False


def test_django_settings_win_over_the_environment_and_defaults_stand_without_either(monkeypatch, settings):
    monkeypatch.setenv("LIFECYCLE_FILE_MIN_AGE_DAYS", "30")
    settings.LIFECYCLE_FILE_MIN_AGE_DAYS = 3
    assert setting("LIFECYCLE_FILE_MIN_AGE_DAYS") == 3
    monkeypatch.delenv("LIFECYCLE_CONTAINER_IDLE_MINUTES", raising=False)
    assert setting("LIFECYCLE_CONTAINER_IDLE_MINUTES") == 60


@pytest.mark.parametrize("name, value", [
    ("LIFECYCLE_SWEEP_UNASSIGNED", "maybe"), ("LIFECYCLE_SWEEP_BATCH_SIZE", "0"),
    ("LIFECYCLE_SWEEP_BATCH_SIZE", "-5"), ("LIFECYCLE_FILE_MIN_AGE_DAYS", "7 days"),
])
def test_a_bad_value_stops_start_up_naming_its_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ImproperlyConfigured, match=name):
        check_environment()
