//! The labels and annotations fleetspawn puts on every object it creates. The registry rebuilds
//! itself from them, so they are the only record of an instance: never rename one lightly.

/// `app.kubernetes.io/managed-by=fleetspawn` on every object.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "fleetspawn";
/// The label selector of everything fleetspawn manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=fleetspawn";
/// Label: the instance key (see `naming`).
pub const INSTANCE: &str = "fleetspawn.io/instance";
/// Label: the label-safe user name.
pub const USER: &str = "fleetspawn.io/user";
/// Label: the label-safe server name.
pub const SERVER: &str = "fleetspawn.io/server";
/// Label: the profile slug.
pub const PROFILE: &str = "fleetspawn.io/profile";
/// Annotation: the raw user name.
pub const USERNAME: &str = "fleetspawn.io/username";
/// Annotation: the raw server name.
pub const SERVERNAME: &str = "fleetspawn.io/servername";
/// Annotation: the kubeconfig context the instance was placed on.
pub const CONTEXT: &str = "fleetspawn.io/context";
/// Annotation: the user's URL.
pub const URL: &str = "fleetspawn.io/url";
/// Annotation on the Pod: the bundle's inventory (JSON list of object references), so the
/// objects can be found and removed even after the profile changed.
pub const INVENTORY: &str = "fleetspawn.io/inventory";
/// Annotation on the Pod: why this cluster was chosen.
pub const PLACEMENT: &str = "fleetspawn.io/placement";
