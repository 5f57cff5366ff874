"""FleetSpawner: JupyterHub asks a fleetspawn daemon to start, watch and stop user servers.

The hub holds no cluster credentials: only the daemon's URL and an API token of the `hub`
role. fleetspawn is the source of truth for every server (which cluster, which objects, which
state), so the spawner keeps no state of its own beyond the user and server names.

REST API used (fleetspawn `/api/v1`, see its `openapi.json`):

- `GET  /profiles?groups=...`                 the profiles a user in these groups may use
- `PUT  /users/{user}/servers/{server}`        start (body: profile, options, env, url_prefix,
                                               hub_parameters);
                                               idempotent: returns the server starting or running
- `GET  /users/{user}/servers/{server}/progress`  SSE: `progress`... then `ready` or `failed`
- `GET  /users/{user}/servers/{server}`        state: pending/running/stopping/failed/unknown
- `DELETE /users/{user}/servers/{server}`      stop (idempotent); `?remove=true` also deletes
                                               the server's storage (delete_forever)

The default server (empty name) uses `/users/{user}/server`.

Every request has a connect and a read timeout (`request_timeout`). fleetspawn out of reach (a
refused connection, a timeout, a 502/503/504 that is not fleetspawn's own answer) is treated as
a blip: start() and progress() retry with backoff within the start timeout, stop() and
delete_forever() within `stop_timeout`, and poll() answers "still running".
"""

from __future__ import annotations

import asyncio
import html
import inspect
import ipaddress
import json
import math
import os
import random
import weakref
from typing import Any, AsyncIterator
from urllib.parse import quote, urlparse

import httpx
from jupyterhub.spawner import Spawner
from tornado import web
from traitlets import Callable, Dict, Float, Integer, List, Unicode, Union, default

# fleetspawn sends an SSE keep-alive comment every 15 s; a stream silent for this long is dead.
SSE_READ_TIMEOUT = 60.0

# Waits between attempts while fleetspawn cannot be reached: doubling from the first to the
# longest, with jitter, so that a hub with many spawns in flight does not hammer a daemon that
# is coming back.
RETRY_FIRST = 0.5
RETRY_LONGEST = 5.0
# Between two looks at a server that is still pending while its progress cannot be followed.
PENDING_POLL = 1.0
# How often start() asks again for a server that fleetspawn lost while it could not be
# reached (a daemon killed between accepting the spawn and recording it).
MAX_RESTARTS = 3

# fleetspawn's error codes that mean "nothing was done, ask again in a moment".
RETRYABLE_CODES = frozenset({"home_unavailable"})

# Spawner.cmd's default: the profile's image runs its own command, this one is not "set".
DEFAULT_CMD = ["jupyterhub-singleuser"]

# Settings FleetSpawner cannot honour are warned about once per hub process, not per spawn.
_warned: set[str] = set()

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
            # Every call passes its own; this only guards a call that would forget to.
            timeout=httpx.Timeout(30.0),
        )
        _clients[loop] = client
    return client


def _now() -> float:
    return asyncio.get_running_loop().time()


def _seconds(value: Any) -> float | None:
    """A positive number of seconds from the wire, else None (absent, null, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Backoff:
    """Waits between attempts: RETRY_FIRST, doubling up to RETRY_LONGEST, each +-25 %."""

    def __init__(self) -> None:
        self.delay = RETRY_FIRST

    def reset(self) -> None:
        self.delay = RETRY_FIRST

    async def wait(self, deadline: float) -> bool:
        """Sleeps before the next attempt; False (at once) when `deadline` has passed."""
        left = deadline - _now()
        if left <= 0:
            return False
        delay = min(left, self.delay * random.uniform(0.75, 1.25))
        self.delay = min(RETRY_LONGEST, self.delay * 2)
        await asyncio.sleep(delay)
        return True


class _SpawnState:
    """What start() and progress() share about the spawn in flight (nothing survives a hub
    restart, nothing needs to: fleetspawn knows the server)."""

    def __init__(self) -> None:
        # Set once this spawn's PUT went through: progress() must not read an older spawn's log.
        self.requested = asyncio.Event()
        # Whether a start() runs, and how many have begun (progress() follows one of them).
        self.running = False
        self.starts = 0
        # How many stops were asked for: a start() that sees this change gives up.
        self.stops = 0
        # Why the spawn is slow (fleetspawn cannot be reached...), for progress() to show.
        self.notes: list[str] = []


class FleetSpawnError(web.HTTPError):
    """fleetspawn refused a request, could not be reached, or a spawn failed. The message is
    shown to the user.

    An HTTPError, so that JupyterHub logs a failed spawn as one line rather than a traceback and
    answers its own API with a matching status. `status` and `code` are fleetspawn's answer;
    `transient` is true when fleetspawn was not reached (no answer, or a 502/503/504 that is not
    fleetspawn's own), so asking again later may work.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        hub_status: int = 500,
        transient: bool = False,
    ):
        super().__init__(hub_status, log_message=None)
        self.message = message
        self.status = status
        self.code = code
        self.transient = transient
        # JupyterHub shows this on the spawn-pending and error pages.
        self.jupyterhub_message = message

    def __str__(self) -> str:
        return self.message


