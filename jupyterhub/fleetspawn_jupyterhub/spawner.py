"""FleetSpawner: JupyterHub asks a fleetspawn daemon to start, watch and stop user servers.

The hub holds no cluster credentials: only the daemon's URL and an API token of the `hub`
role. fleetspawn is the source of truth for every server (which cluster, which objects, which
state), so the spawner keeps no state of its own beyond the user and server names.

REST API used (fleetspawn `/api/v1`, see its `openapi.json`):

- `GET  /profiles?groups=...`                 the profiles a user in these groups may use
- `PUT  /users/{user}/servers/{server}`        start (body: profile, options, env, url_prefix)
- `GET  /users/{user}/servers/{server}/progress`  SSE: `progress`... then `ready` or `failed`
- `GET  /users/{user}/servers/{server}`        state: pending/running/stopping/stopped/failed/unknown
- `DELETE /users/{user}/servers/{server}`      stop (idempotent)

The default server (empty name) uses `/users/{user}/server`.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import weakref
from typing import Any, AsyncIterator
from urllib.parse import quote, urlparse

import httpx
from jupyterhub.spawner import Spawner
from tornado import web
from traitlets import Float, List, Unicode, default

# fleetspawn sends an SSE keep-alive comment every 15 s; a stream silent for this long is dead.
SSE_READ_TIMEOUT = 60.0

# One connection pool per event loop, shared by every spawner (a hub has one loop; tests may
# have several). Not limited in connections: each spawn in flight holds one or two streams.
_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]" = weakref.WeakKeyDictionary()


def _client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
            follow_redirects=False,
            trust_env=False,
        )
        _clients[loop] = client
    return client


class FleetSpawnError(web.HTTPError):
    """fleetspawn refused a request or a spawn failed. The message is shown to the user.

    An HTTPError, so that JupyterHub logs a failed spawn as one line rather than a traceback and
    answers its own API with a matching status. `status` and `code` are fleetspawn's answer.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None, hub_status: int = 500):
        super().__init__(hub_status, log_message=None)
        self.message = message
        self.status = status
        self.code = code
        # JupyterHub shows this on the spawn-pending and error pages.
        self.jupyterhub_message = message

    def __str__(self) -> str:
        return self.message


