"""Lifecycle pages under /lifecycle/."""

from django.urls import path

from . import views

app_name = "lifecycle"
urlpatterns = [
    path("", views.OverviewView.as_view(), name="overview"),
    path("sweeps/new/", views.SweepCreateView.as_view(), name="sweep-create"),
    path("sweeps/<int:pk>/", views.SweepDetailView.as_view(), name="sweep-detail"),
    path("sweeps/<int:pk>/confirm/", views.SweepConfirmView.as_view(), name="sweep-confirm"),
    path("audit/", views.AuditView.as_view(), name="audit"),
    path("archives/<str:openai_id>.json", views.ArchiveDownloadView.as_view(), name="archive"),
    path("orphans/", views.OrphansView.as_view(), name="orphans"),
    path("orphans/<str:resource_type>/<int:pk>/<str:action>/", views.OrphanActionView.as_view(), name="orphan-action"),
]
