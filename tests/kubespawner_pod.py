"""The Pod KubeSpawner 7.1 itself builds for one profile: the reference that
tests/import_kubespawner.rs compares fleetspawn's converted profiles against.

    python kubespawner_pod.py FILE USER PROFILE_INDEX

FILE is a Zero to JupyterHub values file (its singleuser.* keys are mapped to KubeSpawner
traits as the chart's jupyterhub_config.py maps them, over the chart's defaults) or a
jupyterhub_config.py (run as JupyterHub runs it). Prints, as JSON, the slug KubeSpawner gives
the profile at PROFILE_INDEX of its profile list (`slug`: null without a list) and the Pod
(`pod`). The profile's options take their defaults, as a spawn without options does.
"""

import asyncio
import json
import os
import sys
import tempfile
from unittest.mock import Mock

import yaml

# KubeSpawner loads a kubeconfig when it is constructed, and talks to no cluster to build a
# Pod: a kubeconfig of its own, naming a server that is never called.
_KUBECONFIG = os.path.join(tempfile.mkdtemp(), "kubeconfig")
with open(_KUBECONFIG, "w") as f:
    f.write(
        "apiVersion: v1\nkind: Config\ncurrent-context: none\n"
        "clusters: [{name: none, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: none, user: {token: none}}]\n"
        "contexts: [{name: none, context: {cluster: none, user: none}}]\n"
    )
os.environ["KUBECONFIG"] = _KUBECONFIG
from jupyterhub.objects import Hub, Server
from kubernetes_asyncio.client import ApiClient
from traitlets.config import Config

from kubespawner import KubeSpawner

# The chart's defaults (zero-to-jupyterhub-k8s jupyterhub/values.yaml) that shape a user Pod.
CHART_DEFAULTS = {
    "singleuser": {
        "cmd": "jupyterhub-singleuser",
        "uid": 1000,
        "fsGid": 100,
        "allowPrivilegeEscalation": False,
        "startTimeout": 300,
        "memory": {"guarantee": "1G"},
        "storage": {
            "type": "dynamic",
            "capacity": "10Gi",
            "homeMountPath": "/home/jovyan",
            "dynamic": {
                "pvcNameTemplate": "claim-{username}{servername}",
                "volumeNameTemplate": "volume-{user_server}",
                "storageAccessModes": ["ReadWriteOnce"],
            },
        },
    },
    "scheduling": {
        "userPods": {
            "tolerations": [
                {"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"},
                {"key": "hub.jupyter.org_dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"},
            ],
            "nodeAffinity": {"matchNodePurpose": "prefer"},
        }
    },
}


