"""FleetSpawner against a real fleetspawn daemon and the real local clusters."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import time

import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub, Server
from jupyterhub.user import User
from jupyterhub.utils import maybe_future

from fleetspawn_jupyterhub import FleetSpawner, FleetSpawnError
from fleetspawn_jupyterhub import spawner as spawner_module
from fleetspawn_jupyterhub.spawner import options_from_formdata

from conftest import free_port

INGRESS_A = "http://cluster-a.127.0.0.1.nip.io:8080"


@pytest.fixture(scope="module")
def db():
    return orm.new_session_factory("sqlite:///:memory:")()


@pytest.fixture
def make_spawner(db, daemon):
    """A FleetSpawner as JupyterHub builds it: a real User (ORM row, groups) and Server row."""

    def make(username: str, server_name: str = "", groups: tuple[str, ...] = (), **config) -> FleetSpawner:
        orm_user = orm.User.find(db, username) or orm.User(name=username)
        db.add(orm_user)
        for name in groups:
            group = orm.Group.find(db, name) or orm.Group(name=name)
            db.add(group)
            if group not in orm_user.groups:
                orm_user.groups.append(group)
        db.commit()
        user = User(orm_user, {"db": db})
        config.setdefault("fleetspawn_url", daemon.url)
        config.setdefault("fleetspawn_token", daemon.hub_token)
        spawner = user._new_spawner(
            server_name, spawner_class=FleetSpawner, hub=Hub(ip="127.0.0.1", port=8081, base_url="/hub/"),
            oauth_client_id=f"jupyterhub-user-{username}", api_token=f"hub-issued-token-for-{username}", **config,
        )
        base_url = user.url + (f"{server_name}/" if server_name else "")
        orm_server = orm.Server(base_url=base_url)
        db.add(orm_server)
        db.commit()
        spawner.server = Server(orm_server=orm_server)
        db.commit()
        return spawner

    return make


async def test_profiles_follow_the_users_hub_groups_and_make_the_form(make_spawner, username):
    plain = make_spawner(username)
    slugs = [p["slug"] for p in await plain.profiles()]
    assert slugs[0] == "a", "the default profile comes first"
    assert "groups-only" not in slugs and {"b", "with-options", "broken-image"} <= set(slugs)
    gpu = make_spawner(username + "-gpu", groups=("gpu-users",))
    assert "groups-only" in [p["slug"] for p in await gpu.profiles()]

    form = await plain.get_options_form()
    assert form.count('type="radio" name="profile"') == len(slugs)
    assert 'value="a" checked' in form
    assert '<select class="form-select" id="fs-profile-' in form and 'name="option:with-options:image"' in form
    assert '<option value="scipy">SciPy &mdash; NumPy, pandas, SciPy</option>' in form
    assert 'name="free:with-options:image"' in form and 'placeholder="an image from quay.io/jupyter"' in form
    assert "groups-only" not in form

    # Form data as JupyterHub hands it over (lists of strings): free text wins over the select,
    # fields of other profiles are ignored.
    data = {"profile": ["with-options"], "option:with-options:image": ["scipy"], "free:with-options:image": [""],
            "option:other:image": ["x"]}
    assert plain.run_options_from_form(data) == {"profile": "with-options", "options": {"image": "scipy"}}
    data["free:with-options:image"] = ["quay.io/jupyter/r-notebook:2024-01-01"]
    assert options_from_formdata(data)["options"] == {"image": "quay.io/jupyter/r-notebook:2024-01-01"}


async def test_start_progress_poll_stop(make_spawner, username, kubectl):
    spawner = make_spawner(username)
    spawner.user_options = {"profile": "a"}

    async def collect():
        return [e async for e in spawner.progress()]

    # JupyterHub may ask for progress before start() has sent its request.
    progress = asyncio.create_task(collect())
    await asyncio.sleep(0.2)
    url = await asyncio.wait_for(spawner.start(), 90)
    events = await asyncio.wait_for(progress, 10)

    assert url == f"{INGRESS_A}/user/{username}/"
    numbers = [e["progress"] for e in events]
    assert numbers == sorted(numbers) and len(events) >= 3, events
    assert events[0]["message"].startswith("Placing on cluster-a"), events
    assert events[-1] == {"progress": 100, "message": f"Server ready at {url}"}

    # The hub's API token went into a Secret only, read by the pod through envFrom.
    pods = kubectl.json("cluster-a", "get", "pods", "-A", "-l", f"fleetspawn.io/user={username}")["items"]
    assert len(pods) == 1
    container = pods[0]["spec"]["containers"][0]
    assert all(e["name"] != "JUPYTERHUB_API_TOKEN" for e in container.get("env", []))
    assert f"hub-issued-token-for-{username}" not in str(pods[0])
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env.get("JUPYTERHUB_SERVICE_PREFIX") == f"/user/{username}/"
    secret_name = container["envFrom"][0]["secretRef"]["name"]
    secret = kubectl.json("cluster-a", "get", "secret", "-n", pods[0]["metadata"]["namespace"], secret_name)
    assert base64.b64decode(secret["data"]["JUPYTERHUB_API_TOKEN"]).decode() == f"hub-issued-token-for-{username}"
    assert "JUPYTERHUB_SERVICE_URL" not in secret["data"]

    assert await spawner.poll() is None
    await spawner.stop()
    assert await spawner.poll() == 0
    await spawner.stop()  # idempotent
    assert kubectl.objects_of_user(username) == []


async def test_named_server_with_an_option(make_spawner, username, kubectl):
    spawner = make_spawner(username, "lab")
    spawner.user_options = options_from_formdata({"profile": ["with-options"], "option:with-options:image": ["scipy"]})
    url = await asyncio.wait_for(spawner.start(), 90)
    assert url == f"http://cluster-c.127.0.0.1.nip.io:8080/user/{username}/lab/"
    pods = kubectl.json("cluster-c", "get", "pods", "-A", "-l", f"fleetspawn.io/user={username}")["items"]
    assert [p["spec"]["containers"][0]["image"] for p in pods] == ["quay.io/jupyter/scipy-notebook:latest"]
    assert pods[0]["metadata"]["labels"]["fleetspawn.io/server"] == "lab"
    assert await spawner.poll() is None
    await spawner.stop()
    assert await spawner.poll() == 0


async def test_kubespawner_style_flat_options_are_mapped_or_refused_by_name(make_spawner, username, daemon, kubectl):
    # As a hub that ran KubeSpawner saved them: the option beside the profile.
    spawner = make_spawner(username, "flat")
    spawner.user_options = {"profile": "with-options", "image": "scipy"}
    await asyncio.wait_for(spawner.start(), 90)
    pods = kubectl.json("cluster-c", "get", "pods", "-A", "-l", f"fleetspawn.io/user={username}")["items"]
    assert [p["spec"]["containers"][0]["image"] for p in pods] == ["quay.io/jupyter/scipy-notebook:latest"]
    await spawner.stop()
    # An option the profile does not have is refused by name, never dropped.
    unknown = make_spawner(username + "-u")
    unknown.user_options = {"profile": "with-options", "colour": "red"}
    with pytest.raises(FleetSpawnError, match="HTTP 400") as bad:
        await unknown.start()
    assert bad.value.code == "bad_option" and "colour" in str(bad.value)
    status, _ = daemon.admin("GET", f"/users/{username}-u/server")
    assert status == 404, "nothing was started"
    # A value that is not text, or one given twice, is refused before fleetspawn is asked.
    for options in ({"profile": "with-options", "image": 3}, {"profile": "with-options", "image": "scipy", "options": {"image": "base"}}):
        twice = make_spawner(username + "-t")
        twice.user_options = options
        with pytest.raises(FleetSpawnError, match="image"):
            await twice.start()


def test_flat_options_follow_kubespawners_keys():
    flat = spawner_module._flat_options
    assert flat({"profile": "p", "image": "scipy"}) == {"image": "scipy"}
    assert flat({"profile": "p", "image": "scipy", "image--unlisted-choice": "my/image:1"}) == {"image": "my/image:1"}
    assert flat({"profile": "p", "image": "scipy", "image--unlisted-choice": ""}) == {"image": "scipy"}
    assert flat({"profile": "p", "image": ["scipy"]}) == {"image": "scipy"}
    assert flat({"profile": "p", "options": {"a": "b"}}) == {}


async def test_a_failing_profile_raises_with_the_cause(make_spawner, username, kubectl):
    spawner = make_spawner(username)
    spawner.user_options = {"profile": "broken-image"}
    with pytest.raises(FleetSpawnError, match="ErrImagePull") as failure:
        await asyncio.wait_for(spawner.start(), 90)
    assert "fleetspawn could not start the server" in failure.value.jupyterhub_message
    assert await spawner.poll() is not None
    await spawner.stop()
    assert kubectl.objects_of_user(username) == []


async def test_refusals_name_the_reason(make_spawner, username, daemon):
    spawner = make_spawner(username)
    spawner.user_options = {"profile": "groups-only"}
    with pytest.raises(FleetSpawnError, match="not available to you"):
        await spawner.start()
    spawner.user_options = {"profile": "with-options", "options": {"image": "docker.io/evil:latest"}}
    with pytest.raises(FleetSpawnError, match="HTTP 400") as bad:
        await spawner.start()
    assert bad.value.code == "bad_option"
    status, _ = daemon.admin("GET", f"/users/{username}/server")
    assert status == 404, "nothing was started"
    # Only the hub-role token works; a wrong one is refused, not ignored.
    wrong = make_spawner(username + "-x", fleetspawn_token="not-the-token")
    with pytest.raises(FleetSpawnError, match="HTTP 401"):
        await wrong.profiles()


async def test_hub_parameters_come_from_the_hub_and_a_bad_one_is_named(make_spawner, username, daemon, kubectl):
    async def from_auth_state(spawner):
        await asyncio.sleep(0)
        return {"uid": 4321}

    spawner = make_spawner(username, hub_parameters=from_auth_state)
    spawner.user_options = {"profile": "hub-params"}
    await asyncio.wait_for(spawner.start(), 90)
    pods = kubectl.json("cluster-b", "get", "pods", "-A", "-l", f"fleetspawn.io/user={username}")["items"]
    assert [p["spec"]["securityContext"].get("runAsUser") for p in pods] == [4321]
    await spawner.stop()

    out_of_range = make_spawner(username + "-r", hub_parameters={"uid": 0})
    out_of_range.user_options = {"profile": "hub-params"}
    with pytest.raises(FleetSpawnError, match="HTTP 400") as bad:
        await out_of_range.start()
    assert bad.value.code == "bad_hub_parameter"
    assert "hub_parameters.uid" in str(bad.value)
    status, _ = daemon.admin("GET", f"/users/{username}-r/server")
    assert status == 404, "nothing was started"


async def test_an_unreachable_daemon_never_reads_as_stopped(make_spawner, username):
    spawner = make_spawner(username, fleetspawn_url=f"http://127.0.0.1:{free_port()}", start_timeout=2)
    assert await spawner.poll() is None
    # start() asks again until its start timeout rather than failing at the first refusal.
    began = time.monotonic()
    with pytest.raises(FleetSpawnError, match="cannot be reached") as failure:
        await asyncio.wait_for(spawner.start(), 30)
    assert time.monotonic() - began >= 1.5, "gave up at the first refused connection"
    assert "retries" in str(failure.value)



# ----------------------------------------------------------------------------------------------
# delete_forever, the start timeout, settings FleetSpawner cannot honour
# ----------------------------------------------------------------------------------------------


async def test_delete_forever_removes_the_servers_storage(make_spawner, username, kubectl):
    spawner = make_spawner(username, "home")
    spawner.user_options = {"profile": "with-storage"}
    await asyncio.wait_for(spawner.start(), 90)

    def claims() -> list[str]:
        return kubectl.objects_of_user(username, "persistentvolumeclaims")

    assert len(claims()) == 1, "the profile gives the server a volume"
    # A stop keeps the user's files...
    await spawner.stop()
    assert await spawner.poll() == 0
    assert len(claims()) == 1, "a stop must keep the server's storage"
    # ...deleting the named server (or the user), as JupyterHub does after the stop, does not.
    await asyncio.wait_for(maybe_future(spawner.delete_forever()), 60)
    deadline = time.monotonic() + 30
    while claims() and time.monotonic() < deadline:  # the PVC's finalizer goes once no pod uses it
        await asyncio.sleep(0.5)
    assert claims() == []
    assert kubectl.objects_of_user(username) == []
    # Safe when nothing is left, and for a server that never ran (a user's default server).
    await asyncio.wait_for(maybe_future(spawner.delete_forever()), 60)
    await asyncio.wait_for(maybe_future(make_spawner(username).delete_forever()), 60)


async def test_start_timeout_follows_the_profile(make_spawner, username):
    hooked = []
    spawner = make_spawner(username, pre_spawn_hook=hooked.append)
    assert spawner.start_timeout == 600
    # JupyterHub runs the pre-spawn hook, then calls start() and waits start_timeout for it.
    listing = {p["slug"]: p for p in await spawner.profiles()}["hub-slow"]
    spawner.user_options = {"profile": "hub-slow"}
    await maybe_future(spawner.run_pre_spawn_hook())
    assert hooked == [spawner], "the configured pre_spawn_hook still runs"
    if "start_timeout" in listing:  # fleetspawn lists it: integer seconds (this profile: "15m")
        assert listing["start_timeout"] == 900
        assert spawner.start_timeout == 900 + 60
    else:  # it does not yet: the configured limit stands
        assert spawner.start_timeout == 600

    # With fleetspawn listing each profile's start_timeout (the wire field asked for):
    profiles = [
        {"slug": "cpu", "default": True, "start_timeout": 300},
        {"slug": "gpu", "start_timeout": 900},
        {"slug": "odd", "start_timeout": "15m"},
        {"slug": "old"},
    ]

    async def listed(**_):
        return profiles

    for config, profile, expected in [
        ({}, "gpu", 960),  # the profile's 15 min + the margin
        ({}, "cpu", 600),  # configured wins, and a GPU spawn before does not stick
        ({}, None, 600),  # the default profile
        ({}, "odd", 600),  # not seconds: ignored
        ({}, "old", 600),  # an older fleetspawn without the field
        ({"start_timeout": 1200}, "gpu", 1200),
        ({"start_timeout_margin": 120}, "gpu", 1020),
    ]:
        s = make_spawner(username, **config)
        s.profiles = listed
        for p in ("gpu", profile):  # a GPU spawn first: what it raised must not stay
            s.user_options = {"profile": p} if p else {}
            await maybe_future(s.run_pre_spawn_hook())
        assert s.start_timeout == expected, (config, profile)


async def test_internal_ssl_is_refused(make_spawner, username, daemon):
    spawner = make_spawner(username, internal_ssl=True)
    spawner.user_options = {"profile": "a"}
    with pytest.raises(FleetSpawnError, match="FleetSpawner does not support internal_ssl"):
        await spawner.start()
    # Also before JupyterHub makes the server's certificates (after the pre-spawn hook).
    with pytest.raises(FleetSpawnError, match="FleetSpawner does not support internal_ssl"):
        await maybe_future(spawner.run_pre_spawn_hook())
    assert daemon.admin("GET", f"/users/{username}/server")[0] == 404, "nothing was started"


@pytest.fixture
def hub_log():
    """The log the spawners of a test write to, and no warning of an earlier test pending."""
    spawner_module._warned.clear()
    log = logging.getLogger(f"fleetspawn-test-{time.monotonic_ns()}")
    log.setLevel(logging.DEBUG)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    log.addHandler(handler)
    log.records = records
    yield log
    spawner_module._warned.clear()


def warnings_about(log, setting: str) -> list[str]:
    return [r.getMessage() for r in log.records if r.levelno == logging.WARNING and setting in r.getMessage()]


async def test_hub_connect_url_and_ignored_settings(make_spawner, username, kubectl, hub_log):
    # Unset hub_connect_url, and cmd/args fleetspawn cannot pass: warned at start(), once each.
    spawner = make_spawner(username, log=hub_log, cmd=["/opt/venv/bin/jupyterhub-singleuser"], args=["--debug"])
    spawner.user_options = {"profile": "a"}
    for _ in range(2):  # two spawns, one warning each
        await asyncio.wait_for(spawner.start(), 90)
        await spawner.stop()
    [unset] = warnings_about(hub_log, "c.Spawner.hub_connect_url")
    assert "is not set" in unset and "http://127.0.0.1:8081/hub/api" in unset and "c.JupyterHub.hub_connect_url" in unset
    [cmd] = warnings_about(hub_log, "c.Spawner.cmd")
    assert "/opt/venv/bin/jupyterhub-singleuser" in cmd and "ignored" in cmd
    [args] = warnings_about(hub_log, "c.Spawner.args")
    assert "--debug" in args

    # Set: JUPYTERHUB_API_URL and JUPYTERHUB_ACTIVITY_URL are derived from it (Spawner.get_env).
    spawner = make_spawner(username, "lab", log=hub_log, hub_connect_url="http://hub.internal.example:8081")
    spawner.user_options = {"profile": "a"}
    await asyncio.wait_for(spawner.start(), 90)
    pods = kubectl.json("cluster-a", "get", "pods", "-A", "-l", f"fleetspawn.io/user={username},fleetspawn.io/server=lab")["items"]
    assert len(pods) == 1
    container = pods[0]["spec"]["containers"][0]
    assert "--debug" not in str(container.get("args", [])) + str(container.get("command", []))
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    secret_name = container["envFrom"][0]["secretRef"]["name"]
    secret = kubectl.json("cluster-a", "get", "secret", "-n", pods[0]["metadata"]["namespace"], secret_name)
    env.update({k: base64.b64decode(v).decode() for k, v in secret["data"].items()})
    assert env["JUPYTERHUB_API_URL"] == "http://hub.internal.example:8081/hub/api"
    assert env["JUPYTERHUB_ACTIVITY_URL"] == f"http://hub.internal.example:8081/hub/api/users/{username}/activity"
    await spawner.stop()
    assert len(warnings_about(hub_log, "c.Spawner.hub_connect_url")) == 1

    # A loopback address is as unreachable from another cluster (warned even if start fails).
    spawner = make_spawner(username, log=hub_log, hub_connect_url="http://localhost:8081")
    spawner.user_options = {"profile": "groups-only"}
    with pytest.raises(FleetSpawnError, match="not available"):
        await spawner.start()
    [_, loopback] = warnings_about(hub_log, "c.Spawner.hub_connect_url")
    assert "loopback" in loopback and "http://localhost:8081" in loopback
    assert kubectl.objects_of_user(username) == []


# ----------------------------------------------------------------------------------------------
# Timeouts, a daemon out of reach, a daemon restart
# ----------------------------------------------------------------------------------------------


def unanswering_port() -> tuple[socket.socket, list[socket.socket]]:
    """A port whose backlog is full: new connections are never accepted (connect times out)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(listener.getsockname())
        except BlockingIOError:
            pass
        fillers.append(c)
    time.sleep(0.2)
    return listener, fillers


