"""REST API routes of this app, mounted under /api/v1/."""

from django.urls import path

from . import api_views

urlpatterns: list = [
    path("ingest/", api_views.IngestView.as_view(), name="api-ingest"),
]
