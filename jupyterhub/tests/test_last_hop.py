"""The last hop, for real: a user in headless Chromium logs in to a real JupyterHub, picks a
profile in FleetSpawner's form, and works in JupyterLab served by a real jupyterhub-singleuser
in a real pod on a real node (containerd, runc) of cluster-b, reached through the hub's
configurable-http-proxy and cluster-b's Traefik (an Ingress); a named server on cluster-c is
reached through an HTTPRoute on that cluster's Gateway. Run against JupyterHub 5 (this venv)
and, when FLEETSPAWN_JUPYTERHUB6_PYTHON names a Python with JupyterHub 6, against 6 too.

Needs `deploy/local/clusters up` with its real nodes, Traefik and the single-user image (the
state files it writes say where they are)."""

from __future__ import annotations

import base64
from contextlib import closing
import json
import os
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from conftest import REPO, RUN, Hub, make_daemon

STATE = Path(os.environ.get("FLEETSPAWN_STATE") or Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local/state") / "fleetspawn")
SCREENSHOTS = REPO / "target/screenshots"


def state(name: str) -> dict[str, str]:
    path = STATE / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run deploy/local/clusters up (real nodes, Traefik, images)")
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


INGRESS, NODES, IMAGES = state("ingress.env"), state("nodes.env"), state("images.env")
# The real nodes' bridge addresses: the host, as pods see it (the hub listens there too).
GATEWAY_B = NODES["cluster-b"].split()[2]


def profiles() -> str:
    real_node = f"""image = "{IMAGES['SINGLEUSER_IMAGE']}"
image_pull_policy = "Never"
namespace = "fs-lasthop"
create_namespace = true
cpu_guarantee = 0.05
mem_guarantee = "128Mi"
mem_limit = "1Gi"
start_timeout = "3m"
ready_check_url = true
node_selector = {{ "fleetspawn.io/real-node" = "true" }}
tolerations = [{{ key = "fleetspawn.io/real-node", operator = "Equal", value = "true", effect = "NoSchedule" }}]
network_policy = {{ ingress_from_cidrs = ["10.244.0.0/16"] }}
"""
    return f"""
[[profiles]]
slug = "lab-b"
display_name = "JupyterLab on cluster B's real node"
description = "A real pod, behind cluster B's Traefik (Ingress)"
context = "cluster-b"
ingress_public_url = "{INGRESS['cluster-b']}"
ingress = {{ class_name = "traefik" }}
{real_node}
[profiles.options.flavour]
display_name = "Flavour"
default = "plain"
[profiles.options.flavour.choices.plain]
display_name = "Plain"
[profiles.options.flavour.choices.marked]
display_name = "Marked"
override = {{ environment = {{ LAST_HOP_FLAVOUR = "marked" }} }}

[[profiles]]
slug = "lab-c-gateway"
display_name = "JupyterLab on cluster C's real node, through its Gateway"
context = "cluster-c"
ingress_public_url = "{INGRESS['cluster-c']}"
routing = "httproute"
gateway = "fleetspawn-ingress/web"
{real_node}
[[profiles]]
slug = "lab-b-home"
display_name = "JupyterLab on cluster B's real node, with a home volume"
context = "cluster-b"
ingress_public_url = "{INGRESS['cluster-b']}"
ingress = {{ class_name = "traefik" }}
storage = {{ capacity = "64Mi", storage_class = "fs-lasthop-static" }}
{real_node}
[[profiles]]
slug = "lab-b-missing-image"
display_name = "An image the node does not have"
context = "cluster-b"
ingress_public_url = "{INGRESS['cluster-b']}"
ingress = {{ class_name = "traefik" }}
{real_node.replace(IMAGES['SINGLEUSER_IMAGE'], "fleetspawn.local/no-such-image:1")}
"""


@pytest.fixture(scope="module")
def lasthop_daemon(tmp_path_factory, kubeconfig):
    dmn = make_daemon(tmp_path_factory.mktemp("fleetspawn-lasthop"), kubeconfig, profiles())
    try:
        dmn.start()
        yield dmn
        dmn.cleanup(everyone=True)
    finally:
        dmn.stop()


def jupyterhub_versions() -> list:
    six = os.environ.get("FLEETSPAWN_JUPYTERHUB6_PYTHON")
    return ["5", pytest.param("6", marks=pytest.mark.skipif(not six, reason="FLEETSPAWN_JUPYTERHUB6_PYTHON is not set"))]


@pytest.fixture(scope="module", params=jupyterhub_versions())
def hub(request, tmp_path_factory, lasthop_daemon, chp):
    python = os.environ["FLEETSPAWN_JUPYTERHUB6_PYTHON"] if request.param == "6" else None
    extra = f'c.Spawner.hub_connect_url = "http://{GATEWAY_B}:{{port}}"\n'
    h = Hub(tmp_path_factory.mktemp(f"hub{request.param}"), lasthop_daemon, chp, hub_bind="0.0.0.0",
            **({"python": python} if python else {}))
    with open(h.d / "jupyterhub_config.py", "a") as f:
        f.write(extra.replace("{port}", str(h.hub_port)))
    h.version = request.param
    h.start()
    yield h
    h.stop()


@pytest.fixture
def user(request, hub) -> str:
    """A user name of this run, unique per test and hub version."""
    return f"{RUN}-h{hub.version}-{request.node.originalname.removeprefix('test_')[:16].replace('_', '-')}".lower().rstrip("-")


def logged_in(hub: Hub, name: str) -> httpx.Client:
    """An HTTP client logged in to the hub as `name` (DummyAuthenticator), following redirects
    (the single-user server's OAuth dance with the hub included)."""
    client = httpx.Client(base_url=hub.public, timeout=30, follow_redirects=True)
    client.get("/hub/login")
    r = client.post("/hub/login", data={"username": name, "password": "any", "_xsrf": client.cookies.get("_xsrf")})
    assert r.status_code == 200, r.text[-2000:]
    return client


def server_log(kubectl, name: str, server: str) -> str:
    """The single-user server's log, wherever its pod runs."""
    for context in ("cluster-b", "cluster-c"):
        for pod in annotated(kubectl, name, context, "pods"):
            if (pod["metadata"].get("annotations") or {}).get("fleetspawn.io/servername", "") == server:
                out = subprocess.run(["kubectl", "--context", context, "logs", "-n", "fs-lasthop", pod["metadata"]["name"]],
                                     env=kubectl.env, capture_output=True, text=True, timeout=30)
                return out.stdout[-4000:] + out.stderr[-1000:]
    return "(no pod)"


def reachable(hub: Hub, kubectl, name: str, server: str = "") -> dict:
    """The single-user server's own API status, asked through the hub's proxy as the user
    (after the OAuth dance a browser does on the server's first page)."""
    prefix = f"/user/{quote(name, safe='@')}/" + (f"{quote(server)}/" if server else "")
    with closing(logged_in(hub, name)) as client:
        page = client.get(prefix)
        assert page.status_code == 200, (page.status_code, page.url, page.text[-1500:], server_log(kubectl, name, server))
        r = client.get(prefix + "api/status")
        assert r.status_code == 200 and r.headers.get("content-type", "").startswith("application/json"), (r.status_code, r.url, r.text[-1500:], server_log(kubectl, name, server))
        assert str(r.url).startswith(hub.public + prefix), r.url
        return r.json()


def start(hub: Hub, name: str, profile: str, server: str = "", new_user: bool = True) -> None:
    """Creates the user (unless `new_user` is false) and starts a server of theirs."""
    if new_user:
        r = hub.api.post(f"/users/{quote(name)}", json={})
        assert r.status_code == 201, r.text
    path = f"/users/{quote(name)}/servers/{quote(server)}" if server else f"/users/{quote(name)}/server"
    r = hub.api.post(path, json={"profile": profile})
    assert r.status_code in (201, 202), r.text


def ready(hub: Hub, name: str, server: str = "", timeout: float = 240) -> dict:
    return hub.wait(f"{name}/{server} ready", lambda: (hub.api.get(f"/users/{quote(name)}").json().get("servers", {}).get(server, {}) or {}).get("ready")
                    and hub.api.get(f"/users/{quote(name)}").json()["servers"][server], timeout=timeout)


def stop_and_check_nothing_left(hub: Hub, kubectl, name: str, server: str = "") -> None:
    path = f"/users/{quote(name)}/servers/{quote(server)}" if server else f"/users/{quote(name)}/server"
    r = hub.api.delete(path)
    assert r.status_code in (202, 204), r.text
    hub.wait("stopped", lambda: server not in hub.api.get(f"/users/{quote(name)}").json()["servers"], timeout=150)
    route = f"/user/{quote(name, safe='@')}" + (f"/{quote(server)}" if server else "")
    assert route not in hub.routes(), hub.routes()


def annotated(kubectl, name: str, context: str, kinds: str = "pods,services,ingresses,httproutes,secrets,serviceaccounts") -> list[dict]:
    items = kubectl.json(context, "get", kinds, "-n", "fs-lasthop")["items"]
    return [i for i in items if (i["metadata"].get("annotations") or {}).get("fleetspawn.io/username") == name]


class Browser:
    """Headless Chromium through Selenium and Debian's chromedriver; screenshots kept."""

    def __init__(self, name: str):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = os.environ.get("FLEETSPAWN_CHROMIUM", "/usr/bin/chromium")
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000", "--disable-gpu"):
            options.add_argument(arg)
        service = Service(executable_path=os.environ.get("FLEETSPAWN_CHROMEDRIVER", "/usr/bin/chromedriver"))
        self.driver = webdriver.Chrome(options=options, service=service)
        self.name, self.shots = name, 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def shot(self, what: str) -> None:
        self.shots += 1
        self.driver.save_screenshot(str(SCREENSHOTS / f"last-hop-{self.name}-{self.shots:02d}-{what}.png"))

    def wait(self, what: str, check, timeout: float = 60):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                value = check()
                if value:
                    return value
            except Exception as e:  # noqa: BLE001 (a page in the middle of loading)
                last = e
            time.sleep(0.3)
        self.shot(f"timeout-{what.replace(' ', '-')}")
        pytest.fail(f"browser: {what} not after {timeout}s (at {self.driver.current_url}; {last!r})")

    def close(self) -> None:
        self.driver.quit()


def test_a_user_logs_in_picks_a_profile_and_runs_a_cell_in_jupyterlab(hub, lasthop_daemon, kubectl, user):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    b = Browser(f"jh{hub.version}")
    d = b.driver
    try:
        d.get(hub.public + "/hub/login")
        d.find_element(By.ID, "username_input").send_keys(user)
        d.find_element(By.ID, "password_input").send_keys("any")
        d.find_element(By.ID, "login_submit").click()
        b.wait("logged in", lambda: "/hub/login" not in d.current_url)
        d.get(f"{hub.public}/hub/spawn/{user}")
        b.wait("the spawn form", lambda: d.find_elements(By.CSS_SELECTOR, 'input[name="profile"][value="lab-b"]'))
        b.shot("form")
        d.find_element(By.CSS_SELECTOR, 'input[name="profile"][value="lab-b"]').click()
        Select(d.find_element(By.NAME, "option:lab-b:flavour")).select_by_value("marked")
        d.find_element(By.CSS_SELECTOR, 'form input[type="submit"], form button[type="submit"]').click()
        # The progress page, then JupyterLab served by the pod, through both proxies.
        b.wait("the progress page", lambda: "/spawn-pending/" in d.current_url or "/lab" in d.current_url, 30)
        b.shot("progress")
        b.wait("JupyterLab", lambda: d.find_elements(By.CSS_SELECTOR, ".jp-LauncherCard"), 240)
        assert d.current_url.startswith(f"{hub.public}/user/{user}/lab"), d.current_url
        b.shot("lab")
        b.wait("a notebook", lambda: d.find_element(By.CSS_SELECTOR, '.jp-LauncherCard[data-category="Notebook"]').click() or True)
        b.wait("a cell", lambda: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .cm-content"), 60)
        # The kernel, connected over its WebSocket through both proxies, says it is idle.
        b.wait("the kernel", lambda: "(ipykernel) | Idle" in d.find_element(By.ID, "jp-main-statusbar").text, 90)
        cell = d.find_element(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .cm-content")
        cell.click()
        cell.send_keys("1+1")
        cell.send_keys(Keys.SHIFT, Keys.ENTER)
        out = b.wait("the answer", lambda: [e.text for e in d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output") if e.text.strip()], 60)
        b.shot("answer")
        assert out[0].strip() == "2", out
    finally:
        b.close()

    # The option reached the pod; the pod runs on the real node; the hub's record says so.
    server = ready(hub, user)
    assert server["user_options"]["profile"] == "lab-b", server
    pod = next(i for i in annotated(kubectl, user, "cluster-b", "pods"))
    assert pod["spec"]["nodeName"] == NODES["cluster-b"].split()[0]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["LAST_HOP_FLAVOUR"] == "marked"
    stop_and_check_nothing_left(hub, kubectl, user)
    assert annotated(kubectl, user, "cluster-b") == []


def test_the_server_gets_the_env_contract_and_a_working_token_in_no_pod_spec(hub, kubectl, user):
    start(hub, user, "lab-b")
    ready(hub, user)
    status = reachable(hub, kubectl, user)
    assert "started" in status, status

    pod = annotated(kubectl, user, "cluster-b", "pods")[0]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    secret = annotated(kubectl, user, "cluster-b", "secrets")[0]
    secret_env = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    given = {**env, **secret_env}
    hub_api = f"http://{GATEWAY_B}:{hub.hub_port}/hub/api"
    expected = {
        "JUPYTERHUB_API_URL": hub_api,
        "JUPYTERHUB_ACTIVITY_URL": f"{hub_api}/users/{user}/activity",
        "JUPYTERHUB_USER": user,
        "JUPYTERHUB_SERVER_NAME": "",
        "JUPYTERHUB_SERVICE_PREFIX": f"/user/{user}/",
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{user}",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"/user/{user}/oauth_callback",
    }
    for k, v in expected.items():
        assert given.get(k) == v, (k, given.get(k), v)
    token = secret_env["JUPYTERHUB_API_TOKEN"]
    assert token and token not in json.dumps(pod), "the token is in the Pod spec"
    # The token works against the hub, as the server's own identity, with its scopes.
    who = httpx.get(hub.public + "/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=10)
    assert who.status_code == 200 and who.json()["name"] == user, who.text
    assert f"access:servers!server={user}/" in who.json().get("scopes", []), who.json()
    stop_and_check_nothing_left(hub, kubectl, user)


def test_a_named_server_on_cluster_c_through_its_gateway_runs_beside_the_default_one(hub, kubectl, user):
    start(hub, user, "lab-b")
    start(hub, user, "lab-c-gateway", "gw", new_user=False)
    ready(hub, user)
    ready(hub, user, "gw")
    assert reachable(hub, kubectl, user)
    assert reachable(hub, kubectl, user, "gw")
    route = annotated(kubectl, user, "cluster-c", "httproutes")
    assert len(route) == 1 and route[0]["spec"]["parentRefs"][0]["name"] == "web", route
    assert annotated(kubectl, user, "cluster-c", "ingresses") == []
    # Both stopped from the hub's home page, as the user would.
    with closing(logged_in(hub, user)) as client:
        home = client.get("/hub/home")
        assert home.status_code == 200 and "gw" in home.text
    stop_and_check_nothing_left(hub, kubectl, user, "gw")
    stop_and_check_nothing_left(hub, kubectl, user)
    assert annotated(kubectl, user, "cluster-b") == [] and annotated(kubectl, user, "cluster-c") == []


@pytest.mark.parametrize("awkward", ["first.last", "a@b.org", "jürgen", "Alice", "1alice"])
def test_awkward_usernames_spawn_are_routed_and_log_in(hub, kubectl, awkward):
    # As the authenticator normalizes a login name: "Alice" logs in as "alice".
    name = f"{awkward}.{RUN}{hub.version}".lower()
    start(hub, name, "lab-b")
    ready(hub, name)
    assert reachable(hub, kubectl, name)
    stop_and_check_nothing_left(hub, kubectl, name)
    assert annotated(kubectl, name, "cluster-b") == []


def test_a_failed_spawn_shows_its_cause_and_leaves_nothing(hub, kubectl, user):
    start(hub, user, "lab-b-missing-image")
    events = hub.progress(user, read_timeout=240)
    assert events[-1].get("failed") is True, events
    assert "ErrImageNeverPull" in events[-1]["message"] or "no-such-image" in events[-1]["message"], events
    hub.wait("failed server cleared", lambda: hub.api.get(f"/users/{user}").json()["servers"] == {})
    hub.wait("nothing left", lambda: annotated(kubectl, user, "cluster-b") == [], 60)


def test_a_hub_killed_mid_spawn_spawns_again_with_its_new_token(hub, kubectl, user):
    start(hub, user, "lab-b")
    hub.wait("the pod", lambda: annotated(kubectl, user, "cluster-b", "pods"), 60)
    hub.kill()
    hub.start()
    # The hub forgot the spawn it was running; the user starts again.
    hub.wait("the hub forgot the spawn", lambda: hub.api.get(f"/users/{user}").json()["servers"].get("", {}).get("pending") is None, 120)
    if "" not in hub.api.get(f"/users/{user}").json()["servers"]:
        start(hub, user, "lab-b", new_user=False)
    ready(hub, user)
    assert reachable(hub, kubectl, user), "login works with the hub's new token"
    stop_and_check_nothing_left(hub, kubectl, user)


def test_a_hub_restart_keeps_the_server_and_its_route_and_sends_no_stop(hub, lasthop_daemon, kubectl, user):
    start(hub, user, "lab-b")
    ready(hub, user)
    pod_uid = annotated(kubectl, user, "cluster-b", "pods")[0]["metadata"]["uid"]
    hub.stop()
    hub.start()
    hub.wait("the route back", lambda: f"/user/{user}" in hub.routes(), 60)
    assert ready(hub, user, timeout=30)
    assert reachable(hub, kubectl, user)
    # No stop was sent: the very same pod serves, and fleetspawn still has it running.
    assert annotated(kubectl, user, "cluster-b", "pods")[0]["metadata"]["uid"] == pod_uid
    status, instance = lasthop_daemon.admin("GET", f"/users/{quote(user)}/server")
    assert status == 200 and instance["state"] == "running", instance
    stop_and_check_nothing_left(hub, kubectl, user)


@pytest.fixture
def culling_hub(request, tmp_path_factory, lasthop_daemon, chp, hub):
    """A hub of the same version with jupyterhub-idle-culler as a service (25 s idle timeout,
    named servers removed), and the proxy's activity read every 5 s: of its own, so that the
    culler takes no other test's server."""
    culler = [hub.python, "-m", "jupyterhub_idle_culler", "--timeout=25", "--cull-every=5", "--remove-named-servers=true"]
    h = Hub(tmp_path_factory.mktemp(f"culling-hub{hub.version}"), lasthop_daemon, chp, hub_bind="0.0.0.0", python=hub.python, extra="")
    with open(h.d / "jupyterhub_config.py", "a") as f:
        f.write(f"""
c.Spawner.hub_connect_url = "http://{GATEWAY_B}:{h.hub_port}"
c.JupyterHub.last_activity_interval = 5
c.JupyterHub.services.append({{"name": "idle-culler", "command": {culler!r}}})
c.JupyterHub.load_roles.append({{"name": "idle-culler", "services": ["idle-culler"],
    "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"]}})
""")
    h.start()
    yield h
    h.stop()


def test_the_idle_culler_stops_an_idle_server_and_removes_its_volume(culling_hub, kubectl, user, tmp_path):
    hub = culling_hub
    # A volume for the server's claim on the real node (the local clusters have no provisioner).
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o777)
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"fs-lasthop-{user}"[:63].rstrip("-")},
          "spec": {"capacity": {"storage": "64Mi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "fs-lasthop-static",
                   "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(home)}}}
    subprocess.run(["kubectl", "--context", "cluster-b", "apply", "-f", "-"], input=json.dumps(pv), env=kubectl.env,
                   check=True, capture_output=True, text=True, timeout=30)
    try:
        start(hub, user, "lab-b-home", "idle")
        started = ready(hub, user, "idle")
        assert len(annotated(kubectl, user, "cluster-b", "persistentvolumeclaims")) == 1
        # Used: a request through the proxy, then the activity the hub reads advances.
        assert reachable(hub, kubectl, user, "idle")
        hub.wait("activity recorded", lambda: (hub.api.get(f"/users/{user}").json()["servers"].get("idle") or {}).get("last_activity", "")
                 > started["last_activity"], 60)
        # Then idle: culled, removed, and its volume deleted with it.
        hub.wait("culled", lambda: "idle" not in hub.api.get(f"/users/{user}").json()["servers"], 150)
        hub.wait("nothing left", lambda: annotated(kubectl, user, "cluster-b", "pods,services,ingresses,secrets,persistentvolumeclaims") == [], 90)
        assert "idle-culler" in hub.log.read_text()
    finally:
        subprocess.run(["kubectl", "--context", "cluster-b", "delete", "pv", pv["metadata"]["name"], "--ignore-not-found", "--wait=false"],
                       env=kubectl.env, capture_output=True, timeout=30)
