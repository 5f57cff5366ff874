"""Drives jupyterhub-multicluster-kubespawner (PyPI, 0.2) in-process for benches/fleet.rs.

The real `MultiClusterKubeSpawner.start()` runs unchanged: `kubectl patch --local` once per
patch, `kubectl apply` of every object, `kubectl wait` for the Pod, then its 1 s sleep. The
harness only supplies what JupyterHub would (a user and hub stub), configures the spawner with
fleetspawn's bundle as its `resources` (its built-in defaults emptied, so both apply the same
objects) and the same patches, and wraps `kubectl_apply` to note when it returned: that is the
moment every object was accepted by the API server, the end of the measured window.

Input: a JSON file written by the Rust bench. Output: one `RESULT {json}` line on stdout.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
from importlib.metadata import version

from multicluster_kubespawner.spawner import MultiClusterKubeSpawner


class StubUser:
    """What a JupyterHub User gives a spawner (only the attributes the spawner reads)."""

    def __init__(self, name, uid):
        self.name = name
        self.id = uid
        self.url = f"/user/{name}/"
        self.proxy_spec = f"/user/{name}/"
        self.server = None
        self.spawners = {}
        self.settings = {}


class StubHub:
    api_url = "http://127.0.0.1:8081/hub/api"
    base_url = "/hub/"
    url = "http://127.0.0.1:8081/hub/"
    public_host = ""


def raw(obj):
    # The spawner renders every resource and patch as a Jinja2 template: ours are data.
    return "{% raw %}" + json.dumps(obj) + "{% endraw %}"


KUBECTL_CALLS = 0
_real_exec = asyncio.create_subprocess_exec


async def counting_exec(*args, **kwargs):
    global KUBECTL_CALLS
    if args and args[0] == "kubectl":
        KUBECTL_CALLS += 1
    return await _real_exec(*args, **kwargs)


asyncio.create_subprocess_exec = counting_exec


async def one(spec, context, uid):
    sp = MultiClusterKubeSpawner(user=StubUser(spec["user"], uid), hub=StubHub())
    sp.default_resources = {}
    sp.resources = {f"{i:02d}": raw(o) for i, o in enumerate(spec["resources"])}
    sp.patches = {f"{i:02d}": raw(p) for i, p in enumerate(spec["patches"])}
    sp.key_template = spec["key"]
    sp.key = spec["key"]
    sp.kubernetes_context = context
    sp.ingress_public_url = "http://cluster-a.127.0.0.1.nip.io:8080"
    marks = {}
    real_apply = sp.kubectl_apply

    async def timed_apply(objs):
        await real_apply(objs)
        marks["applied"] = time.perf_counter()
        marks["calls"] = KUBECTL_CALLS

    sp.kubectl_apply = timed_apply
    calls0 = KUBECTL_CALLS
    t0 = time.perf_counter()
    await sp.start()
    t_end = time.perf_counter()
    applied_ms = (marks["applied"] - t0) * 1000
    return applied_ms, (t_end - t0) * 1000, marks["calls"] - calls0


def cleanup(spec, context, kubeconfig):
    # Not timed: remove this run's objects (not the shared namespace) and wait for them to go.
    names = [f"{o['kind']}/{o['metadata']['name']}" for o in spec["resources"] if o["kind"] != "Namespace"]
    subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, f"--context={context}", "-n", spec["namespace"], "delete", "--wait=true", "--ignore-not-found", *names],
        check=False,
        stdout=subprocess.DEVNULL,
    )


async def main():
    cfg = json.load(open(sys.argv[1]))
    os.environ["KUBECONFIG"] = cfg["kubeconfig"]
    applied, total, calls, errors = [], [], [], 0
    for i, spec in enumerate(cfg["runs"]):
        try:
            a, t, c = await one(spec, cfg["context"], 1000 + i)
            if i >= cfg["warmup"]:
                applied.append(a)
                total.append(t)
                calls.append(c)
        except Exception as e:  # noqa: BLE001 - reported, counted
            errors += 1
            print(f"mcks harness: run {i}: {e}", file=sys.stderr)
        cleanup(spec, cfg["context"], cfg["kubeconfig"])
    print(
        "RESULT "
        + json.dumps(
            {
                "version": version("jupyterhub-multicluster-kubespawner"),
                "applied_ms": applied,
                "start_ms": total,
                "kubectl_calls_per_spawn": sum(calls) / max(len(calls), 1),
                "errors": errors,
            }
        )
    )


asyncio.run(main())
