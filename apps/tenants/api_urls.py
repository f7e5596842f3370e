"""REST API routes of this app, mounted under /api/v1/."""

from django.urls import path

from . import api_views

urlpatterns: list = [
    path("tenants/", api_views.TenantListView.as_view(), name="api-tenants"),
    path("tenants/<str:slug>/", api_views.TenantDetailView.as_view(), name="api-tenant"),
]
