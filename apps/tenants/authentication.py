"""API-key authentication (`Authorization: Bearer rl_…`), per-key rate limiting and scope permissions."""

from __future__ import annotations

import logging

from rest_framework import authentication, exceptions, permissions, throttling

from .models import ApiKey
from .scoping import TenantScope
from .selectors import scope_for_api_key
from .services import api_key_authenticate

logger = logging.getLogger(__name__)


class ApiKeyPrincipal:
    """request.user for API requests: the key, its scope and the tenants it may see."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False
    pk = None

    def __init__(self, key: ApiKey):
        self.key = key
        self.tenant_scope: TenantScope = scope_for_api_key(key)
        self.audit_label = f"api-key:{key.prefix}"

    def __str__(self) -> str:
        return self.audit_label


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if len(parts) != 2 or parts[0] != self.keyword:
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <api key>'.")
        key = api_key_authenticate(parts[1])
        if key is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        return ApiKeyPrincipal(key), key

    def authenticate_header(self, request):
        return self.keyword


class ApiKeyRateThrottle(throttling.SimpleRateThrottle):
    """Per-key request rate. Its counters live in the cache (Redis in production); when that is down the
    request is let through (and logged) rather than refused: the database, not Redis, is what ingest needs."""

    scope = "api_key"

    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except Exception as exc:  # noqa: BLE001 - redis, socket and cache-backend errors alike
            logger.warning("rate-limit cache unavailable (%s: %s); request allowed", type(exc).__name__, exc)
            return True

    def get_cache_key(self, request, view):
        key = getattr(request, "auth", None)
        ident = key.prefix if isinstance(key, ApiKey) else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


def _key(request) -> ApiKey | None:
    return request.auth if isinstance(request.auth, ApiKey) else None


class CanRead(permissions.BasePermission):
    """billing and admin keys read; admin keys also write. Ingest keys read nothing."""

    message = "This API key's scope does not allow this."

    def has_permission(self, request, view):
        key = _key(request)
        if key is None:
            return False
        # The refusal names the key's scope and the one needed (DRF makes a permission per request).
        this_key = f"This is {'an' if key.scope[0] in 'aeiou' else 'a'} {key.scope} key"
        if request.method in permissions.SAFE_METHODS:
            self.message = f"{this_key}; reading needs a billing or admin API key."
            return key.scope in (ApiKey.Scope.BILLING, ApiKey.Scope.ADMIN)
        self.message = f"{this_key}; this change needs an admin API key."
        return key.scope == ApiKey.Scope.ADMIN


class CanIngest(permissions.BasePermission):
    message = "Ingesting needs an ingest or admin API key."

    def has_permission(self, request, view):
        key = _key(request)
        return key is not None and key.scope in (ApiKey.Scope.INGEST, ApiKey.Scope.ADMIN)


class IsAdminKey(permissions.BasePermission):
    message = "This needs an admin API key."

    def has_permission(self, request, view):
        key = _key(request)
        return key is not None and key.scope == ApiKey.Scope.ADMIN
