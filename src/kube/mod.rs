//! Everything fleetspawn says to a Kubernetes API server about objects and clusters: one client
//! per kubeconfig context with health probes (`fleet`), and apply / delete / list of any kind
//! (`objects`). Errors keep the client's error as their source. `userserver` holds the
//! `UserServer` custom resource's types and the CRD they generate; `home` reads and writes
//! those records in the home cluster.

pub mod fleet;
pub mod home;
pub mod objects;
pub mod userserver;
