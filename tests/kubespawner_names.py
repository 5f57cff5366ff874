"""KubeSpawner 7.1's own names for (user, server) pairs: the reference that
tests/import_kubespawner.rs checks fleetspawn's `naming = "kubespawner"` against.

    python kubespawner_names.py < PAIRS

PAIRS is one JSON array [user, server] per line; for each, prints one JSON object with the
fields KubeSpawner's `safe` scheme gives (`username`, `servername`, `user_server`) and the
claim names of two templates (Zero to JupyterHub's `claim-{username}{servername}` and
KubeSpawner's default `claim-{user_server}`), as KubeSpawner._expand_user_properties expands
them.
"""

import asyncio
import json
import sys
from types import SimpleNamespace

# Builds KubeSpawner as the Pod reference does (a kubeconfig of its own, a stand-in user).
from kubespawner_pod import Hub, KubeSpawner, User


async def main():
    # KubeSpawner makes its API clients on the running event loop.
    spawner = KubeSpawner(user=User("x"), hub=Hub(), _mock=True)
    for line in sys.stdin:
        user, server = json.loads(line)
        spawner.user.name = user
        # The server's name comes from its ORM row, as in a hub.
        spawner.orm_spawner = SimpleNamespace(name=server, server=None)
        fields = spawner._expand_user_properties("{username}|{servername}|{user_server}").split("|")
        print(json.dumps({
            "username": fields[0],
            "servername": fields[1],
            "user_server": fields[2],
            "z2jh_claim": spawner._expand_user_properties("claim-{username}{servername}"),
            "default_claim": spawner._expand_user_properties("claim-{user_server}"),
        }))


if __name__ == "__main__":
    asyncio.run(main())
