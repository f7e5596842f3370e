"""The Celery app: settings from Django's CELERY_* namespace, tasks autodiscovered, beat schedule in code."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("runledger")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_finalize.connect
def _install_beat_schedule(sender, **kwargs):
    from config.beat import BEAT_SCHEDULE

    sender.conf.beat_schedule = BEAT_SCHEDULE
