"""Login with throttling, and a health check for load balancers and docker-compose."""

import logging

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import UsernameField
from django.core.cache import cache
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from rest_framework.throttling import BaseThrottle

from .middleware import is_api_request

logger = logging.getLogger(__name__)

LOGIN_ATTEMPTS_PER_WINDOW = 10
LOGIN_WINDOW_SECONDS = 300


def _login_throttle_keys(request) -> list[str]:
    # The name as the login form reads it before authenticating (stripped, NFKC-normalized): counted as
    # typed, " ops" and "ｏｐｓ" each had ten tries of their own at the password of "ops", so an attacker
    # rotating addresses was never stopped by the per-username limit.
    username = UsernameField(max_length=150).to_python(request.POST.get("username") or "").lower()[:150]
    # The client's address as DRF's throttles read it: REMOTE_ADDR, or behind DJANGO_NUM_PROXIES proxies the
    # address the outermost one saw, so one client's failures do not lock out everyone behind the proxy.
    address = BaseThrottle().get_ident(request)
    return [f"login-fail:user:{username}", f"login-fail:addr:{address}"]


def _login_refused(request) -> HttpResponse | None:
    """The 429 for a sign-in attempt past the limit of its username or address, None to go on."""
    try:
        counts = [cache.get(key) or 0 for key in _login_throttle_keys(request)]
    except Exception as exc:  # noqa: BLE001 - the cache (Redis) is down: log in unthrottled, not a 500
        logger.warning("login throttle unavailable (%s: %s)", type(exc).__name__, exc)
        counts = []
    if any(count >= LOGIN_ATTEMPTS_PER_WINDOW for count in counts):
        return HttpResponse(
            "Too many failed logins. Wait five minutes and try again.", status=429, content_type="text/plain"
        )
    return None


def _login_failed(request) -> None:
    try:
        for key in _login_throttle_keys(request):
            cache.add(key, 0, LOGIN_WINDOW_SECONDS)
            try:
                cache.incr(key)
            except ValueError:
                cache.set(key, 1, LOGIN_WINDOW_SECONDS)
    except Exception as exc:  # noqa: BLE001 - see _login_refused()
        logger.warning("login throttle unavailable (%s: %s)", type(exc).__name__, exc)


class ThrottledLoginView(auth_views.LoginView):
    """At most 10 failed logins per username and per client address in 5 minutes; then 429."""

    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        return _login_refused(request) or super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        _login_failed(self.request)
        return super().form_invalid(form)


def throttled_admin_login(request, extra_context=None):
    """The admin's own sign-in page (/admin/login/) under the same limits, sharing the same counters: it
    was a second door to every staff password with no limit at all."""
    if request.method == "POST":
        refused = _login_refused(request)
        if refused is not None:
            return refused
    response = admin.site.login(request, extra_context)
    # A sign-in that worked redirects; the form shown again (200) is a failed one.
    if request.method == "POST" and response.status_code == 200:
        _login_failed(request)
    return response


@csrf_exempt  # API clients send no CSRF token: a write here answered Django's HTML 403 "CSRF verification failed"
def api_not_found(request, *args, **kwargs):
    message = "No such API endpoint. See /api/docs/."
    if not request.path_info.endswith("/"):
        try:
            with_slash = resolve(request.path_info + "/").func
        except Resolver404:
            with_slash = None
        if with_slash is not None and with_slash is not api_not_found:
            # The usual slip: POST /api/v1/ingest (Django cannot redirect a POST to the slash).
            message = f"No such API endpoint; did you mean {request.path}/ (with the trailing slash)? See /api/docs/."
    return JsonResponse({"error": {"code": "not_found", "message": message}}, status=404)


def server_error(request, *args, **kwargs):
    """A last resort that still speaks JSON to API clients and names the request id for support."""
    request_id = getattr(request, "request_id", "")
    if is_api_request(request):
        return JsonResponse({"error": {"code": "server_error", "message": "Internal error.",
                                       "request_id": request_id}}, status=500)
    return HttpResponse(f"Internal error (request {request_id}).", status=500, content_type="text/plain")


def healthz(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
