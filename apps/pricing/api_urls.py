"""REST API routes of this app, mounted under /api/v1/."""

from django.urls import path

from . import api_views

urlpatterns: list = [
    path("prices/", api_views.PriceListView.as_view(), name="api-prices"),
]
