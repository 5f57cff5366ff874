"""JupyterHub spawner backed by a fleetspawn daemon."""

from .spawner import FleetSpawner, FleetSpawnError

__all__ = ["FleetSpawner", "FleetSpawnError"]
__version__ = "0.1.0"
