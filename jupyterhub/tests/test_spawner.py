"""FleetSpawner against a real fleetspawn daemon and the real local clusters."""

from __future__ import annotations

import asyncio
import base64

import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub, Server
from jupyterhub.user import User

from fleetspawn_jupyterhub import FleetSpawner, FleetSpawnError
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
            server_name, spawner_class=FleetSpawner, hub=Hub(),
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


async def test_an_unreachable_daemon_never_reads_as_stopped(make_spawner, username):
    spawner = make_spawner(username, fleetspawn_url=f"http://127.0.0.1:{free_port()}")
    assert await spawner.poll() is None
    with pytest.raises(FleetSpawnError, match="cannot be reached"):
        await spawner.start()
