"""Which OpenAI projects to reconcile and how to reach them: the ones ops configured, plus the deployment's
default project (OPENAI_PROJECT_ID / OPENAI_ADMIN_KEY), which needs no configuration at all."""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from .comparison import Tolerance


class ProjectKeyMissing(RuntimeError):
    """The environment variable a project names holds no key."""


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
        return self.base_url or settings.OPENAI_BASE_URL


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
