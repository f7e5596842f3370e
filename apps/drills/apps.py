"""The drills app: installed in local and test settings only (like the sandbox it drives)."""

from django.apps import AppConfig


class DrillsConfig(AppConfig):
    name = "apps.drills"
    label = "drills"
    verbose_name = "Reliability drills"
