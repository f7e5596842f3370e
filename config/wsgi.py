"""WSGI entry point for gunicorn (and runserver, through WSGI_APPLICATION)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
application = get_wsgi_application()

from apps.core.startup import load_views_and_freeze_startup_objects  # noqa: E402 — needs Django set up

load_views_and_freeze_startup_objects()