async def test_every_call_to_fleetspawn_has_a_timeout(make_spawner, username, stand_in):
    # A daemon that accepts connections and never answers (hung, or a dead peer behind a proxy).
    stand_in.hang.set()
    spawner = make_spawner(username, fleetspawn_url=stand_in.url, request_timeout=1, stop_timeout=3, start_timeout=3)
    spawner.user_options = {"profile": "a"}

    async def timed(coro, bound):
        began = time.monotonic()
        try:
            return await asyncio.wait_for(coro, bound), time.monotonic() - began
        except FleetSpawnError as e:
            return e, time.monotonic() - began

    result, took = await timed(spawner.poll(), 10)
    assert result is None and took < 5, "poll() read timeout"
    for call in (spawner.stop, spawner.delete_forever):
        result, took = await timed(call(), 20)  # a TimeoutError here: the call has no read timeout
        assert isinstance(result, FleetSpawnError) and "cannot be reached" in str(result), result
        assert 2.5 < took < 10, f"{call.__name__} kept asking for stop_timeout (3s): {took:.1f}s"
    result, took = await timed(spawner.start(), 20)
    assert isinstance(result, FleetSpawnError) and "cannot be reached" in str(result), result
    assert 2.5 < took < 10, took
    assert ("GET", "/api/v1/users/" + username + "/server") in stand_in.requests
    assert ("DELETE", f"/api/v1/users/{username}/server?remove=true") in stand_in.requests

    # A daemon that does not accept the connection: connect timeout.
    listener, fillers = unanswering_port()
    try:
        spawner = make_spawner(username, fleetspawn_url=f"http://127.0.0.1:{listener.getsockname()[1]}", request_timeout=1, stop_timeout=2)
        result, took = await timed(spawner.poll(), 10)
        assert result is None and took < 5, "poll() connect timeout"
        result, took = await timed(spawner.stop(), 20)
        assert isinstance(result, FleetSpawnError) and "ConnectTimeout" in str(result), result
    finally:
        for s in fillers + [listener]:
            s.close()


