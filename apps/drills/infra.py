"""Private infrastructure for drills: a PostgreSQL instance, a Redis server, gunicorn and Celery workers,
each on a free loopback port, owned by the drill and always stopped when it ends (never the shared ones)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from django.conf import settings

DRILL_SETTINGS = "apps.drills.settings"


class DrillError(RuntimeError):
    """The drill could not set itself up; the message says what is missing."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, seconds: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + seconds
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline, then reported
            last = exc
        time.sleep(interval)
    raise DrillError(f"{what} did not come up within {seconds:.0f}s ({last})")


def _postgres_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def postgres_available() -> bool:
    return bool(_postgres_bin("initdb") and _postgres_bin("pg_ctl"))


def redis_available() -> bool:
    return bool(shutil.which("redis-server") and shutil.which("redis-cli"))


class PrivatePostgres:
    """`initdb` into a temp dir and `pg_ctl start` on a free port. As root, it runs as the `postgres` user."""

    def __init__(self, workdir: Path):
        if not postgres_available():
            raise DrillError("PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql.")
        self.dir = workdir / "pgdata"
        self.socket_dir = workdir / "pgsock"
        self.port = free_port()
        self.log = workdir / "postgres.log"
        self._user = None
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise DrillError("Running as root needs a 'postgres' user to own the private cluster.") from exc

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        if self._user is not None:
            argv = ["runuser", "-u", self._user.pw_name, "--", *argv]
        return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=120)

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def start(self) -> PrivatePostgres:
        for path in (self.dir, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
            self._chown(path)
        self.log.touch()
        self._chown(self.log)
        self._chown(self.dir.parent)
        self._run([_postgres_bin("initdb"), "-D", str(self.dir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                   "--no-sync"])
        with open(self.dir / "postgresql.conf", "a") as conf:
            # The drills crash the server process, never the OS: fsync can stay off for speed, but every
            # acknowledged commit must be written to the WAL before the client hears 200, so
            # synchronous_commit stays on (off loses the last commits on `pg_ctl stop -m immediate`).
            conf.write("\nfsync = off\nsynchronous_commit = on\nfull_page_writes = off\nmax_connections = 200\n"
                       "listen_addresses = '127.0.0.1'\n")
        self._pg_ctl("start")
        return self

    def _pg_ctl(self, action: str, mode: str = "fast") -> None:
        argv = [_postgres_bin("pg_ctl"), "-D", str(self.dir), "-l", str(self.log), "-w", "-t", "60"]
        if action in ("start", "restart"):
            argv += ["-o", f"-p {self.port} -k {self.socket_dir}"]
        if action in ("stop", "restart"):
            argv += ["-m", mode]
        self._run([*argv, action])

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("stop", mode)

    def restart(self, mode: str = "fast") -> None:
        """Like a crash-restart of the database: sessions are cut (`fast` terminates them), then it returns."""
        self._pg_ctl("restart", mode)

    def shutdown(self) -> None:
        if (self.dir / "postmaster.pid").exists():
            self._run([_postgres_bin("pg_ctl"), "-D", str(self.dir), "-m", "immediate", "-w", "stop"], check=False)

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


class ScratchDatabase:
    """A throwaway database on an existing PostgreSQL server (DATABASE_URL), for machines without initdb."""

    def __init__(self, server_url: str, name: str):
        self.server_url = server_url
        self.name = name

    def _admin(self):
        import psycopg

        base = self.server_url.rsplit("/", 1)[0] + "/postgres"
        return psycopg.connect(base.replace("postgres://", "postgresql://", 1), autocommit=True)

    def create(self) -> str:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return self.server_url.rsplit("/", 1)[0] + "/" + self.name

    def drop(self) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class PrivateRedis:
    def __init__(self, workdir: Path):
        if not redis_available():
            raise DrillError("redis-server / redis-cli not found; install redis.")
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    def start(self) -> PrivateRedis:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_for(self.ping, 15, f"private redis on port {self.port}")
        return self

    def ping(self) -> bool:
        out = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() == "PONG"

    def shutdown(self) -> None:
        """The outage: `redis-cli -p PORT shutdown nosave` on this private server only."""
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True, timeout=10)
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


class ManagedProcess:
    """A child process in its own session, so it and its children are stopped together."""

    def __init__(self, name: str, argv: list[str], env: dict, log: Path):
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> ManagedProcess:
        handle = open(self.log, "ab")
        self.process = subprocess.Popen(self.argv, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                        cwd=settings.BASE_DIR, start_new_session=True)
        handle.close()
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole process group: no warm shutdown, no acks, like a machine losing power."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 15) -> None:
        if not self.alive():
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        # Stragglers of the group (gunicorn or celery pool children) go too.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class DrillStack:
    """Everything one drill starts, stopped in reverse order on exit (also on Ctrl-C and errors)."""

    def __init__(self, name: str, say=print):
        self.name = name
        self.say = say
        self._stack = ExitStack()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"runledger-drill-{name}-"))
        os.chmod(self.workdir, 0o755)
        self.database_url = ""
        self.redis: PrivateRedis | None = None
        self.postgres: PrivatePostgres | None = None

    def __enter__(self) -> DrillStack:
        self._stack.__enter__()
        self._stack.callback(shutil.rmtree, self.workdir, True)
        return self

    def __exit__(self, *exc) -> bool:
        return self._stack.__exit__(*exc)

    # -- services -------------------------------------------------------------------------------------
    def with_postgres(self, *, private: bool = False) -> str:
        """A fresh, migrated PostgreSQL database for this drill: a private instance when the server binaries
        are installed (always, with private=True), else a scratch database on DATABASE_URL's server."""
        server_url = os.environ.get("DRILL_DATABASE_URL") or os.environ.get("DATABASE_URL", "")
        if private or postgres_available() or not server_url.startswith("postgres"):
            self.say(f"  starting a private PostgreSQL in {self.workdir}")
            self.postgres = PrivatePostgres(self.workdir).start()
            self._stack.callback(self.postgres.shutdown)
            self.database_url = self.postgres.create_database("runledger_drill")
        else:
            scratch = ScratchDatabase(server_url, f"rl_drill_{os.getpid()}")
            self.say(f"  creating scratch database {scratch.name}")
            self.database_url = scratch.create()
            self._stack.callback(scratch.drop)
        self.manage("migrate", "--noinput")
        self.manage("createcachetable")
        return self.database_url

    def with_redis(self) -> PrivateRedis:
        self.say("  starting a private redis-server")
        self.redis = PrivateRedis(self.workdir).start()
        self._stack.callback(self.redis.shutdown)
        return self.redis

    def env(self, **extra) -> dict:
        env = {
            **os.environ, "DJANGO_SETTINGS_MODULE": DRILL_SETTINGS, "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": self.database_url, "RUNLEDGER_VAR_DIR": str(self.workdir / "var"),
            "REDIS_URL": self.redis.url() if self.redis else "", "DJANGO_DEBUG": "0", "LOG_LEVEL": "WARNING",
        }
        env.update({key: str(value) for key, value in extra.items()})
        return env

    def manage(self, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "manage.py", *args], env=env or self.env(), cwd=settings.BASE_DIR,
                                capture_output=True, text=True, timeout=600)
        if check and result.returncode != 0:
            raise DrillError(f"manage.py {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
        return result

    # -- processes ------------------------------------------------------------------------------------
    def process(self, name: str, argv: list[str], env: dict | None = None) -> ManagedProcess:
        managed = ManagedProcess(name, argv, env or self.env(), self.workdir / f"{name}.log").start()
        self._stack.callback(managed.stop)
        return managed

    def gunicorn(self, *, workers: int = 3, threads: int = 4, env: dict | None = None) -> tuple[ManagedProcess, str]:
        port = free_port()
        server = self.process("gunicorn", [
            sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
            "--workers", str(workers), "--threads", str(threads), "--timeout", "120", "--graceful-timeout", "5",
            "--worker-class", "gthread", "--backlog", "512",
        ], env=env)
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if not server.alive():
                raise DrillError(f"gunicorn exited:\n{server.tail()}")
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
                return response.status == 200

        wait_for(up, 60, "gunicorn")
        return server, base

    def celery_worker(self, name: str = "worker", *, env: dict | None = None, concurrency: int = 1,
                      queues: str = "default") -> ManagedProcess:
        return self.process(name, [
            sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO", "--concurrency",
            str(concurrency), "--pool", "prefork", "-Q", queues, "--hostname", f"{name}-{os.getpid()}@drill",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ], env=env)
