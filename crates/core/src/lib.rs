//! fleetspawn's pure core: what a server is and how it is computed, with no Kubernetes
//! client, no async runtime and no I/O. Time comes in as an argument; files come in as
//! strings. The daemon crate (`fleetspawn`) does the I/O around it.
//!
//! See `docs/ARCHITECTURE.md` for the map.

pub mod bundle;
pub mod diagnostic;
pub mod duration;
pub mod import;
pub mod instance;
pub mod kubespawner_names;
pub mod labels;
pub mod lifecycle;
pub mod merge_patch;
pub mod naming;
pub mod placement;
pub mod profiles;
pub mod rights;
pub mod spans;
