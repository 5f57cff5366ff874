//! The labels and annotations fleetspawn puts on every object it creates. The record of what
//! should run is the `UserServer` resource in the home cluster; on a remote object only
//! [`OWNER`] (the UserServer's UID) proves whose it is, and only under the installation's
//! [`HOME`]. The other labels are for people and selectors: never believed. Never rename
//! one lightly.

/// `app.kubernetes.io/managed-by=fleetspawn` on every object.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "fleetspawn";
/// The label selector of everything fleetspawn manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=fleetspawn";
/// Label: the UID of the `UserServer` owning the object: the only proof of ownership.
pub const OWNER: &str = "fleetspawn.io/owner";
/// Label: the home namespace of the installation the object belongs to (two installations
/// sharing a target cluster never touch each other's objects).
pub const HOME: &str = "fleetspawn.io/home";
/// Label: the instance key (see `naming`), also the name of its `UserServer`.
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
/// Annotation on the Pod: why this cluster was chosen.
pub const PLACEMENT: &str = "fleetspawn.io/placement";
