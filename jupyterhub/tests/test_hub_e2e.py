"""A real JupyterHub (DummyAuthenticator) with a real configurable-http-proxy, spawning through
FleetSpawner into the real local clusters via a real fleetspawn daemon."""

from __future__ import annotations

import httpx
import pytest

from conftest import Hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory, daemon, chp):
    h = Hub(tmp_path_factory.mktemp("hub"), daemon, chp)
    h.start()
    yield h
    h.stop()


def test_the_hub_spawns_routes_and_stops_through_fleetspawn(hub, daemon, ingress, kubectl, username):
    # A user logs in (DummyAuthenticator) and gets FleetSpawner's options form from the hub.
    with httpx.Client(base_url=hub.public, timeout=30, follow_redirects=True) as browser:
        browser.get("/hub/login")
        xsrf = browser.cookies.get("_xsrf")
        r = browser.post("/hub/login", data={"username": username, "password": "any", "_xsrf": xsrf})
        assert r.status_code == 200, r.text[-2000:]
        form = browser.get(f"/hub/spawn/{username}").text
        assert 'type="radio" name="profile" id="fs-profile-0" value="a" checked' in form
        assert 'value="hub-e2e"' in form and 'name="option:with-options:image"' in form

    # The admin starts their server through the hub's REST API, with the profile as user_options.
    r = hub.api.post(f"/users/{username}/server", json={"profile": "hub-e2e"})
    assert r.status_code in (201, 202), r.text

    # The hub relays fleetspawn's progress on its own progress stream, ending ready.
    events = hub.progress(username)
    messages = [e.get("message", "") for e in events]
    assert events[-1].get("ready") is True, events
    assert any(m.startswith("Placing on cluster-b") for m in messages), messages

    user = hub.wait("server ready", lambda: (u := hub.api.get(f"/users/{username}").json())["servers"].get("", {}).get("ready") and u)
    prefix = f"/user/{username}/"
    assert user["servers"][""]["url"] == prefix
    assert user["servers"][""]["user_options"] == {"profile": "hub-e2e"}

    # fleetspawn's URL for the server: the cluster's ingress, under the hub's prefix...
    status, instance = daemon.admin("GET", f"/users/{username}/server")
    assert status == 200 and instance["state"] == "running" and instance["cluster"] == "cluster-b"
    assert instance["url"] == ingress.url + prefix
    # ...is where the proxy routes the user (CHP keeps the path: target + /user/<name>/...).
    routes = hub.routes()  # CHP keys routes without the trailing slash
    route = routes.get(prefix.rstrip("/"))
    assert route and route["user"] == username and route["server_name"] == "", routes
    assert route["target"] + prefix == instance["url"], routes
    # The hub checked the server at that URL before calling it ready.
    assert prefix + "api" in ingress.paths

    # Stop through the hub: the route and every object on the clusters are gone.
    r = hub.api.delete(f"/users/{username}/server")
    assert r.status_code in (202, 204), r.text
    hub.wait("server stopped", lambda: hub.api.get(f"/users/{username}").json()["servers"] == {}, timeout=150)
    assert prefix.rstrip("/") not in hub.routes()
    assert daemon.admin("GET", f"/users/{username}/server")[0] == 404
    assert kubectl.objects_of_user(username) == []
    pods = kubectl.json("cluster-b", "get", "pods", "-A", "-l", f"fleetspawn.io/user={username}")["items"]
    assert pods == []


def test_a_failed_spawn_shows_the_cause_on_the_hubs_progress(hub, daemon, kubectl, username):
    r = hub.api.post(f"/users/{username}", json={})
    assert r.status_code == 201, r.text
    r = hub.api.post(f"/users/{username}/server", json={"profile": "broken-image"})
    assert r.status_code == 202, r.text
    events = hub.progress(username)
    assert events[-1].get("failed") is True, events
    assert "ErrImagePull" in events[-1]["message"], events
    hub.wait("failed server cleared", lambda: hub.api.get(f"/users/{username}").json()["servers"] == {})
    assert f"/user/{username}" not in hub.routes()
    assert kubectl.objects_of_user(username) == []


def test_the_hub_deletes_a_named_server_with_its_storage(hub, daemon, kubectl, username):
    """What the idle culler does with --remove-named-servers: DELETE the named server with
    remove: JupyterHub stops it, then calls delete_forever, which deletes its volume too."""
    r = hub.api.post(f"/users/{username}", json={})
    assert r.status_code == 201, r.text
    r = hub.api.post(f"/users/{username}/servers/home", json={"profile": "hub-e2e-home"})
    assert r.status_code in (201, 202), r.text
    hub.wait("named server ready", lambda: hub.api.get(f"/users/{username}").json()["servers"].get("home", {}).get("ready"))
    claims = lambda: kubectl.objects_of_user(username, "persistentvolumeclaims")  # noqa: E731
    assert len(claims()) == 1

    # A plain stop keeps the volume.
    r = hub.api.delete(f"/users/{username}/servers/home")
    assert r.status_code in (202, 204), r.text
    hub.wait("named server stopped", lambda: "home" not in hub.api.get(f"/users/{username}").json()["servers"], timeout=150)
    assert len(claims()) == 1

    # Removing the server deletes it forever.
    r = hub.api.request("DELETE", f"/users/{username}/servers/home", json={"remove": True})
    assert r.status_code in (202, 204), r.text
    hub.wait("volume deleted", lambda: claims() == [], timeout=90)
    assert kubectl.objects_of_user(username) == []
    assert "Error cleaning up persistent resources" not in hub.log.read_text()


def test_the_hub_log_warns_once_about_hub_connect_url(hub):
    """Run after the spawns above: one warning naming the setting, not one per spawn."""
    lines = [line for line in hub.log.read_text().splitlines() if "c.Spawner.hub_connect_url is not set" in line]
    assert len(lines) == 1, lines
