//! fleetspawn: a multi-cluster spawner for Kubernetes.
//!
//! See `docs/ARCHITECTURE.md` for the map of the crate.

pub mod kubeconfig;
pub mod lifecycle;
pub mod progress;
pub mod apply;
pub mod labels;
pub mod registry;
pub mod merge_patch;
pub mod naming;
pub mod profiles;
pub mod config;
pub mod bundle;
pub mod placement;
pub mod spawner;
pub mod metrics;
pub mod auth;
pub mod api;
pub mod web;
pub mod server;
