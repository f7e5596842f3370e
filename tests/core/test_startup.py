"""The web entry point loads every view and freezes what startup made, so full garbage collections during
requests walk only the requests' objects (issue #9: p95 spikes of 55–85 ms on every page)."""

import subprocess
import sys

from tests.core.test_settings import PRODUCTION_SERVICES, ROOT, _clean_environment


def test_the_wsgi_entry_point_loads_the_views_and_freezes_the_startup_objects():
    env = {**_clean_environment(), "DJANGO_SETTINGS_MODULE": "config.settings.production", "DJANGO_SECRET_KEY": "s" * 60,
           "DJANGO_ALLOWED_HOSTS": "x", **PRODUCTION_SERVICES}
    code = ("import gc, sys; import config.wsgi; "
            "print(gc.get_freeze_count(), 'apps.billing.api_views' in sys.modules, 'apps.dashboard.views' in sys.modules, "
            "len(gc.get_objects(generation=2)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    frozen, billing_views, dashboard_views, left_in_the_oldest_generation = result.stdout.split()
    assert int(frozen) > 10_000  # Django, DRF, psycopg, the openai SDK: tens of thousands of objects
    assert billing_views == dashboard_views == "True"
    assert int(left_in_the_oldest_generation) < int(frozen) // 10
