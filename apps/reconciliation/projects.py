"""Which OpenAI projects RunLedger knows and how to reach them: the ones ops configured (admin: Reconciliation ›
OpenAI projects), plus the deployment's default project (OPENAI_PROJECT_ID / OPENAI_API_KEY /
OPENAI_ADMIN_KEY), which needs no configuration at all. Reconciliation reads each project's costs with its
admin key; the sweeps, the inventory and the run collector reach each project's objects with its API key
(ProjectProviders)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db.models import Q

from .comparison import Tolerance

logger = logging.getLogger(__name__)


class ProjectKeyMissing(RuntimeError):
    """The environment variable a project names holds no key (or the project has no key configured)."""


@dataclass(frozen=True)
class ProjectConfig:
    project_id: str
    name: str
    admin_key_env: str
    api_key_env: str
    base_url: str
    tolerance: Tolerance
    configured: bool  # False for the settings default

    def admin_key(self) -> str:
        """The admin key, read at the moment of use and never stored or logged."""
        if not self.configured:
            key = settings.OPENAI_ADMIN_KEY
            if not key:
                raise ProjectKeyMissing(
                    f"No admin key for the default project {self.project_id}: set OPENAI_ADMIN_KEY in the "
                    f"environment, or configure the project in the admin (Reconciliation › OpenAI projects)."
                )
            return key
        key = os.environ.get(self.admin_key_env, "")
        if not key:
            raise ProjectKeyMissing(
                f"The environment variable {self.admin_key_env} (admin key of OpenAI project {self.project_id}) "
                f"is not set in this process: set it for the web, worker and beat processes, or fix the name in "
                f"the admin."
            )
        return key

    def api_key(self) -> str:
        if not self.configured:
            return settings.OPENAI_API_KEY
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""

    def resolved_base_url(self) -> str:
        """Where this project's keys are sent. The override is for the sandbox only (settings.SANDBOX_ENABLED,
        never in production): honoured anywhere, anyone who may edit a project row in the admin could send the
        key variable it names (OPENAI_ADMIN_KEY, or DATABASE_URL: any variable name passes) to a host of their
        choosing with the next reconciliation. A row saved with one before is ignored here, and said so."""
        if self.base_url and not settings.SANDBOX_ENABLED:
            logger.warning("OpenAI project %s: base URL override %r ignored (sandbox only); using OPENAI_BASE_URL",
                           self.project_id, self.base_url)
            return settings.OPENAI_BASE_URL
        return self.base_url or settings.OPENAI_BASE_URL

    def provider(self, *, admin: bool):
        """The provider for this project: with its admin key too (`admin`, for the Costs and Usage API), or
        with its API key alone (objects: conversations, vector stores, files, containers, runs)."""
        from apps.provider.client import OpenAIProvider

        api_key = self.api_key()
        if not admin and not api_key:
            raise ProjectKeyMissing(
                f"No API key for OpenAI project {self.project_id}: "
                + (f"the environment variable {self.api_key_env} is not set in this process (set it for the web, "
                   f"worker and beat processes)." if self.api_key_env else
                   "name the environment variable holding it in the admin (Reconciliation › OpenAI projects, "
                   "API key environment variable)." if self.configured else "set OPENAI_API_KEY.")
            )
        return OpenAIProvider(
            base_url=self.resolved_base_url() or None,
            api_key=api_key or None,
            admin_key=self.admin_key() if admin else None,
            project_id=self.project_id,
            timeout=settings.OPENAI_TIMEOUT_SECONDS,
        )


def default_tolerance() -> Tolerance:
    return Tolerance(
        percent=Decimal(str(getattr(settings, "RECONCILIATION_TOLERANCE_PERCENT", "1"))),
        usd=Decimal(str(getattr(settings, "RECONCILIATION_TOLERANCE_USD", "0.01"))),
    )


def project_config_from_model(project) -> ProjectConfig:
    base = default_tolerance()
    return ProjectConfig(
        project_id=project.project_id,
        name=project.name,
        admin_key_env=project.admin_key_env,
        api_key_env=project.api_key_env,
        base_url=project.base_url,
        tolerance=Tolerance(
            percent=project.tolerance_percent if project.tolerance_percent is not None else base.percent,
            usd=project.tolerance_usd if project.tolerance_usd is not None else base.usd,
        ),
        configured=True,
    )


def default_project_config() -> ProjectConfig:
    return ProjectConfig(
        project_id=settings.OPENAI_PROJECT_ID,
        name="default (settings)",
        admin_key_env="OPENAI_ADMIN_KEY",
        api_key_env="OPENAI_API_KEY",
        base_url="",
        tolerance=default_tolerance(),
        configured=False,
    )


def project_q(project_id: str, field: str = "openai_project") -> Q:
    """Rows of one OpenAI project; rows recorded without a project belong to the deployment's default one."""
    condition = Q(**{field: project_id})
    if project_id == settings.OPENAI_PROJECT_ID:
        condition |= Q(**{field: ""})
    return condition


def project_config(project_id: str) -> ProjectConfig | None:
    """The configuration of one project (active or not), the settings default for the default project's id
    when ops did not configure it, None for a project RunLedger has no way to reach."""
    from .models import OpenAIProject

    configured = OpenAIProject.objects.filter(project_id=project_id).first()
    if configured is not None:
        config = project_config_from_model(configured)
        if not config.api_key_env and project_id == settings.OPENAI_PROJECT_ID:
            # Configured for reconciliation only: its objects are reached with the deployment's own API key.
            return default_project_config()
        return config
    return default_project_config() if project_id == settings.OPENAI_PROJECT_ID else None


def object_project_ids() -> list[str]:
    """The projects whose objects RunLedger can list: the default one and every configured project with an
    API key environment variable (active or not: retention applies to a project that is not reconciled)."""
    from .models import OpenAIProject

    ids = {settings.OPENAI_PROJECT_ID}
    ids |= set(OpenAIProject.objects.exclude(api_key_env="").values_list("project_id", flat=True))
    return sorted(ids)
