"""URL map: web UI at /, REST API at /api/v1/, schema and docs at /api/schema/, admin at /admin/."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from apps.core import views as core_views

api_v1 = [
    path("", include("apps.ledger.api_urls")),
    path("", include("apps.pricing.api_urls")),
    path("", include("apps.tenants.api_urls")),
    path("", include("apps.billing.api_urls")),
    path("", include("apps.reconciliation.api_urls")),
    # Anything else under /api/v1/ answers in the API's error shape, not with an HTML page.
    re_path(r"^.*$", core_views.api_not_found),
]

# The admin is RunLedger's, not a stock "Django administration" beside the product's own pages.
admin.site.site_header = "RunLedger administration"
admin.site.site_title = "RunLedger admin"

urlpatterns = [
    # Before the admin's own URLs, so its sign-in form is throttled like the product's.
    path("admin/login/", core_views.throttled_admin_login),
    path("admin/", admin.site.urls),
    path("accounts/login/", core_views.ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", core_views.healthz, name="healthz"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("lifecycle/", include("apps.lifecycle.urls")),
    path("reconciliation/", include("apps.reconciliation.urls")),
    path("", include("apps.dashboard.urls")),
]

handler500 = "apps.core.views.server_error"
