//! fleetspawn, the daemon: the I/O around `fleetspawn-core`.
//!
//! Layers, each importing only those below it (tests/architecture.rs checks it):
//! `main` (CLI) → `http` → `service` → `registry`, `kube`, `hub` → `fleetspawn_core`; `config`,
//! `metrics` and `sources` are leaves any layer may use. See `docs/ARCHITECTURE.md`.

pub mod config;
pub mod http;
pub mod hub;
pub mod kube;
pub mod metrics;
pub mod proxy;
pub mod registry;
pub mod reload;
pub mod service;
pub mod sources;