# KubeSpawner's key for an option's free text, next to the option's own key.
UNLISTED_SUFFIX = "--unlisted-choice"


def _flat_options(user_options: dict) -> dict[str, str]:
    """Option values given as KubeSpawner gives them, beside `profile` at the top level
    (`{"profile": "gpu", "image": "scipy"}`, the free text of option `image` as
    `image--unlisted-choice`): users' saved options and scripts written for a KubeSpawner hub
    keep working. A free text wins over its option's choice, as in KubeSpawner; a value that
    is not a string, or an option also given under `options`, is refused. fleetspawn refuses
    an option the profile does not have, naming it."""
    nested = user_options.get("options") or {}
    flat = {k: v for k, v in user_options.items() if k not in ("profile", "options")}
    out: dict[str, str] = {}
    for key in sorted(flat, key=lambda k: k.endswith(UNLISTED_SUFFIX)):
        value = flat[key]
        name = key[: -len(UNLISTED_SUFFIX)] if key.endswith(UNLISTED_SUFFIX) else key
        if isinstance(value, list) and len(value) == 1:
            value = value[0]  # form data as KubeSpawner's options_from_form may keep it
        if not isinstance(value, str):
            raise FleetSpawnError(f"user_options.{key} must be a string", hub_status=400)
        if name in nested:
            raise FleetSpawnError(f"option {name!r} is given twice (user_options.{key} and user_options.options)", hub_status=400)
        if key.endswith(UNLISTED_SUFFIX) and not value:
            continue  # an empty free-text field: the choice stands
        out[name] = value
    return out


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
        help="""Seconds to wait for one fleetspawn API call: to connect, and for each read.

        Applies to every call, stop() included (a stop that takes longer is asked again, see
        stop_timeout). Progress streams wait for the spawn, with their own read timeout of 60 s
        (fleetspawn sends a keep-alive every 15 s).""",
    ).tag(config=True)

    start_timeout_margin = Integer(
        60,
        help="""Seconds added to the chosen profile's start_timeout (as fleetspawn lists it) for
        the hub's own limit on a spawn: the spawn takes
        max(Spawner.start_timeout, profile start_timeout + this margin).

        The margin covers what happens around fleetspawn's own limit: the hub's requests, a
        retry after a blip, the hub's check that the server answers.""",
    ).tag(config=True)

    stop_timeout = Float(
        300.0,
        help="""Seconds stop() and delete_forever() keep asking fleetspawn, when it cannot be
        reached or answers that the deletion is still going on (504, after the profile's
        stop_timeout); then they fail.""",
    ).tag(config=True)

    hub_parameters = Union(
        [Dict(), Callable()],
        default_value={},
        help="""Values of the chosen profile's `hub_parameters` (docs/profiles.md): a dict, or a
        callable taking the spawner and returning one (it may be async), e.g. a uid from the
        authenticator's auth_state:

            async def params(spawner):
                state = await spawner.user.get_auth_state() or {}
                return {"uid": state["uid"]}
            c.FleetSpawner.hub_parameters = params

        Only the hub may send them; fleetspawn checks each against the profile and refuses a
        bad one, naming it. Sent only when not empty.""",
    ).tag(config=True)

    # The server runs on a remote cluster: none of the hub process's environment belongs there.
    env_keep = List([], help=Spawner.env_keep.help).tag(config=True)

    # Pulling an image on a fresh node can take minutes. A profile whose start_timeout is longer
    # raises this for its spawns (run_pre_spawn_hook), when fleetspawn lists it.
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
        """One API call, with a connect and a read timeout. Raises FleetSpawnError (transient)
        when fleetspawn does not answer; any answer is returned."""
        if not self.fleetspawn_token:
            raise FleetSpawnError("FleetSpawner.fleetspawn_token (or FLEETSPAWN_TOKEN) is not set")
        headers = {"Authorization": f"Bearer {self.fleetspawn_token}"}
        try:
            return await _client().request(
                method, url, headers=headers, timeout=timeout or httpx.Timeout(self.request_timeout), **kwargs
            )
        except httpx.HTTPError as e:
            raise FleetSpawnError(
                f"fleetspawn at {self.fleetspawn_url} cannot be reached: {e!r}", hub_status=503, transient=True
            ) from e

    async def _request_retrying(self, method: str, url: str, *, deadline: float, what: str, **kwargs) -> httpx.Response:
        """`_request`, asked again with backoff until `deadline` while fleetspawn cannot be
        reached. fleetspawn's own answers (errors included) are returned at once."""
        backoff = _Backoff()
        started = _now()
        while True:
            try:
                r = await self._request(method, url, **kwargs)
            except FleetSpawnError as e:
                if not e.transient:
                    raise
                failure = e
            else:
                if r.status_code < 500:
                    return r
                failure = self._error(r, what)
                if not failure.transient:
                    return r
            if not await backoff.wait(deadline):
                raise FleetSpawnError(
                    f"{failure} (still so after {_now() - started:.0f}s of retries)",
                    status=failure.status, hub_status=503, transient=True,
                )
            self._note(f"{failure}; retrying")

    def _note(self, message: str) -> None:
        """Something the user waiting for this spawn should see (progress() shows it)."""
        self.log.warning("fleetspawn: %s: %s", self._log_name, message)
        notes = self._state().notes
        if not notes or notes[-1] != message:
            notes.append(message)

    @staticmethod
    def _error(r: httpx.Response, what: str) -> FleetSpawnError:
        code = None
        try:
            body = r.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            code = body["error"]
            detail = body.get("detail") or code
        else:
            detail = r.text.strip()[:300] or r.reason_phrase
        # An error without fleetspawn's JSON body in a 502/503/504 comes from something in
        # between (a load balancer while the daemon restarts): fleetspawn was not reached.
        transient = (code is None and r.status_code in (502, 503, 504)) or code in RETRYABLE_CODES
        # Bad input is the user's to fix (400); fleetspawn busy or a cluster away: try later (503).
        hub_status = 400 if r.status_code == 400 or code == "unknown_profile" else 503 if r.status_code in (429, 503) else 500
        return FleetSpawnError(
            f"{what}: {detail} (HTTP {r.status_code})", status=r.status_code, code=code, hub_status=hub_status, transient=transient
        )

    @staticmethod
    def _json(r: httpx.Response) -> dict:
        try:
            body = r.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    async def _events(self) -> AsyncIterator[tuple[str, dict]]:
        """The server's progress as (event name, data) pairs, from fleetspawn's SSE stream."""
        if not self.fleetspawn_token:
            raise FleetSpawnError("FleetSpawner.fleetspawn_token (or FLEETSPAWN_TOKEN) is not set")
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

    async def profiles(self, *, deadline: float | None = None) -> list[dict]:
        """The profiles this user may use (fleetspawn filters by the user's hub groups), default
        first. With a `deadline`, asked again until then while fleetspawn cannot be reached."""
        url, params = self._api("/profiles"), {"groups": ",".join(self._groups())}
        if deadline is None:
            r = await self._request("GET", url, params=params)
        else:
            r = await self._request_retrying("GET", url, params=params, deadline=deadline, what="fleetspawn profiles")
        if r.status_code != 200:
            raise self._error(r, "fleetspawn profiles")
        try:
            profiles = r.json()
        except ValueError:
            profiles = None
        if not isinstance(profiles, list):
            raise FleetSpawnError(f"fleetspawn profiles: not a list: {r.text[:200]}")
        return profiles

    async def _options_form(self, spawner: "FleetSpawner") -> str:
        profiles = await self.profiles()
        if len(profiles) == 1 and not profiles[0].get("options"):
            return ""  # nothing to choose: JupyterHub starts right away
        return render_options_form(profiles)

    @staticmethod
    def _options_from_form(formdata: dict[str, list[str]]) -> dict:
        return options_from_formdata(formdata)

    # ------------------------------------------------------------------------------------------
    # Settings FleetSpawner cannot honour, and the start timeout
    # ------------------------------------------------------------------------------------------

    def _refuse_internal_ssl(self) -> None:
        if self.internal_ssl:
            raise FleetSpawnError(
                "FleetSpawner does not support internal_ssl (c.JupyterHub.internal_ssl): the hub's "
                "certificates for a server are files on the hub's disk, and their paths would end up "
                "in the environment of a pod on another cluster. Turn internal_ssl off; the "
                "single-user server is reached through the cluster's ingress (use https there)."
            )

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in _warned:
            _warned.add(key)
            self.log.warning(message, *args)

    def _warn_about_ignored_settings(self) -> None:
        if self.hub_connect_url is None:
            api_url = getattr(self.hub, "api_url", None) or "the hub's local API address"
            self._warn_once(
                "hub_connect_url",
                "FleetSpawner: c.Spawner.hub_connect_url is not set, so the servers fleetspawn starts "
                "on other clusters are told to reach the hub's API at %s (JUPYTERHUB_API_URL), the "
                "hub's local address, which they most likely cannot reach: they then fail to start or "
                "to log users in. Set c.Spawner.hub_connect_url to a URL of the hub the clusters can "
                "reach (e.g. its public URL). Not c.JupyterHub.hub_connect_url: that one also moves "
                "the proxy's /hub/ route, and set to the public URL the proxy routes to itself.",
                api_url,
            )
        elif _is_loopback(urlparse(self.hub_connect_url).hostname):
            self._warn_once(
                "hub_connect_url:loopback",
                "FleetSpawner: c.Spawner.hub_connect_url is %s, a loopback address: servers on other "
                "clusters cannot reach the hub there (JUPYTERHUB_API_URL).",
                self.hub_connect_url,
            )
        if self.cmd is not None and list(self.cmd) not in ([], DEFAULT_CMD):
            self._warn_once(
                "cmd",
                "FleetSpawner: c.Spawner.cmd is set (%s) but fleetspawn does not take a command "
                "from the hub: servers run their profile's image's command. c.Spawner.cmd is ignored.",
                list(self.cmd),
            )
        if self.args:
            self._warn_once(
                "args",
                "FleetSpawner: c.Spawner.args is set (%s) but fleetspawn does not take arguments "
                "from the hub: servers run their profile's image's command. c.Spawner.args is ignored.",
                list(self.args),
            )

    def _start_timeout_for(self, profile: dict, configured: int) -> int:
        """max(configured, the profile's start_timeout + start_timeout_margin); `configured` when
        fleetspawn does not list the profile's start_timeout (integer seconds)."""
        timeout = _seconds(profile.get("start_timeout"))
        if timeout is None:
            return configured
        return max(configured, math.ceil(timeout + self.start_timeout_margin))

    async def run_pre_spawn_hook(self):
        """Runs `pre_spawn_hook`, then sets `start_timeout` for the chosen profile.

        JupyterHub calls this right before start() and reads `start_timeout` for its wait on
        start() just after calling it, before start() runs: this is the last moment to raise it.
        """
        configured = getattr(self, "_fs_configured_start_timeout", None)
        if configured is None:
            self._fs_configured_start_timeout = configured = self.start_timeout
        else:
            self.start_timeout = configured  # what an earlier spawn raised it to goes
        result = super().run_pre_spawn_hook()
        if inspect.isawaitable(result):
            result = await result
        self._refuse_internal_ssl()
        try:
            _, _, profile = await self._choose_profile()
        except FleetSpawnError as e:
            # start() asks again (and retries), and reports what is wrong.
            self.log.info("fleetspawn: start timeout of %s left at %ss: %s", self._log_name, self.start_timeout, e)
            return result
        timeout = self._start_timeout_for(profile, self.start_timeout)
        if timeout != self.start_timeout:
            self.log.info(
                "fleetspawn: %s gets a start timeout of %ss (profile %s: %ss + %ss)",
                self._log_name, timeout, profile.get("slug"), profile.get("start_timeout"), self.start_timeout_margin,
            )
            self.start_timeout = timeout
        return result

    # ------------------------------------------------------------------------------------------
    # Start / progress / poll / stop / delete_forever
    # ------------------------------------------------------------------------------------------

    def _state(self) -> _SpawnState:
        st = getattr(self, "_fs_state", None)
        if st is None:
            st = self._fs_state = _SpawnState()
        return st

    async def _choose_profile(self, *, deadline: float | None = None) -> tuple[str, dict[str, str], dict]:
        """The profile slug, its option values and fleetspawn's listing of the profile."""
        opts = self.user_options or {}
        profile = opts.get("profile") or None
        options = opts.get("options") or {}
        if profile is not None and not isinstance(profile, str):
            raise FleetSpawnError("user_options.profile must be a string", hub_status=400)
        if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
            raise FleetSpawnError("user_options.options must map option names to strings", hub_status=400)
        options = {**options, **_flat_options(opts)}
        # fleetspawn lets the hub use every profile: the hub enforces its users' groups.
        allowed = await self.profiles(deadline=deadline)
        by_slug = {p["slug"]: p for p in allowed if isinstance(p, dict) and "slug" in p}
        if profile is None:
            profile = next((slug for slug, p in by_slug.items() if p.get("default")), next(iter(by_slug), None))
            if profile is None:
                raise FleetSpawnError("No profile is available to you.", hub_status=400)
        elif profile not in by_slug:
            raise FleetSpawnError(f"The profile {profile!r} is not available to you.", hub_status=400)
        return profile, {str(k): v for k, v in options.items()}, by_slug[profile]

    async def start(self) -> str:
        st = self._state()
        st.starts += 1
        st.running = True
        st.requested.clear()
        st.notes.clear()
        stops = st.stops
        try:
            self._refuse_internal_ssl()
            self._warn_about_ignored_settings()
            began = _now()
            # run_pre_spawn_hook already raised start_timeout for the profile; when start() is
            # called without it, the same limit still bounds the retries.
            profile, options, listing = await self._choose_profile(deadline=began + self.start_timeout)
            timeout = self._start_timeout_for(listing, self.start_timeout)
            env = self.get_env()
            # Computed from the hub-side ip/port, meaningless in the cluster; fleetspawn sets it.
            env.pop("JUPYTERHUB_SERVICE_URL", None)
            body = {"profile": profile, "options": options, "env": env, "url_prefix": self.server.base_url}
            parameters = await self._hub_parameters()
            if parameters:
                body["hub_parameters"] = parameters
            self.log.info("fleetspawn: starting %s with profile %s %s", self._log_name, profile, options)
            url = await self._start_and_wait(body, began + timeout, timeout, stops)
        except BaseException:
            st.requested.clear()
            raise
        finally:
            st.running = False
        if urlparse(url).path.rstrip("/") != self.server.base_url.rstrip("/"):
            self.log.warning("fleetspawn URL %s is not under %s: the proxy will not reach it", url, self.server.base_url)
        self.log.info("fleetspawn: %s is ready at %s", self._log_name, url)
        return url

    async def _hub_parameters(self) -> dict:
        """The `hub_parameters` setting's values for this spawn."""
        value = self.hub_parameters
        if callable(value):
            value = value(self)
            if inspect.isawaitable(value):
                value = await value
        if not isinstance(value, dict):
            raise TypeError(f"FleetSpawner.hub_parameters returned {type(value).__name__}, not a dict")
        return value

    async def _start_and_wait(self, body: dict, deadline: float, timeout: int, stops: int) -> str:
        st = self._state()
        for attempt in range(MAX_RESTARTS + 1):
            # PUT is idempotent: asking again after a lost answer returns the same server.
            r = await self._request_retrying(
                "PUT", self._server_path(), json=body, deadline=deadline, what="fleetspawn start"
            )
            if r.status_code not in (200, 202):
                raise self._error(r, "fleetspawn refused to start the server")
            st.requested.set()
            instance = self._json(r)
            if instance.get("state") == "running" and instance.get("url"):
                return instance["url"]
            url = await self._wait_ready(deadline, timeout, stops)
            if url is not None:
                return url
            if attempt < MAX_RESTARTS:
                self._note("fleetspawn lost the server while it could not be reached (a restart?); asking again")
        raise FleetSpawnError("fleetspawn lost the server while it was starting, several times")

    def _check_not_stopped(self, stops: int) -> None:
        if self._state().stops != stops:
            raise FleetSpawnError("fleetspawn: the server was stopped while it was starting")

    async def _wait_ready(self, deadline: float, timeout: int, stops: int) -> str | None:
        """Follows the progress stream to `ready` (the URL) or `failed` (raises with the cause).

        Rides out fleetspawn restarts and network blips until `deadline`. None when the server
        is gone after fleetspawn could not be reached for a while: it never recorded the spawn,
        and start() asks again."""
        backoff = _Backoff()
        interrupted = False
        while True:
            self._check_not_stopped(stops)
            failure: FleetSpawnError | None = None
            outcome: tuple[str, dict] | None = None
            try:
                async for name, data in self._events():
                    backoff.reset()
                    if name in ("ready", "failed"):
                        outcome = name, data
                        break
            except FleetSpawnError as e:
                if e.status is not None and e.status < 404:
                    raise
                if e.transient or (e.status or 0) >= 500:
                    interrupted, failure = True, e
                # 404: this process of fleetspawn has no progress for it (it restarted): ask
                # for the state.
            except httpx.HTTPError as e:
                interrupted = True
                failure = FleetSpawnError(f"the progress stream from {self.fleetspawn_url} broke: {e!r}", transient=True)
            if outcome is not None:
                name, data = outcome
                if name == "failed":
                    raise FleetSpawnError(f"fleetspawn could not start the server: {data.get('message', '')}")
                if data.get("url"):
                    return data["url"]
            # The stream ended without an outcome (daemon restart, network): ask for the state.
            self._check_not_stopped(stops)
            try:
                r = await self._request("GET", self._server_path())
            except FleetSpawnError as e:
                if not e.transient:
                    raise
                interrupted, failure = True, e
            else:
                if r.status_code == 404:
                    if interrupted:
                        return None
                    raise FleetSpawnError("fleetspawn: the server disappeared while it was starting")
                if r.status_code == 200:
                    instance = self._json(r)
                    state = instance.get("state")
                    if state == "running" and instance.get("url"):
                        return instance["url"]
                    if state == "failed":
                        raise FleetSpawnError(f"fleetspawn could not start the server: {instance.get('cause') or 'failed'}")
                    if state in ("stopping", "stopped"):
                        raise FleetSpawnError("fleetspawn: the server was stopped while it was starting")
                    failure = None  # pending (or its cluster unknown): fleetspawn is there
                else:
                    error = self._error(r, "fleetspawn status")
                    if not (error.transient or r.status_code >= 500):
                        raise error
                    interrupted, failure = True, error
            if failure is None:
                backoff.reset()
                if _now() >= deadline:
                    raise FleetSpawnError(f"fleetspawn: the server did not become ready within {timeout}s")
                await asyncio.sleep(PENDING_POLL)
            elif not await backoff.wait(deadline):
                raise FleetSpawnError(f"{failure} (still so after the start timeout of {timeout}s)", hub_status=503, transient=True)
            else:
                self._note(f"{failure}; retrying")

    async def progress(self) -> AsyncIterator[dict]:
        st = self._state()
        give_up = _now() + self.start_timeout
        followed: int | None = None
        notes_sent = 0
        last = 0

        def notes() -> list[dict]:
            nonlocal notes_sent
            new = st.notes[notes_sent:]
            notes_sent += len(new)
            return [{"progress": last, "message": n} for n in new]

        # JupyterHub may ask before start() runs, or before its request went through: wait for
        # it (showing why it is slow), and stop when the start() followed is over.
        while not st.requested.is_set():
            if st.running and followed is None:
                followed = st.starts
            if (followed is not None and (not st.running or st.starts != followed)) or _now() > give_up:
                for note in notes():
                    yield note
                return
            for note in notes():
                yield note
            await asyncio.sleep(0.1)
        followed = st.starts
        seen: set[tuple] = set()
        backoff = _Backoff()
        while True:
            lost = None
            try:
                async for name, data in self._events():
                    backoff.reset()
                    message = str(data.get("message", ""))
                    number = data.get("progress")
                    key = (name, number, message)
                    if key in seen:  # the history again, after a reconnect
                        continue
                    seen.add(key)
                    event = {"message": message}
                    if isinstance(number, (int, float)) and not isinstance(number, bool):
                        last = max(last, number)  # never backwards, also after a new spawn
                        event["progress"] = last
                    yield event
                    if name in ("ready", "failed"):
                        return
            except FleetSpawnError as e:
                if e.status is not None and e.status < 404:
                    self.log.warning("fleetspawn progress of %s: %s", self._log_name, e)
                    return
                if e.transient or (e.status or 0) >= 500:
                    lost = e
            except httpx.HTTPError as e:
                lost = e
            # No outcome on the stream: start() finds it (and reports it); follow it meanwhile.
            if not st.running or st.starts != followed or _now() > give_up:
                return
            for note in notes():
                yield note
            if lost is not None:
                self.log.warning("fleetspawn progress of %s: %r; reconnecting", self._log_name, lost)
            await backoff.wait(give_up)

    async def poll(self) -> int | None:
        # Anything but fleetspawn saying the server is gone (or stopped, or failed) reads as
        # running: JupyterHub forgets a server that poll() calls stopped.
        try:
            r = await self._request("GET", self._server_path())
        except FleetSpawnError as e:
            self.log.warning("fleetspawn poll of %s: %s; assuming it still runs", self._log_name, e)
            return None
        if r.status_code == 404:
            self._stopped()
            return 0
        if r.status_code != 200:
            self.log.warning("fleetspawn poll of %s: %s; assuming it still runs", self._log_name, self._error(r, "status"))
            return None
        state = self._json(r).get("state")
        # `unknown`: its cluster cannot be reached right now. Never kill a server for that.
        if state in ("stopping", "stopped", "failed"):
            self._stopped()
            return 1 if state == "failed" else 0
        if state not in ("pending", "running", "unknown"):
            self.log.warning("fleetspawn poll of %s: unexpected answer %r; assuming it still runs", self._log_name, r.text[:200])
        return None

    def _stopped(self) -> None:
        """The server is gone: the next progress() must wait for the next spawn's request."""
        st = self._state()
        if not st.running:
            st.requested.clear()

    def clear_state(self) -> None:
        # JupyterHub calls this before every spawn (and after a stop).
        super().clear_state()
        self._stopped()

    async def stop(self, now: bool = False) -> None:
        st = self._state()
        st.stops += 1  # a start() in flight gives up rather than start it again
        st.requested.clear()
        await self._delete(remove=False)

    async def delete_forever(self) -> None:
        """JupyterHub calls this when a named server or a user is deleted (also the idle culler
        with --remove-named-servers), after stop(): fleetspawn deletes what is left of the
        server, its storage (PersistentVolumeClaims) included. Nothing running is fine."""
        self.log.info("fleetspawn: deleting %s and its storage", self._log_name)
        await self._delete(remove=True)

    async def _delete(self, *, remove: bool) -> None:
        # fleetspawn waits for the pod to be gone and bounds that with the profile's stop_timeout
        # (then 504: the deletion goes on). Asking again joins the stop in flight, so a slow
        # cluster, a read timeout or a daemon restart is not a failure: ask again, until
        # stop_timeout.
        what = "fleetspawn could not delete the server and its storage" if remove else "fleetspawn could not stop the server"
        params = {"remove": "true"} if remove else None
        deadline = _now() + self.stop_timeout
        backoff = _Backoff()
        while True:
            try:
                r = await self._request("DELETE", self._server_path(), params=params)
            except FleetSpawnError as e:
                if not e.transient:
                    raise
                failure = e
            else:
                if r.status_code in (200, 202, 204, 404):
                    return
                failure = self._error(r, what)
                if r.status_code != 504 and not failure.transient:
                    raise failure
            if not await backoff.wait(deadline):
                raise FleetSpawnError(f"{what} within {self.stop_timeout:g}s: {failure}", status=failure.status, hub_status=503)
            self.log.warning("fleetspawn: %s: %s; asking again", self._log_name, failure)

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
