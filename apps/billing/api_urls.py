"""REST API routes of this app, mounted under /api/v1/."""

from django.urls import path

from . import api_views

urlpatterns: list = [
    path("tenants/<str:slug>/usage/", api_views.TenantUsageView.as_view(), name="api-tenant-usage"),
    path("tenants/<str:slug>/statements/<str:period>.csv", api_views.StatementCsvView.as_view(), name="api-statement-csv"),
    path("tenants/<str:slug>/statements/<str:period>/", api_views.StatementView.as_view(), name="api-statement"),
    path("tenants/<str:slug>/statements/<str:period>/close", api_views.StatementCloseView.as_view(), name="api-statement-close"),
    path("tenants/<str:slug>/statements/<str:period>/close/", api_views.StatementCloseSlashView.as_view()),
    path("runs/", api_views.RunListView.as_view(), name="api-runs"),
    path("runs/<str:openai_id>/", api_views.RunDetailView.as_view(), name="api-run"),
]
