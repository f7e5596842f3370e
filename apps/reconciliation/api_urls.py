"""REST API routes of this app, mounted under /api/v1/."""

from django.urls import path

from .api import ReconciliationView

urlpatterns = [
    path("reconciliation/", ReconciliationView.as_view(), name="api-reconciliation"),
]