async def test_poll_reads_stopped_only_when_fleetspawn_says_so(make_spawner, username, stand_in):
    spawner = make_spawner(username, fleetspawn_url=stand_in.url, request_timeout=2)
    path = ("GET", f"/api/v1/users/{username}/server")
    cases = [
        ((500, '{"error": "internal", "detail": "oops"}'), None),
        ((502, "<html>Bad Gateway</html>"), None),  # a load balancer while the daemon restarts
        ((503, '{"error": "cluster_unavailable", "detail": "east is away"}'), None),
        ((504, "<html>Gateway Timeout</html>"), None),
        ((401, '{"error": "bad_token", "detail": "no"}'), None),  # a token problem is no reason to drop a server
        ((200, "<html>a captive portal</html>"), None),
        ((200, '{"state": "pending"}'), None),
        ((200, '{"state": "running"}'), None),
        ((200, '{"state": "unknown"}'), None),  # its cluster cannot be reached
        ((200, '{"state": "stopping"}'), 0),
        ((200, '{"state": "failed"}'), 1),
        ((404, '{"error": "not_found", "detail": "user has no server"}'), 0),
    ]
    for answer, expected in cases:
        stand_in.answers[path] = answer
        assert await spawner.poll() == expected, answer


async def test_a_daemon_restart_mid_spawn_does_not_fail_it(make_spawner, username, own_daemon, kubectl, hub_log):
    spawner = make_spawner(username, log=hub_log, fleetspawn_url=own_daemon.url, fleetspawn_token=own_daemon.hub_token, start_timeout=300)
    spawner.user_options = {"profile": "a"}
    prefix = f"/user/{username}/"

    # 1. The daemon is down when the spawn begins (a restart, a rolling update): start() waits
    # for it, and the progress shows why it waits.
    own_daemon.kill()
    events: list[dict] = []

    async def follow():
        async for e in spawner.progress():
            events.append(e)

    progress = asyncio.create_task(follow())
    start = asyncio.create_task(spawner.start())
    await asyncio.sleep(3)
    assert not start.done(), start.exception() if start.done() else ""
    await asyncio.to_thread(own_daemon.start)
    url = await asyncio.wait_for(start, 120)
    await asyncio.wait_for(progress, 30)
    assert url == f"{INGRESS_A}{prefix}"
    assert any("cannot be reached" in e["message"] for e in events), events
    assert events[-1]["message"] == f"Server ready at {url}", events
    assert await spawner.poll() is None
    await spawner.stop()
    assert await spawner.poll() == 0

    # 2. The daemon is killed (SIGKILL) as soon as it has accepted the spawn, while the server
    # is still pending, and is back 3 s later: its progress stream and its record of the spawn
    # may be gone (then start() asks again: PUT is idempotent).
    events.clear()
    seen_before = len(hub_log.records)

    def kill_while_pending() -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, instance = own_daemon.admin("GET", f"/users/{username}/server")
            if status == 200:
                own_daemon.kill()
                time.sleep(3)
                own_daemon.start()
                return instance["state"]
            time.sleep(0.005)
        return "never seen"

    killer = asyncio.create_task(asyncio.to_thread(kill_while_pending))
    progress = asyncio.create_task(follow())
    url = await asyncio.wait_for(spawner.start(), 240)
    await asyncio.wait_for(progress, 30)
    assert await killer == "pending", "the daemon was not killed mid-spawn"
    noticed = [r.getMessage() for r in hub_log.records[seen_before:] if r.levelno == logging.WARNING]
    assert any("cannot be reached" in m or "broke" in m for m in noticed), noticed
    assert url == f"{INGRESS_A}{prefix}"
    status, instance = own_daemon.admin("GET", f"/users/{username}/server")
    assert status == 200 and instance["state"] == "running", instance
    assert await spawner.poll() is None
    await spawner.stop()
    assert await spawner.poll() == 0
    assert kubectl.objects_of_user(username) == []


