"""Web UI routes. Every table on a page exports as CSV from the same URL with ?format=csv&table=<name>."""

from django.urls import path

from . import views

app_name = "dashboard"
urlpatterns = [
    path("", views.OverviewView.as_view(), name="overview"),
    path("tenants/", views.TenantListView.as_view(), name="tenants"),
    path("tenants/<slug:slug>/", views.TenantDetailView.as_view(), name="tenant-detail"),
    path("tenants/<slug:slug>/settings/", views.TenantPolicyView.as_view(), name="tenant-settings"),
    path("runs/", views.RunListView.as_view(), name="runs"),
    path("runs/<str:openai_id>/", views.RunDetailView.as_view(), name="run-detail"),
    path("alerts/", views.AlertListView.as_view(), name="alerts"),
    path("alerts/acknowledge/", views.AlertAcknowledgeView.as_view(), name="alert-acknowledge"),
    path("prices/", views.PriceListView.as_view(), name="prices"),
]
