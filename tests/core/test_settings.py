"""Production settings pass Django's deploy checks with the documented variables set."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What production settings insist on; named only, since starting up connects to none of them.
PRODUCTION_SERVICES = {"DATABASE_URL": "postgres://runledger:secret@db:5432/runledger", "REDIS_URL": "redis://redis:6379/0",
                       "OPENAI_API_KEY": "sk-proj-named-never-used"}


def _clean_environment() -> dict:
    # Nothing the test process set for itself (DJANGO_ALLOW_ASYNC_UNSAFE from browser tests, the test
    # settings module, service URLs) may leak into the production check.
    return {key: value for key, value in os.environ.items()
            if not key.startswith(("DJANGO_", "OPENAI_")) and key not in {"DATABASE_URL", "REDIS_URL"}}


def test_check_deploy_with_production_settings_is_clean():
    env = {
        **_clean_environment(),
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": "x" * 30 + "a-long-random-production-secret-value-1234567890",
        "DJANGO_ALLOWED_HOSTS": "runledger.example.com",
        "DATABASE_URL": "sqlite:////tmp/runledger-check-deploy.sqlite3",
        "REDIS_URL": "redis://redis:6379/0",  # named, never reached: the checks connect to nothing
        "OPENAI_API_KEY": PRODUCTION_SERVICES["OPENAI_API_KEY"],
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_never_install_the_sandbox():
    env = {**_clean_environment(), "DJANGO_SETTINGS_MODULE": "config.settings.production", "DJANGO_SECRET_KEY": "s" * 60,
           "DJANGO_ALLOWED_HOSTS": "x", "SANDBOX_ENABLED": "true", **PRODUCTION_SERVICES}
    code = "import django; django.setup(); from django.conf import settings; print('apps.sandbox' in settings.INSTALLED_APPS)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_each_parallel_test_worker_gets_its_own_redis_database():
    # Workers empty the cache before every test (FLUSHDB on Redis): sharing a database, they would wipe
    # each other's throttle counters mid-test.
    from config.settings.test import redis_url_for_worker

    assert redis_url_for_worker("redis://127.0.0.1:6379/5", "gw0") == "redis://127.0.0.1:6379/6"
    assert redis_url_for_worker("redis://127.0.0.1:6379/5", "gw1") == "redis://127.0.0.1:6379/7"
    assert redis_url_for_worker("redis://:secret@redis:6379", "gw0") == "redis://:secret@redis:6379/1"
    assert redis_url_for_worker("redis://127.0.0.1:6379/15", "gw0") == "redis://127.0.0.1:6379/0"


def test_the_docker_image_never_contains_the_env_file_and_its_secrets():
    # README: `cp .env.example .env`, then `docker compose up --build`; the Dockerfile's `COPY . .` takes every file
    # of the build context that .dockerignore does not name, and docker-compose passes .env at run time anyway.
    from fnmatch import fnmatch

    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    def left_out(name: str) -> bool:  # the last pattern that matches decides, as Docker reads the file
        verdict = False
        for pattern in patterns:
            if fnmatch(name, pattern.removeprefix("!")):
                verdict = not pattern.startswith("!")
        return verdict

    assert [name for name in (".env", ".env.local", ".env.production") if not left_out(name)] == [], patterns
    assert not left_out(".env.example")  # holds no secret


def test_every_variable_of_env_example_is_described_in_the_readme():
    # .env.example sends its reader to README "Production" for what each variable means.
    names = [line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
             if "=" in line and not line.startswith("#")]
    readme = (ROOT / "README.md").read_text()
    assert [name for name in names if f"`{name}`" not in readme] == []


def test_production_refuses_to_start_without_its_database_or_redis():
    # README "Production": both required. Without them the local defaults applied silently: an SQLite file and an
    # SQLite broker in the container's own var/, so web, worker and beat each kept a database and a queue of their own.
    env = {**_clean_environment(), "DJANGO_SETTINGS_MODULE": "config.settings.production", "DJANGO_SECRET_KEY": "s" * 60,
           "DJANGO_ALLOWED_HOSTS": "x", **PRODUCTION_SERVICES}

    def start(**removed):
        return subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, capture_output=True,
                              env={key: value for key, value in env.items() if key not in removed}, text=True, timeout=60)

    assert start().returncode == 0
    for name in ("DATABASE_URL", "REDIS_URL"):
        refused = start(**{name: True})
        assert refused.returncode != 0 and f"{name} is not set" in refused.stderr


def _start(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, capture_output=True,
                          env=env, text=True, timeout=60)


def test_production_refuses_to_start_without_an_openai_api_key_saying_what_to_set():
    """Started without it, production came up and every collector pass, sweep and inventory then failed in the
    workers, one by one; now start-up refuses, as without DATABASE_URL or REDIS_URL."""
    env = {**_clean_environment(), "DJANGO_SETTINGS_MODULE": "config.settings.production", "DJANGO_SECRET_KEY": "s" * 60,
           "DJANGO_ALLOWED_HOSTS": "x", **PRODUCTION_SERVICES}
    for missing in ({key: value for key, value in env.items() if key != "OPENAI_API_KEY"}, {**env, "OPENAI_API_KEY": ""}):
        refused = _start(missing)
        assert refused.returncode != 0
        assert "OPENAI_API_KEY is not set" in refused.stderr and "Set it to an API key" in refused.stderr


def test_an_openai_base_url_that_is_not_an_http_url_with_a_host_stops_start_up_in_every_settings_module():
    """A base URL without a scheme or host went to the SDK as it came, and every OpenAI call failed later in the
    workers. Refused at start-up, naming the variable and its form; a valid one (or none) still starts."""
    production = {**_clean_environment(), "DJANGO_SETTINGS_MODULE": "config.settings.production",
                  "DJANGO_SECRET_KEY": "s" * 60, "DJANGO_ALLOWED_HOSTS": "x", **PRODUCTION_SERVICES}
    local = {**_clean_environment(), "DJANGO_SETTINGS_MODULE": "config.settings.local"}
    for env, bad in ((production, "api.openai.com/v1"), (production, "ftp://api.openai.com/v1"),
                     (local, "localhost:8765/v1"), (local, "http:///v1"), (local, "http://127.0.0.1:port/v1")):
        refused = _start({**env, "OPENAI_BASE_URL": bad})
        assert refused.returncode != 0, bad
        assert "OPENAI_BASE_URL must be an http(s) URL with a host" in refused.stderr and repr(bad) in refused.stderr
    assert _start({**production, "OPENAI_BASE_URL": "https://openai-proxy.internal:8443/v1"}).returncode == 0
    assert _start(local).returncode == 0  # the sandbox's default URL (make run, the demo)
    assert _start({**local, "OPENAI_BASE_URL": "http://127.0.0.1:8766/v1"}).returncode == 0
