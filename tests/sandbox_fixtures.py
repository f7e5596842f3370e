"""Fixtures that start the OpenAI sandbox for a test: `sandbox` (a fresh server on a free port with a
frozen, controllable clock), `openai_client` (the real SDK pointed at it, strict validation on) and
`provider` (RunLedger's OpenAIProvider for it, with settings pointing the default provider there too)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from apps.sandbox.clock import SandboxClock
from apps.sandbox.server import Sandbox, SandboxServer


@dataclass
class RunningSandbox:
    sandbox: Sandbox
    server: SandboxServer

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def api_key(self) -> str:
        return self.sandbox.api_key

    @property
    def admin_key(self) -> str:
        return self.sandbox.admin_key

    @property
    def state(self):
        return self.sandbox.state

    @property
    def clock(self) -> SandboxClock:
        return self.sandbox.clock

    @property
    def faults(self):
        return self.sandbox.faults

    def load_scenario(self, **options) -> dict:
        return self.sandbox.load_scenario(**options)

    def export(self) -> dict:
        return self.sandbox.export()

    def advance(self, seconds: float) -> float:
        return self.clock.advance(seconds)

    def client(self, *, project: str | None = None, api_key: str | None = None):
        """The real SDK (strict validation on) for this sandbox, working in `project` (its OpenAI-Project
        header) with `api_key` (default: the sandbox's own, which works in any project)."""
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=api_key or self.api_key, project=project,
                             _strict_response_validation=True, max_retries=0, timeout=10)


@pytest.fixture
def sandbox():
    """A fresh sandbox for one test. Its clock is frozen at the current second: runs move only when the
    test calls `sandbox.clock.advance(...)` (or `sandbox.advance(...)`)."""
    instance = Sandbox(seed=1234, clock=SandboxClock(frozen_at=float(int(time.time()))))
    server = SandboxServer(instance).start()
    try:
        yield RunningSandbox(sandbox=instance, server=server)
    finally:
        server.stop()


@pytest.fixture
def openai_client(sandbox):
    import openai  # the SDK itself, unmodified, with strict response validation

    client = openai.OpenAI(base_url=sandbox.base_url, api_key=sandbox.api_key, admin_api_key=sandbox.admin_key,
                           _strict_response_validation=True, max_retries=0, timeout=10)
    yield client
    client.close()


@pytest.fixture
def provider(sandbox, settings):
    """RunLedger's OpenAI wrapper for this sandbox; `OpenAIProvider.default()` points there too."""
    from apps.provider.client import OpenAIProvider

    settings.OPENAI_BASE_URL = sandbox.base_url
    settings.OPENAI_API_KEY = sandbox.api_key
    settings.OPENAI_ADMIN_KEY = sandbox.admin_key
    settings.OPENAI_PROJECT_ID = "proj_default"
    return OpenAIProvider(base_url=sandbox.base_url, api_key=sandbox.api_key, admin_key=sandbox.admin_key,
                          project_id="proj_default", backoff_base=0.01, backoff_cap=0.05, rate_limiter=None)


@dataclass
class SecondProject:
    """A second OpenAI project at the sandbox, configured in RunLedger with its keys' environment variables."""

    project_id: str
    client: object  # the SDK with this project's own key


@pytest.fixture
def second_project(sandbox, provider, monkeypatch, db):
    """OpenAI project `proj_second`: configured in the admin (keys named by environment variables, which hold
    the sandbox's keys) and an SDK client that works in it. Objects it creates are invisible to the default
    project's key, as at OpenAI."""
    from apps.reconciliation.models import OpenAIProject

    # A key of that project alone: a caller that sends it with another project's header, or another key
    # with this project's header, is refused or sees nothing, so the tests notice a key mixed up.
    sandbox.sandbox.add_project_key("sk-sandbox-proj-second", "proj_second")
    sandbox.sandbox.add_project_key(sandbox.api_key, "proj_default")
    monkeypatch.setenv("RL_TEST_SECOND_API_KEY", "sk-sandbox-proj-second")
    monkeypatch.setenv("RL_TEST_SECOND_ADMIN_KEY", sandbox.admin_key)
    OpenAIProject.objects.create(project_id="proj_second", name="second", admin_key_env="RL_TEST_SECOND_ADMIN_KEY",
                                 api_key_env="RL_TEST_SECOND_API_KEY", base_url=sandbox.base_url)
    client = sandbox.client(api_key="sk-sandbox-proj-second")
    yield SecondProject(project_id="proj_second", client=client)
    client.close()
