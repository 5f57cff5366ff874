"""Real parts for the FleetSpawner tests: a `fleetspawn serve` process (the binary `cargo build`
made) against the local clusters (`deploy/local/clusters`), kubectl, and a stand-in for the
clusters' ingress controller (the local clusters have none; the hub must get an HTTP answer
from the URL fleetspawn returns).

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
import threading
import time
import urllib.request
import warnings
from urllib.parse import quote
from pathlib import Path

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


class Daemon:
    def __init__(self, url: str, hub_token: str, admin_token: str, log: Path):
        self.url, self.hub_token, self.admin_token, self.log = url, hub_token, admin_token, log

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


@pytest.fixture(scope="session")
def daemon(tmp_path_factory, kubeconfig, ingress):
    """`fleetspawn serve` on a free port with the test profiles plus `hub-e2e` (cluster-b, its
    ingress at the stand-in). Stops every server of this run's users at the end."""
    binary = Path(os.environ.get("FLEETSPAWN_BIN") or REPO / "target/debug/fleetspawn")
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run `cargo build` first")
    d = tmp_path_factory.mktemp("fleetspawn")
    profiles = d / "profiles.toml"
    profiles.write_text((REPO / "tests/fixtures/profiles.toml").read_text() + f"""
# Added by the JupyterHub plugin's tests: a cluster whose "ingress" answers (a stand-in).
[[profiles]]
slug = "hub-e2e"
display_name = "On cluster B, behind the test ingress"
context = "cluster-b"
ingress_public_url = "{ingress.url}"
""")
    hub_token, admin_token = secrets.token_hex(16), secrets.token_hex(16)
    port = free_port()
    config = d / "fleetspawn.toml"
    config.write_text(f"""listen = "127.0.0.1:{port}"
kubeconfig = "{kubeconfig}"
profiles = "{profiles}"
max_concurrent_spawns = 64
max_servers_per_user = 3

[auth]
tokens = [
  {{ name = "admin", sha256 = "{sha256_hex(admin_token)}", role = "admin" }},
  {{ name = "jupyterhub", sha256 = "{sha256_hex(hub_token)}", role = "hub" }},
]
trusted_proxies = ["127.0.0.1/32"]
secure_cookies = false
cookie_secret = "a-test-cookie-secret-of-at-least-32-bytes"
""")
    log = d / "daemon.log"
    env = {k: v for k, v in os.environ.items() if k != "FLEETSPAWN_KUBECONFIG"}
    env["FLEETSPAWN_LOG"] = "info,fleetspawn=debug"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([str(binary), "--config", str(config), "--log-format", "json", "serve"],
                                stdout=subprocess.DEVNULL, stderr=logf, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/readyz", 60, what="fleetspawn serve", log=log)
        dmn = Daemon(url, hub_token, admin_token, log)
        yield dmn
        # Leave nothing behind on the shared clusters (the clusters also hold other tests' servers).
        status, instances = dmn.admin("GET", "/instances")
        for i in instances if status == 200 else []:
            if str(i.get("user", "")).startswith(RUN + "-"):
                user, server = quote(i["user"], safe=""), quote(i["server"], safe="")
                try:
                    dmn.admin("DELETE", f"/users/{user}/servers/{server}" if server else f"/users/{user}/server")
                except OSError as e:
                    warnings.warn(f"could not stop {i['key']}: {e!r}")
    finally:
        stop_process(proc)


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