class FleetSpawner(Spawner):
    """Starts each user's server through a fleetspawn daemon's REST API."""

    fleetspawn_url = Unicode(
        "http://127.0.0.1:8080",
        help="Base URL of the fleetspawn daemon (its REST API is under /api/v1).",
    ).tag(config=True)

    fleetspawn_token = Unicode(
        help="""fleetspawn API token of the `hub` role (acts for any user).

        Defaults to the environment variable FLEETSPAWN_TOKEN.""",
    ).tag(config=True)

    @default("fleetspawn_token")
    def _default_token(self) -> str:
        return os.environ.get("FLEETSPAWN_TOKEN", "")

    request_timeout = Float(
        30.0,
        help="Seconds to wait for one fleetspawn API answer (progress streams wait for the spawn).",
    ).tag(config=True)

    # The server runs on a remote cluster: none of the hub process's environment belongs there.
    env_keep = List([], help=Spawner.env_keep.help).tag(config=True)

    # Pulling an image on a fresh node can take minutes; fleetspawn's profile start_timeout is
    # the real limit, this one only bounds the wait on the hub side.
    @default("start_timeout")
    def _default_start_timeout(self) -> int:
        return 600

    @default("options_form")
    def _default_options_form(self):
        return self._options_form

    @default("options_from_form")
    def _default_options_from_form(self):
        return self._options_from_form

    if "apply_user_options" in Spawner.class_trait_names():  # JupyterHub >= 5.3

        @default("apply_user_options")
        def _default_apply_user_options(self):
            # user_options ({profile, options}) go to fleetspawn as they are, in start(); this
            # hook only tells JupyterHub they are handled.
            return lambda spawner, user_options: None

    # ------------------------------------------------------------------------------------------
    # HTTP
    # ------------------------------------------------------------------------------------------

    def _api(self, path: str) -> str:
        return self.fleetspawn_url.rstrip("/") + "/api/v1" + path

    def _server_path(self, suffix: str = "") -> str:
        user = quote(self.user.name, safe="")
        if self.name:
            return self._api(f"/users/{user}/servers/{quote(self.name, safe='')}{suffix}")
        return self._api(f"/users/{user}/server{suffix}")

    async def _request(self, method: str, url: str, *, timeout: Any = None, **kwargs) -> httpx.Response:
        if not self.fleetspawn_token:
            raise FleetSpawnError("FleetSpawner.fleetspawn_token (or FLEETSPAWN_TOKEN) is not set")
        headers = {"Authorization": f"Bearer {self.fleetspawn_token}"}
        try:
            return await _client().request(
                method, url, headers=headers, timeout=timeout or self.request_timeout, **kwargs
            )
        except httpx.HTTPError as e:
            raise FleetSpawnError(f"fleetspawn at {self.fleetspawn_url} cannot be reached: {e!r}", hub_status=503) from e

    @staticmethod
    def _error(r: httpx.Response, what: str) -> FleetSpawnError:
        try:
            body = r.json()
            detail = body.get("detail") or body.get("error") or r.text
            code = body.get("error")
        except ValueError:
            detail, code = r.text.strip() or r.reason_phrase, None
        # Bad input is the user's to fix (400); fleetspawn busy or a cluster away: try later (503).
        hub_status = 400 if r.status_code == 400 or code == "unknown_profile" else 503 if r.status_code in (429, 503) else 500
        return FleetSpawnError(f"{what}: {detail} (HTTP {r.status_code})", status=r.status_code, code=code, hub_status=hub_status)

    async def _events(self) -> AsyncIterator[tuple[str, dict]]:
        """The server's progress as (event name, data) pairs, from fleetspawn's SSE stream."""
        headers = {"Authorization": f"Bearer {self.fleetspawn_token}", "Accept": "text/event-stream"}
        timeout = httpx.Timeout(self.request_timeout, read=SSE_READ_TIMEOUT)
        async with _client().stream("GET", self._server_path("/progress"), headers=headers, timeout=timeout) as r:
            if r.status_code != 200:
                await r.aread()
                raise self._error(r, "fleetspawn progress")
            event, data = "message", []
            async for line in r.aiter_lines():
                if line == "":
                    if data:
                        try:
                            yield event, json.loads("\n".join(data))
                        except ValueError:
                            self.log.warning("fleetspawn sent a progress event that is not JSON: %r", data)
                    event, data = "message", []
                    continue
                if line.startswith(":"):  # keep-alive comment
                    continue
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)

    # ------------------------------------------------------------------------------------------
    # Profiles and the options form
    # ------------------------------------------------------------------------------------------

    def _groups(self) -> list[str]:
        try:
            return sorted(g.name for g in self.user.groups)
        except AttributeError:  # a user object without groups (mocks)
            return []

    async def profiles(self) -> list[dict]:
        """The profiles this user may use (fleetspawn filters by the user's hub groups), default first."""
        r = await self._request("GET", self._api("/profiles"), params={"groups": ",".join(self._groups())})
        if r.status_code != 200:
            raise self._error(r, "fleetspawn profiles")
        return r.json()

    async def _options_form(self, spawner: "FleetSpawner") -> str:
        profiles = await self.profiles()
        if len(profiles) == 1 and not profiles[0].get("options"):
            return ""  # nothing to choose: JupyterHub starts right away
        return render_options_form(profiles)

    @staticmethod
    def _options_from_form(formdata: dict[str, list[str]]) -> dict:
        return options_from_formdata(formdata)

    # ------------------------------------------------------------------------------------------
    # Start / progress / poll / stop
    # ------------------------------------------------------------------------------------------

    def _start_requested(self) -> asyncio.Event:
        """Set once this spawn's PUT went through: progress() must not read an older spawn's log."""
        ev = getattr(self, "_fs_start_requested", None)
        if ev is None:
            ev = self._fs_start_requested = asyncio.Event()
        return ev

    def _spawn_over(self) -> None:
        self._start_requested().clear()

    async def _choose_profile(self) -> tuple[str, dict[str, str]]:
        opts = self.user_options or {}
        profile = opts.get("profile") or None
        options = opts.get("options") or {}
        if profile is not None and not isinstance(profile, str):
            raise FleetSpawnError("user_options.profile must be a string", hub_status=400)
        if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
            raise FleetSpawnError("user_options.options must map option names to strings", hub_status=400)
        # fleetspawn lets the hub use every profile: the hub enforces its users' groups.
        allowed = await self.profiles()
        slugs = [p["slug"] for p in allowed]
        if profile is None:
            profile = next((p["slug"] for p in allowed if p.get("default")), slugs[0] if slugs else None)
            if profile is None:
                raise FleetSpawnError("No profile is available to you.", hub_status=400)
        elif profile not in slugs:
            raise FleetSpawnError(f"The profile {profile!r} is not available to you.", hub_status=400)
        return profile, {str(k): v for k, v in options.items()}

    async def start(self) -> str:
        self._start_requested().clear()
        try:
            profile, options = await self._choose_profile()
            env = self.get_env()
            # Computed from the hub-side ip/port, meaningless in the cluster; fleetspawn sets it.
            env.pop("JUPYTERHUB_SERVICE_URL", None)
            body = {"profile": profile, "options": options, "env": env, "url_prefix": self.server.base_url}
            self.log.info("fleetspawn: starting %s with profile %s %s", self._log_name, profile, options)
            r = await self._request("PUT", self._server_path(), json=body)
            if r.status_code not in (200, 202):
                raise self._error(r, "fleetspawn refused to start the server")
            self._start_requested().set()
            instance = r.json()
            if instance.get("state") == "running" and instance.get("url"):
                url = instance["url"]
            else:
                url = await self._wait_ready()
        except BaseException:
            self._spawn_over()
            raise
        if urlparse(url).path.rstrip("/") != self.server.base_url.rstrip("/"):
            self.log.warning("fleetspawn URL %s is not under %s: the proxy will not reach it", url, self.server.base_url)
        self.log.info("fleetspawn: %s is ready at %s", self._log_name, url)
        return url

    async def _wait_ready(self) -> str:
        """Follows the progress stream to `ready` (the URL) or `failed` (raises with the cause)."""
        while True:
            try:
                async for name, data in self._events():
                    if name == "ready":
                        if data.get("url"):
                            return data["url"]
                        break
                    if name == "failed":
                        raise FleetSpawnError(f"fleetspawn could not start the server: {data.get('message', '')}")
            except FleetSpawnError as e:
                if e.status is None or e.status < 404:
                    raise
                self.log.warning("fleetspawn progress of %s: %s", self._log_name, e)
            except httpx.HTTPError as e:
                self.log.warning("fleetspawn progress stream of %s broke: %r", self._log_name, e)
            # The stream ended without an outcome (daemon restart, network): ask for the state.
            r = await self._request("GET", self._server_path())
            if r.status_code == 404:
                raise FleetSpawnError("fleetspawn: the server disappeared while it was starting")
            if r.status_code == 200:
                instance = r.json()
                if instance.get("state") == "running" and instance.get("url"):
                    return instance["url"]
                if instance.get("state") == "failed":
                    raise FleetSpawnError(f"fleetspawn could not start the server: {instance.get('cause') or 'failed'}")
                if instance.get("state") in ("stopping", "stopped"):
                    raise FleetSpawnError("fleetspawn: the server was stopped while it was starting")
            await asyncio.sleep(1)

    async def progress(self) -> AsyncIterator[dict]:
        try:
            await asyncio.wait_for(self._start_requested().wait(), timeout=self.start_timeout)
        except asyncio.TimeoutError:
            return
        try:
            async for name, data in self._events():
                event = {"message": str(data.get("message", ""))}
                if isinstance(data.get("progress"), (int, float)):
                    event["progress"] = data["progress"]
                yield event
                if name in ("ready", "failed"):
                    return
        except (FleetSpawnError, httpx.HTTPError) as e:
            # start() reports the outcome; the page only loses its live messages.
            self.log.warning("fleetspawn progress of %s: %r", self._log_name, e)

    async def poll(self) -> int | None:
        try:
            r = await self._request("GET", self._server_path())
        except FleetSpawnError as e:
            self.log.warning("fleetspawn poll of %s: %s; assuming it still runs", self._log_name, e)
            return None
        if r.status_code == 404:
            self._spawn_over()
            return 0
        if r.status_code != 200:
            self.log.warning("fleetspawn poll of %s: %s; assuming it still runs", self._log_name, self._error(r, "status"))
            return None
        state = r.json().get("state")
        # `unknown`: its cluster cannot be reached right now. Never kill a server for that.
        if state in ("pending", "running", "unknown"):
            return None
        self._spawn_over()
        return 1 if state == "failed" else 0

    async def stop(self, now: bool = False) -> None:
        # fleetspawn waits for the pod to be gone and bounds that with the profile's stop_timeout
        # (then 504: the deletion goes on). A slow cluster is not a failure: ask again, twice.
        timeout = httpx.Timeout(self.request_timeout, read=None)
        for attempt in range(3):
            r = await self._request("DELETE", self._server_path(), timeout=timeout)
            if r.status_code in (200, 202, 204, 404):
                self._spawn_over()
                return
            if r.status_code != 504:
                break
            self.log.warning("fleetspawn: %s is slow to stop (attempt %d)", self._log_name, attempt + 1)
        raise self._error(r, "fleetspawn could not stop the server")

    # get_state/load_state: the Spawner defaults. fleetspawn is the source of truth for every
    # server (cluster, objects, state), found again by user and server name after a hub restart.


