"""The provider of each OpenAI project (DESIGN: a client per OpenAI project and key). Which projects exist
and where their keys are is configuration (apps.reconciliation.projects); this turns it into providers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

from django.conf import settings

from apps.reconciliation.projects import ProjectKeyMissing, object_project_ids, project_config

from .client import OpenAIProvider, ProviderError, is_not_found, is_transient

__all__ = ["ProjectKeyMissing", "ProjectProviders", "not_found_unasked", "other_projects", "project_holding"]

logger = logging.getLogger(__name__)

Fetched = TypeVar("Fetched")


class ProjectProviders:
    """The provider of each OpenAI project an object lives in, built on first use and kept for the caller's
    work. OpenAI scopes conversations, threads, vector stores, files and containers by project: asked with
    another project's key, an object answers 404, which a sweep would read as "already gone". So every
    caller that reaches objects picks the provider of the project the ledger recorded for each one ("" is
    the deployment's default project). `default` stands in for the default project's provider (tests and
    benches pass the sandbox's)."""

    def __init__(self, default=None):
        self._default = default
        self._built: dict[str, object] = {}

    def for_project(self, project_id: str) -> OpenAIProvider:
        """The provider for `project_id`; ProjectKeyMissing (saying what to configure) when there is none."""
        project_id = project_id or settings.OPENAI_PROJECT_ID
        if project_id not in self._built:
            try:
                self._built[project_id] = self._build(project_id)
            except ProjectKeyMissing as exc:
                logger.warning("OpenAI project %s cannot be reached, its objects are left alone: %s", project_id, exc)
                self._built[project_id] = exc  # asked again for every item of that project: answer from here
        built = self._built[project_id]
        if isinstance(built, ProjectKeyMissing):
            raise built
        return built

    def _build(self, project_id: str) -> OpenAIProvider:
        config = project_config(project_id)
        if config is None:
            raise ProjectKeyMissing(
                f"OpenAI project {project_id} is not configured: add it in the admin (Reconciliation › OpenAI "
                f"projects) with the environment variable holding its API key."
            )
        if not config.configured:
            # The deployment's own key: missing, it is this process's setup (ProviderAuthError, as before),
            # not the project's, so a sweep's batch fails and another worker can take it on.
            return self._default if self._default is not None else OpenAIProvider.default()
        return config.provider(admin=False)


def other_projects(asked: str) -> list[str]:
    """Every project RunLedger can reach but `asked`: where else to look after a 404 there."""
    return [project_id for project_id in object_project_ids() if project_id != asked]


def project_holding(lease: Callable[[str], object], project_ids: Iterable[str], fetch: Callable[[object], Fetched]
                    ) -> tuple[str | None, Fetched | None, dict[str, str]]:
    """Which of `project_ids` holds an object: the first project whose provider (`lease(project_id)`) fetches
    it without a 404, what `fetch(provider)` returned there, and the projects that could not be asked (no
    key, or a key OpenAI refuses), each with why. OpenAI answers 404 for another project's objects, so a 404
    is "gone" only once every project says so. A transient error (a rate limit, OpenAI down) is raised as
    it came, its message naming the project: the caller retries later."""
    unreachable: dict[str, str] = {}
    for project_id in project_ids:
        try:
            provider = lease(project_id)
        except ProjectKeyMissing as exc:
            unreachable[project_id] = str(exc)
            continue
        try:
            fetched = fetch(provider)
        except Exception as exc:
            if is_not_found(exc):
                continue
            if not isinstance(exc, ProviderError):
                raise
            if is_transient(exc):
                raise type(exc)(f"OpenAI project {project_id}: {exc}", status_code=exc.status_code, code=exc.code,
                                request_id=exc.request_id, attempts=exc.attempts, operation=exc.operation) from exc
            unreachable[project_id] = str(exc)
            continue
        return project_id, fetched, unreachable
    return None, None, unreachable


def not_found_unasked(project_id: str, unreachable: dict[str, str]) -> str:
    """Why a 404 is not "gone": what to say when `project_id` answered 404 and the `unreachable` projects
    (from project_holding) could not be asked."""
    return (f"not found in OpenAI project {project_id}, and {', '.join(unreachable)} could not be asked "
            "(no API key, or a refused one)")
