"""The sandbox as a WSGI application (/v1 for the SDK, /_sandbox for control) and a threaded server
that runs it on 127.0.0.1, inside a test process or standalone."""

from __future__ import annotations

import json
import logging
import socketserver
import threading
import time
import traceback
import uuid
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .api import Request, SandboxApi, parse_request
from .clock import SandboxClock
from .faults import FaultInjector, FaultRule
from .state import SandboxError, SandboxState

logger = logging.getLogger(__name__)

DEFAULT_API_KEY = "sk-sandbox"
DEFAULT_ADMIN_KEY = "sk-admin-sandbox"
STATUS_TEXT = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
               405: "Method Not Allowed", 409: "Conflict", 429: "Too Many Requests", 500: "Internal Server Error",
               502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class Sandbox:
    """One sandbox: state, clock, faults, keys, and the WSGI callable that serves them."""

    def __init__(self, *, api_key: str = DEFAULT_API_KEY, admin_key: str = DEFAULT_ADMIN_KEY, seed: int = 0,
                 clock: SandboxClock | None = None, default_project: str = "proj_default"):
        self.api_key = api_key
        self.admin_key = admin_key
        self.clock = clock or SandboxClock()
        self.state = SandboxState(clock=self.clock, seed=seed, default_project=default_project)
        self.faults = FaultInjector(seed=seed)
        self.api = SandboxApi(self.state, self.faults, api_keys={api_key}, admin_keys={admin_key})

    # -- Python controls (the HTTP control endpoints call the same methods) ----------------------
    def add_project_key(self, key: str, project_id: str) -> None:
        """An API key that belongs to `project_id` only: its requests are in that project, and one whose
        OpenAI-Project header names another project is refused (401), as at OpenAI."""
        self.api.api_keys.add(key)
        self.api.key_projects[key] = project_id

    def reset(self, *, seed: int | None = None) -> None:
        self.state.reset(seed=seed)
        self.faults.clear()

    def load_scenario(self, *, tenants: int = 8, days: int = 60, seed: int | None = None, name: str = "custom",
                      runs_per_day: float | None = None, end: float | None = None) -> dict:
        from .scenario import ScenarioConfig, generate

        config = ScenarioConfig(tenants=tenants, days=days, seed=self.state.seed if seed is None else seed, name=name,
                                end=end)
        if runs_per_day is not None:
            config.runs_per_day = runs_per_day
        return generate(self.state, config)

    def load_demo(self, *, seed: int | None = None, drift: bool = True, end: float | None = None) -> dict:
        """The demo scenario (scenario.demo_config) ending at `end` (default: now) plus, unless drift=False, its
        billing drift: a little spend with no tenant metadata on two days before that end (scenario.demo_drift),
        listed in the summary's "drift"."""
        from .scenario import demo_config, demo_drift, generate

        summary = generate(self.state, demo_config(self.state.seed if seed is None else seed, end=end))
        self.faults.clear_drift()
        rules = ([self.faults.add_drift(**rule).to_dict() for rule in demo_drift(self.state, end=summary["ends_at"])]
                 if drift else [])
        return {**summary, "drift": rules}

    def export(self) -> dict:
        from .scenario import export_state

        return export_state(self.state)

    # -- WSGI --------------------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        request_id = "req_" + uuid.uuid4().hex
        started = time.monotonic()
        headers: dict[str, str] = {}
        try:
            request = parse_request(environ)
            if request.path.startswith("/_sandbox"):
                status, body = self._control(request)
            else:
                status, body, headers = self.api.handle(request)
        except SandboxError as error:
            status, body, headers = error.status, error.body(), error.headers
        except Exception:  # a sandbox bug must still answer like a server, and say what broke
            logger.exception("sandbox handler failed")
            status = 500
            body = {"error": {"message": "sandbox internal error: " + traceback.format_exc(limit=3)[-500:],
                              "type": "server_error", "param": None, "code": None}}
        payload = json.dumps(body).encode()
        response_headers = [
            ("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
            ("x-request-id", request_id), ("openai-version", "2020-10-01"),
            ("openai-processing-ms", str(int((time.monotonic() - started) * 1000))),
            *headers.items(),
        ]
        start_response(f"{status} {STATUS_TEXT.get(status, 'Error')}", response_headers)
        return [payload]

    def _control(self, request: Request) -> tuple[int, dict]:
        route = request.path[len("/_sandbox"):].strip("/")
        body = request.body or {}
        method = request.method
        if route == "health" and method == "GET":
            return 200, {"status": "ok", "now": self.clock.now()}
        if route == "clock":
            if method == "POST":
                if "set" in body:
                    self.clock.set(body["set"])
                if "advance" in body:
                    self.clock.advance(float(body["advance"]))
                if body.get("freeze") is True:
                    self.clock.freeze()
                elif body.get("freeze") is False:
                    self.clock.unfreeze()
            return 200, self.clock.describe()
        if route == "faults":
            if method == "POST":
                try:
                    rule = FaultRule.parse(body["spec"]) if "spec" in body else FaultRule(**body)
                except (TypeError, ValueError, KeyError) as error:
                    raise SandboxError(400, f"bad fault rule: {error}") from None
                added = self.faults.add(rule.kind, **{key: value for key, value in rule.to_dict().items()
                                                      if key not in {"kind", "fired", "id"}})
                return 200, added.to_dict()
            if method == "DELETE":
                self.faults.clear_faults()
            return 200, self.faults.describe()
        if route == "drift":
            if method == "POST":
                try:
                    added = self.faults.add_drift(**body)
                except (TypeError, ValueError, KeyError, ArithmeticError) as error:
                    raise SandboxError(400, f"bad drift rule: {error}") from None
                return 200, added.to_dict()
            if method == "DELETE":
                self.faults.clear_drift()
            return 200, self.faults.describe()
        if route == "reset" and method == "POST":
            self.reset(seed=body.get("seed"))
            return 200, {"reset": True, "seed": self.state.seed}
        if route == "scenario":
            if method == "POST":
                name = body.get("name", "custom")
                if name == "demo" and "tenants" not in body and "days" not in body:
                    return 200, self.load_demo(seed=body.get("seed"), drift=bool(body.get("drift", True)))
                summary = self.load_scenario(tenants=int(body.get("tenants", 8)), days=int(body.get("days", 60)),
                                             seed=body.get("seed"), name=name)
                return 200, summary
            return 200, self.state.scenario or {}
        if route == "export" and method == "GET":
            with self.state.lock:
                return 200, self.export()
        raise SandboxError(404, f"Unknown sandbox control endpoint ({method} {request.path}). See docs/sandbox.md.")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature from BaseHTTPRequestHandler
        logger.debug("sandbox %s - %s", self.address_string(), format % args)


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class SandboxServer:
    """Serves a Sandbox on 127.0.0.1 from a background thread. Port 0 picks a free port."""

    def __init__(self, sandbox: Sandbox, *, host: str = "127.0.0.1", port: int = 0):
        self.sandbox = sandbox
        self.httpd = make_server(host, port, sandbox, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        self.host = host
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> SandboxServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"openai-sandbox:{self.port}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