def merge(base, over):
    """Helm's merge of values: maps key by key, None removes, the rest replaces."""
    out = dict(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def get(values, dotted):
    for key in dotted.split("."):
        if not isinstance(values, dict) or values.get(key) is None:
            return None
        values = values[key]
    return values


def chart_config(values):
    """KubeSpawner's config as the chart's jupyterhub_config.py sets it (the parts that
    shape the Pod)."""
    values = merge(CHART_DEFAULTS, values)
    c = Config()
    ks = c.KubeSpawner
    for trait, key in [
        ("start_timeout", "startTimeout"),
        ("image_pull_policy", "image.pullPolicy"),
        ("extra_labels", "extraLabels"),
        ("uid", "uid"),
        ("fs_gid", "fsGid"),
        ("node_selector", "nodeSelector"),
        ("node_affinity_required", "extraNodeAffinity.required"),
        ("node_affinity_preferred", "extraNodeAffinity.preferred"),
        ("lifecycle_hooks", "lifecycleHooks"),
        ("init_containers", "initContainers"),
        ("extra_containers", "extraContainers"),
        ("mem_limit", "memory.limit"),
        ("mem_guarantee", "memory.guarantee"),
        ("cpu_limit", "cpu.limit"),
        ("cpu_guarantee", "cpu.guarantee"),
        ("extra_resource_limits", "extraResource.limits"),
        ("extra_resource_guarantees", "extraResource.guarantees"),
        ("environment", "extraEnv"),
        ("profile_list", "profileList"),
        ("extra_pod_config", "extraPodConfig"),
    ]:
        value = get(values, "singleuser." + key)
        if value is not None:
            setattr(ks, trait, value)
    image = get(values, "singleuser.image.name")
    if image:
        tag = get(values, "singleuser.image.tag")
        ks.image = f"{image}:{tag}" if tag else image
    ks.allow_privilege_escalation = get(values, "singleuser.allowPrivilegeEscalation")
    secrets = (get(values, "imagePullSecrets") or []) + (get(values, "singleuser.image.pullSecrets") or [])
    if secrets:
        ks.image_pull_secrets = secrets
    purpose = get(values, "scheduling.userPods.nodeAffinity.matchNodePurpose")
    term = {"matchExpressions": [{"key": "hub.jupyter.org/node-purpose", "operator": "In", "values": ["user"]}]}
    if purpose == "prefer":
        ks.node_affinity_preferred = [{"weight": 100, "preference": term}] + list(ks.get("node_affinity_preferred", []))
    elif purpose == "require":
        ks.node_affinity_required = [term] + list(ks.get("node_affinity_required", []))
    tolerations = (get(values, "scheduling.userPods.tolerations") or []) + (get(values, "singleuser.extraTolerations") or [])
    if tolerations:
        ks.tolerations = tolerations
    volumes, mounts = {}, {}
    storage = get(values, "singleuser.storage") or {}
    if storage.get("type") == "dynamic":
        name = get(storage, "dynamic.volumeNameTemplate")
        ks.storage_pvc_ensure = True
        if get(storage, "dynamic.storageClass"):
            ks.storage_class = get(storage, "dynamic.storageClass")
        if get(storage, "dynamic.storageAccessModes"):
            ks.storage_access_modes = get(storage, "dynamic.storageAccessModes")
        if get(storage, "dynamic.pvcNameTemplate"):
            ks.pvc_name_template = get(storage, "dynamic.pvcNameTemplate")
        ks.storage_capacity = storage.get("capacity")
        volumes = {name: {"name": name, "persistentVolumeClaim": {"claimName": "{pvc_name}"}}}
        mounts = {name: {"mountPath": storage.get("homeMountPath"), "name": name, "subPath": get(storage, "dynamic.subPath")}}
    elif storage.get("type") == "static":
        volumes = {"home": {"name": "home", "persistentVolumeClaim": {"claimName": get(storage, "static.pvcName")}}}
        mounts = {"home": {"mountPath": storage.get("homeMountPath"), "name": "home", "subPath": get(storage, "static.subPath") or "{username}"}}
    for volume in storage.get("extraVolumes") or []:
        volumes[volume["name"]] = volume
    for i, mount in enumerate(storage.get("extraVolumeMounts") or []):
        mounts[f"{i}-{mount['name']}"] = mount
    ks.volumes = volumes
    ks.volume_mounts = mounts
    if "cmd" in values.get("singleuser", {}):
        c.Spawner.cmd = values["singleuser"]["cmd"]
    if get(values, "singleuser.defaultUrl"):
        c.Spawner.default_url = get(values, "singleuser.defaultUrl")
    return c


def python_config(path):
    c = Config()
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), {"c": c, "get_config": lambda: c})
    return c


class User(Mock):
    """A hub user, as kubespawner's own tests mock it."""

    server = Server()

    def __init__(self, name):
        super().__init__()
        self.name = name
        self.id = 1

    @property
    def escaped_name(self):
        return self.name

    @property
    def url(self):
        return self.server.url


async def main(path, username, index):
    if path.endswith(".py"):
        config = python_config(path)
    else:
        with open(path) as f:
            config = chart_config(yaml.safe_load(f) or {})
    spawner = KubeSpawner(config=config, user=User(username), hub=Hub(), _mock=True)
    profiles = spawner._get_initialized_profile_list(spawner._sorted_dict_values(spawner.profile_list))
    slug = profiles[index]["slug"] if profiles else None
    spawner.user_options = {"profile": slug} if slug else {}
    await spawner.load_user_options()
    pod = await spawner.get_pod_manifest()
    async with ApiClient() as api:
        print(json.dumps({"slug": slug, "pod": api.sanitize_for_serialization(pod)}, indent=1, sort_keys=True))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
