"""Web UI route of the reconciliation page, mounted at /reconciliation/."""

from django.urls import path

from .views import ReconciliationPageView

app_name = "reconciliation"
urlpatterns = [
    path("", ReconciliationPageView.as_view(), name="page"),
]