async def test_fleetspawns_own_verdicts_are_final_blips_are_not(make_spawner, username, stand_in):
    spawner = make_spawner(username, fleetspawn_url=stand_in.url, request_timeout=2, start_timeout=30)
    spawner.user_options = {"profile": "a"}
    url = f"http://cluster-a.example/user/{username}/"
    stand_in.answers[("GET", "/api/v1/profiles")] = (200, '[{"slug": "a", "default": true}]')
    put = ("PUT", f"/api/v1/users/{username}/server")
    # Something in front of fleetspawn while it restarts, then fleetspawn unable to record the
    # spawn ("nothing was changed, try again"): asked again, and the spawn goes through.
    stand_in.answers[put] = [
        (502, "<html>Bad Gateway</html>"),
        (503, '{"error": "home_unavailable", "detail": "cannot record it now"}'),
        (200, f'{{"state": "running", "url": "{url}"}}'),
    ]
    assert await asyncio.wait_for(spawner.start(), 30) == url
    assert stand_in.requests.count(("PUT", put[1])) == 3
    # fleetspawn's own answer about the spawn is the outcome: no retry.
    stand_in.requests.clear()
    stand_in.answers[put] = (503, '{"error": "no_healthy_cluster", "detail": "every cluster of the profile is down"}')
    with pytest.raises(FleetSpawnError, match="every cluster of the profile is down"):
        await asyncio.wait_for(spawner.start(), 30)
    assert stand_in.requests.count(("PUT", put[1])) == 1
    # A stop that takes longer than fleetspawn's stop_timeout (504) is asked again.
    delete = ("DELETE", f"/api/v1/users/{username}/server")
    stand_in.answers[delete] = [(504, '{"error": "stop_timeout", "detail": "still deleting"}'), (204, "")]
    await asyncio.wait_for(spawner.stop(), 30)
    assert stand_in.requests.count(delete) == 2
