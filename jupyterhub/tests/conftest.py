"""Real parts for the FleetSpawner tests: a `fleetspawn serve` process (the binary `cargo build`
made) against the local clusters (`deploy/local/clusters`), one the test may kill and start
again, kubectl, and stand-ins where the real part cannot do what a test needs: the `hub-e2e`
profiles' ingress (the hub must get an HTTP answer from the URL fleetspawn returns), and a
daemon that answers 5xx or garbage, or never answers.

Environment (all optional):
  FLEETSPAWN_BIN         the fleetspawn binary (default: target/debug/fleetspawn)
  FLEETSPAWN_KUBECONFIG  the clusters' kubeconfig (default: `deploy/local/clusters kubeconfig`)
  FLEETSPAWN_CHP         configurable-http-proxy (default: ~/.cache/fleetspawn/node/node_modules/.bin/...)
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from urllib.parse import quote
from pathlib import Path

import httpx
import jupyterhub
import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("FLEETSPAWN_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fleetspawn")
CONTEXTS = ["cluster-a", "cluster-b", "cluster-c"]
# Every user of this run starts with this prefix: other engineers' tests share the clusters.
RUN = "jh" + secrets.token_hex(3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 60 s."""
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def sha256_hex(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def wait_http(url: str, timeout: float, ok=(200,), what: str = "", log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status in ok:
                    return
                last = r.status
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return
            last = e
        except OSError as e:
            last = e
        time.sleep(0.2)
    tail = log.read_text()[-4000:] if log and log.exists() else ""
    pytest.fail(f"{what or url} not ready after {timeout}s ({last!r})\n{tail}")


@pytest.fixture(scope="session")
def tools_path() -> str:
    """PATH with the cached Kubernetes binaries (kubectl) first."""
    out = subprocess.run([str(REPO / "deploy/local/build-binaries")], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1] + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    path = os.environ.get("FLEETSPAWN_KUBECONFIG")
    if not path:
        out = subprocess.run([str(REPO / "deploy/local/clusters"), "kubeconfig"], capture_output=True, text=True, check=True)
        path = out.stdout.strip().splitlines()[-1]
    assert Path(path).is_file(), f"no kubeconfig at {path}: start the clusters (deploy/local/clusters up)"
    return path


class Kubectl:
    def __init__(self, kubeconfig: str, path: str):
        self.env = {**os.environ, "KUBECONFIG": kubeconfig, "PATH": path}

    def json(self, context: str, *args: str) -> dict:
        out = subprocess.run(["kubectl", "--context", context, *args, "-o", "json"], env=self.env,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def objects_of_user(self, user: str, kinds: str = "pods,secrets,services,ingresses,serviceaccounts,persistentvolumeclaims") -> list[str]:
        """Every object labelled for `user`, on every cluster, as `context/kind/name`."""
        found = []
        for context in CONTEXTS:
            items = self.json(context, "get", kinds, "-A", "-l", f"fleetspawn.io/user={user}")["items"]
            found += [f"{context}/{i['kind']}/{i['metadata']['name']}" for i in items]
        return found


@pytest.fixture(scope="session")
def kubectl(kubeconfig, tools_path) -> Kubectl:
    return Kubectl(kubeconfig, tools_path)


class Ingress:
    """Plays the clusters' ingress controller at a loopback address: answers every request
    (the hub waits for an HTTP answer from a new server) and records the paths asked for."""

    def __init__(self):
        self.paths: list[str] = []
        paths = self.paths

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                paths.append(self.path)
                body = b'{"stand-in": "cluster ingress"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-JupyterHub-Version", jupyterhub.__version__)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="session")
def ingress():
    i = Ingress()
    yield i
    i.server.shutdown()


class Process:
    """A process a test starts (`proc`), kills (SIGKILL: no graceful shutdown, connections
    and streams break) or stops (SIGTERM, then SIGKILL)."""

    proc: subprocess.Popen | None = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


class Daemon(Process):
    """One `fleetspawn serve` process on a fixed port: `kill()` and `start()` again play a
    daemon restart (the hub keeps the URL)."""

    def __init__(self, binary: Path, config: Path, url: str, hub_token: str, admin_token: str, log: Path):
        self.binary, self.config, self.url, self.log = binary, config, url, log
        self.hub_token, self.admin_token = hub_token, admin_token
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> None:
        env = {k: v for k, v in os.environ.items() if k != "FLEETSPAWN_KUBECONFIG"}
        env["FLEETSPAWN_LOG"] = "info,fleetspawn=debug"
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen([str(self.binary), "--config", str(self.config), "--log-format", "json", "serve"],
                                         stdout=subprocess.DEVNULL, stderr=logf, env=env)
        if wait:
            wait_http(self.url + "/readyz", 60, what="fleetspawn serve", log=self.log)


    def admin(self, method: str, path: str) -> tuple[int, object]:
        req = urllib.request.Request(self.url + "/api/v1" + path, method=method,
                                     headers={"Authorization": f"Bearer {self.admin_token}"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                body = r.read()
                return r.status, json.loads(body) if body else None
        except urllib.error.HTTPError as e:
            body = e.read()
            return e.code, json.loads(body) if body else None

    def cleanup(self, everyone: bool = False) -> None:
        """Stops every server of this run's users (the clusters also hold other tests' servers),
        or with `everyone`, every server of this daemon (its home namespace is its own)."""
        status, instances = self.admin("GET", "/instances")
        for i in instances if status == 200 else []:
            if everyone or str(i.get("user", "")).startswith(RUN + "-"):
                user, server = quote(i["user"], safe=""), quote(i["server"], safe="")
                try:
                    self.admin("DELETE", f"/users/{user}/servers/{server}?remove=true" if server else f"/users/{user}/server?remove=true")
                except OSError as e:
                    warnings.warn(f"could not stop {i['key']}: {e!r}")


def hub_e2e_profiles(ingress) -> str:
    """The test profiles plus the hub tests' own: `hub-e2e` (cluster-b, its ingress at the
    stand-in), `hub-e2e-home` (the same with a volume), `hub-slow` (a 15-minute start
    timeout, like a GPU profile's) and `hub-params` (a uid the hub must give)."""
    return (REPO / "tests/fixtures/profiles.toml").read_text() + f"""
# Added by the JupyterHub plugin's tests: a cluster whose "ingress" answers (a stand-in).
[[profiles]]
slug = "hub-e2e"
display_name = "On cluster B, behind the test ingress"
context = "cluster-b"
ingress_public_url = "{ingress.url}"

[[profiles]]
slug = "hub-e2e-home"
display_name = "On cluster B, behind the test ingress, with a home volume"
context = "cluster-b"
ingress_public_url = "{ingress.url}"
storage = {{ capacity = "1Gi" }}

[[profiles]]
slug = "hub-slow"
display_name = "Slow to start (a GPU node's image pull)"
context = "cluster-a"
ingress_public_url = "{ingress.url}"
start_timeout = "15m"

[[profiles]]
slug = "hub-params"
display_name = "Runs as the uid the hub gives"
context = "cluster-b"
ingress_public_url = "{ingress.url}"
hub_parameters = {{ uid = {{ type = "integer", min = 1000, max = 65535, required = true }} }}
patches = {{ uid = {{ target = {{ kind = "Pod" }}, patch = "spec: {{securityContext: {{runAsUser: {{{{ hub_parameters.uid }}}}}}}}" }} }}
"""


def make_daemon(d: Path, kubeconfig: str, profiles_text: str) -> Daemon:
    """A daemon (not started) serving `profiles_text`."""
    binary = Path(os.environ.get("FLEETSPAWN_BIN") or REPO / "target/debug/fleetspawn")
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run `cargo build` first")
    profiles = d / "profiles.toml"
    profiles.write_text(profiles_text)
    hub_token, admin_token = secrets.token_hex(16), secrets.token_hex(16)
    port = free_port()
    config = d / "fleetspawn.toml"
    config.write_text(f"""listen = "127.0.0.1:{port}"
kubeconfig = "{kubeconfig}"
profiles = "{profiles}"
max_concurrent_spawns = 64
max_servers_per_user = 3
home_namespace = "fs-home-pytest-{secrets.token_hex(4)}"

[auth]
tokens = [
  {{ name = "admin", sha256 = "{sha256_hex(admin_token)}", role = "admin" }},
  {{ name = "jupyterhub", sha256 = "{sha256_hex(hub_token)}", role = "hub" }},
]
trusted_proxies = ["127.0.0.1/32"]
secure_cookies = false
cookie_secret = "a-test-cookie-secret-of-at-least-32-bytes"
""")
    return Daemon(binary, config, f"http://127.0.0.1:{port}", hub_token, admin_token, d / "daemon.log")


@pytest.fixture(scope="session")
def daemon(tmp_path_factory, kubeconfig, ingress):
    """`fleetspawn serve` on a free port for the whole session. Stops every server of this
    run's users at the end."""
    dmn = make_daemon(tmp_path_factory.mktemp("fleetspawn"), kubeconfig, hub_e2e_profiles(ingress))
    try:
        dmn.start()
        yield dmn
        dmn.cleanup()
    finally:
        dmn.stop()


@pytest.fixture
def own_daemon(tmp_path_factory, kubeconfig, ingress):
    """A daemon of the test's own, which the test may kill and start again."""
    dmn = make_daemon(tmp_path_factory.mktemp("fleetspawn-own"), kubeconfig, hub_e2e_profiles(ingress))
    try:
        dmn.start()
        yield dmn
        if dmn.proc is None:
            dmn.start()
        dmn.cleanup()
    finally:
        dmn.stop()


class StandIn:
    """Plays a fleetspawn daemon that misbehaves, for what the real one cannot be made to do
    on demand: `answers` maps (method, path) to (status, body), or to a list of them given in
    turn, the last one for good (the path without the query; missing: 404 with fleetspawn's
    error body); `hang` makes it accept connections and never answer. Records the requests as
    (method, path with query)."""

    def __init__(self):
        self.answers: dict[tuple[str, str], tuple[int, str] | list[tuple[int, str]]] = {}
        self.requests: list[tuple[str, str]] = []
        self.hang = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append((self.command, self.path))
                if outer.hang.is_set():
                    outer.hang_released.wait(120)
                    return
                answer = outer.answers.get((self.command, self.path.split("?")[0]),
                                           (404, '{"error": "not_found", "detail": "no such server"}'))
                if isinstance(answer, list):
                    answer = answer.pop(0) if len(answer) > 1 else answer[0]
                status, body = answer
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if body.startswith(("{", "[")) else "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_DELETE = do_POST = handle_one  # noqa: N815

            def log_message(self, *args):
                pass

        self.hang_released = threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.hang_released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in():
    s = StandIn()
    yield s
    s.close()


@pytest.fixture
def username(request) -> str:
    """A user name of this run, unique per test (label-safe as it is)."""
    return f"{RUN}-{request.node.name.removeprefix('test_')[:20].replace('_', '-')}".lower().rstrip("-")


@pytest.fixture(scope="session")
def chp() -> str:
    path = os.environ.get("FLEETSPAWN_CHP") or str(CACHE / "node/node_modules/.bin/configurable-http-proxy")
    if not (Path(path).is_file() or shutil.which(path)):
        pytest.fail(f"configurable-http-proxy missing at {path}: npm install --prefix {CACHE / 'node'} configurable-http-proxy")
    return path


class Hub(Process):
    """A real JupyterHub (DummyAuthenticator, FleetSpawner against `daemon`) with a real
    configurable-http-proxy, in `d`. `extra` is appended to its config; `python` is the
    interpreter whose JupyterHub runs (this venv's by default). `kill()` then `start()` plays
    a hub crash (the database and the cookie secret stay)."""

    def __init__(self, d: Path, daemon: Daemon, chp: str, extra: str = "", python: str = sys.executable,
                 hub_bind: str = "127.0.0.1"):
        self.d, self.python, self.log = d, python, d / "jupyterhub.log"
        port, self.hub_port, proxy_port = free_port(), free_port(), free_port()
        self.proxy_token, admin_token = secrets.token_hex(16), secrets.token_hex(16)
        self.public, self.proxy_api = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{proxy_port}"
        self.daemon_token = daemon.hub_token
        (d / "jupyterhub_config.py").write_text(f"""
c = get_config()  # noqa
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_bind_url = "http://{hub_bind}:{self.hub_port}"
c.JupyterHub.hub_connect_url = "http://127.0.0.1:{self.hub_port}"
c.JupyterHub.db_url = "sqlite:///{d}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{d}/cookie_secret"
c.JupyterHub.cleanup_servers = False
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_port}"
c.ConfigurableHTTPProxy.auth_token = {self.proxy_token!r}
c.ConfigurableHTTPProxy.pid_file = "{d}/proxy.pid"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.allow_named_servers = True
c.JupyterHub.spawner_class = "fleetspawn"
c.FleetSpawner.fleetspawn_url = {daemon.url!r}
# fleetspawn_token comes from FLEETSPAWN_TOKEN
c.Spawner.http_timeout = 30
# The spawn API answers at once (202) rather than after the spawn, so its progress can be followed.
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
c.JupyterHub.services = [{{"name": "test-admin", "api_token": {admin_token!r}}}]
c.JupyterHub.load_roles = [{{"name": "test-admin", "scopes": ["admin:users", "admin:servers", "read:servers", "users:activity"], "services": ["test-admin"]}}]
""" + extra)
        self.api = httpx.Client(base_url=self.public + "/hub/api", headers={"Authorization": f"token {admin_token}"}, timeout=30)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        # A proxy left by a killed hub would hold the ports: the hub would not start its own.
        pid_file = self.d / "proxy.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), 9)
            except (ValueError, ProcessLookupError):
                pass
            pid_file.unlink()
        # This checkout's plugin, whatever the venv's editable install points at.
        plugin = str(REPO / "jupyterhub")
        env = {**os.environ, "FLEETSPAWN_TOKEN": self.daemon_token,
               "PYTHONPATH": os.pathsep.join(p for p in (plugin, os.environ.get("PYTHONPATH")) if p)}
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen([self.python, "-m", "jupyterhub", "-f", str(self.d / "jupyterhub_config.py"), "--debug"],
                                         cwd=self.d, env=env, stdout=logf, stderr=subprocess.STDOUT)
        wait_http(self.public + "/hub/api", 60, what="jupyterhub (through the proxy)", log=self.log)

    def stop(self) -> None:
        """The hub, then its proxy (`kill()` leaves the proxy running, as a crash would)."""
        super().stop()
        pid_file = self.d / "proxy.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), 15)
            except (ValueError, ProcessLookupError):
                pass

    def progress(self, username: str, server: str = "", read_timeout: float = 90) -> list[dict]:
        """The hub's progress events for a server of the user, up to ready or failed."""
        path = f"/users/{username}/servers/{server}/progress" if server else f"/users/{username}/server/progress"
        events = []
        with self.api.stream("GET", path, timeout=httpx.Timeout(30, read=read_timeout)) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    if events[-1].get("ready") or events[-1].get("failed"):
                        break
        return events

    def routes(self) -> dict:
        r = httpx.get(self.proxy_api + "/api/routes", headers={"Authorization": f"token {self.proxy_token}"}, timeout=10)
        r.raise_for_status()
        return r.json()

    def wait(self, what: str, check, timeout: float = 90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.3)
        pytest.fail(f"hub: {what} not after {timeout}s\n{self.log.read_text()[-6000:]}")