# ----------------------------------------------------------------------------------------------
# The options form
# ----------------------------------------------------------------------------------------------
#
# Field names: `profile` (the slug), `option:SLUG:NAME` (a listed choice) and `free:SLUG:NAME`
# (free text, which wins when filled). fleetspawn slugs and option names never contain ':'.


def render_options_form(profiles: list[dict]) -> str:
    e = lambda s: html.escape(str(s or ""), quote=True)  # noqa: E731
    default_slug = next((p["slug"] for p in profiles if p.get("default")), profiles[0]["slug"] if profiles else "")
    parts = ['<div class="fleetspawn-profiles">']
    for i, p in enumerate(profiles):
        slug = p["slug"]
        pid = f"fs-profile-{i}"
        checked = " checked" if slug == default_slug else ""
        clusters = ", ".join(p.get("clusters") or [])
        parts.append('<div class="form-check mb-3 fleetspawn-profile">')
        parts.append(
            f'<input class="form-check-input" type="radio" name="profile" id="{pid}" value="{e(slug)}"{checked}>'
            f'<label class="form-check-label" for="{pid}"><strong>{e(p.get("display_name") or slug)}</strong>'
            + (f" &mdash; {e(p['description'])}" if p.get("description") else "")
            + (f' <small class="text-muted">({e(clusters)})</small>' if clusters else "")
            + "</label>"
        )
        for j, opt in enumerate(p.get("options") or []):
            name = opt["name"]
            oid = f"{pid}-opt-{j}"
            label = e(opt.get("display_name") or name)
            parts.append('<div class="ms-4 mt-1 fleetspawn-option">')
            if opt.get("choices"):
                parts.append(f'<label class="form-label" for="{oid}">{label}</label>')
                parts.append(f'<select class="form-select" id="{oid}" name="option:{e(slug)}:{e(name)}">')
                for c in opt["choices"]:
                    sel = " selected" if c["value"] == opt.get("default") else ""
                    text = e(c.get("display_name") or c["value"])
                    if c.get("description"):
                        text += f" &mdash; {e(c['description'])}"
                    parts.append(f'<option value="{e(c["value"])}"{sel}>{text}</option>')
                parts.append("</select>")
            free = opt.get("free_text")
            if free:
                flabel = f"or {e(free.get('hint'))}" if opt.get("choices") else label
                parts.append(f'<label class="form-label" for="{oid}-free">{flabel}</label>')
                value = "" if opt.get("choices") else e(opt.get("default"))
                parts.append(
                    f'<input class="form-control" type="text" id="{oid}-free" name="free:{e(slug)}:{e(name)}"'
                    f' value="{value}" placeholder="{e(free.get("hint"))}">'
                )
            if opt.get("description"):
                parts.append(f'<div class="form-text">{e(opt["description"])}</div>')
            parts.append("</div>")
        parts.append("</div>")
    parts.append("</div>")
    return "\n".join(parts)


def options_from_formdata(formdata: dict[str, list[str]]) -> dict:
    """`{"profile": slug, "options": {name: value}}` from the form's fields."""

    def first(values: Any) -> str:
        if isinstance(values, (list, tuple)):
            values = values[0] if values else ""
        return str(values or "").strip()

    profile = first(formdata.get("profile"))
    options: dict[str, str] = {}
    free: dict[str, str] = {}
    for key, values in formdata.items():
        kind, _, rest = key.partition(":")
        slug, _, name = rest.partition(":")
        if slug != profile or not name:
            continue
        value = first(values)
        if kind == "option" and value:
            options[name] = value
        elif kind == "free" and value:
            free[name] = value
    options.update(free)
    result: dict = {"options": options}
    if profile:
        result["profile"] = profile
    return result
