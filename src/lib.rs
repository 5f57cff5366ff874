//! fleetspawn: a multi-cluster spawner for Kubernetes.
//!
//! See `docs/ARCHITECTURE.md` for the map of the crate.

pub mod kubeconfig;
