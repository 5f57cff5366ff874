//! Profiles: what users may spawn, read from a TOML file such as
//! `profiles/example.toml` (reference: `docs/profiles.md`).
//!
//! ```toml
//! [defaults]                # applies to every profile
//! image = "quay.io/jupyter/base-notebook:latest"
//!
//! [[profiles]]
//! display_name = "Small"    # slug "small"
//! context = "cluster-a"
//! ingress_public_url = "http://cluster-a.example"
//! ```
//!
//! A profile is `[defaults]` merged with the profile's own table, then with
//! the overrides of the options the user picked (see [`spec::merge_settings`]).
//! [`parse`] reads and checks a file without side effects: a caller that
//! reloads keeps its last good [`ProfileSet`] when `parse` fails.
//!
//! - `build`: a [`Profile`] from merged settings, with every problem found;
//! - `options`: a profile's options, built from its settings and resolved
//!   against a user's values;
//! - `set`: [`ProfileSet`] and [`parse`], which checks a whole file.

mod build;
pub mod hub_parameters;
mod options;
mod set;
pub mod spec;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::placement::Placement;
use crate::spans::{KeyPath, Seg};
pub use options::{Choice, FreeText, OptionError, ProfileOption, ResolvedOptions};
pub use set::{parse, Blame, ProfileSet, RenderCheck};
pub use spec::{ContextSpec, PathType, PerContext, PlacementKind, ProfileSpec, Routing};

/// How long a spawn may take unless the profile says otherwise.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `FailedScheduling` is tolerated unless the profile says otherwise.
pub const DEFAULT_SCHEDULING_GRACE: Duration = Duration::from_secs(60);
/// How long a stop may take unless the profile says otherwise.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A checked profile, with defaults (and possibly option overrides) applied.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Stable identifier, a DNS-1123 label.
    pub slug: String,
    /// Name shown to users.
    pub display_name: String,
    /// Longer text shown to users.
    pub description: String,
    /// Whether this is the default profile.
    pub default: bool,
    /// Candidate contexts, in the order written (at least one).
    pub contexts: Vec<String>,
    /// How a context is chosen among `contexts`.
    pub placement: Placement,
    /// Container image.
    pub image: String,
    /// Namespace template.
    pub namespace: String,
    /// How long a spawn may take (default 300 s).
    pub start_timeout: Duration,
    /// How long `FailedScheduling` is tolerated (default 60 s).
    pub scheduling_grace: Duration,
    /// How long a stop may take (default 30 s).
    pub stop_timeout: Duration,
    /// A server's lifespan from when it became ready (`None`: no limit). A `UserServer` may
    /// ask for a shorter one, never a longer one.
    pub max_age: Option<Duration>,
    /// How long a server may go without activity (`None`: never idle-culled). A `UserServer`
    /// may ask for a shorter one, never a longer one.
    pub idle_timeout: Option<Duration>,
    /// Keep a failed spawn's objects (default false).
    pub keep_on_failure: bool,
    /// Probe the user URL through the ingress before reporting ready.
    pub ready_check_url: bool,
    /// Groups allowed to use the profile; empty = everyone.
    pub allowed_groups: Vec<String>,
    /// Options users choose from, by key.
    pub options: BTreeMap<String, ProfileOption>,
    /// Values only the hub may send per spawn, by name.
    pub hub_parameters: BTreeMap<String, hub_parameters::HubParameter>,
    /// Every setting as written (after merging).
    pub spec: ProfileSpec,
    ingress_urls: BTreeMap<String, String>,
    routes: BTreeMap<String, Route>,
    settings: Value,
}

/// How a server's URL path reaches it on one context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// An Ingress.
    Ingress,
    /// An HTTPRoute attached to this Gateway.
    HttpRoute {
        /// The Gateway's namespace.
        namespace: String,
        /// The Gateway's name.
        name: String,
    },
}

/// A problem with a profile's merged settings, relative to the profile.
#[derive(Debug, Clone)]
struct Issue {
    path: KeyPath,
    message: String,
}

impl Issue {
    /// An issue at the key path `keys`.
    fn at(keys: &[&str], message: String) -> Self {
        Issue { path: path(keys), message }
    }
}

fn path(keys: &[&str]) -> KeyPath {
    KeyPath(keys.iter().map(|k| Seg::Key((*k).to_owned())).collect())
}

/// The slug derived from a display name: lower case, runs of anything but
/// `[a-z0-9]` turned into `-`, trimmed to 63 characters.
pub fn derive_slug(display_name: &str) -> String {
    let mut slug = String::new();
    for c in display_name.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.truncate(63);
    slug.trim_end_matches('-').to_owned()
}

impl Profile {
    /// The public URL of `context`'s ingress controller, if `context` is one
    /// of the profile's.
    pub fn ingress_public_url(&self, context: &str) -> Option<&str> {
        self.ingress_urls.get(context).map(String::as_str)
    }

    /// How `context` routes, if it is one of the profile's.
    pub fn route(&self, context: &str) -> Option<&Route> {
        self.routes.get(context)
    }

    /// The merged settings as JSON, as templates see them (`profile`).
    pub fn settings(&self) -> &Value {
        &self.settings
    }

    /// Whether `image` is allowed by `allowed_images` (always, when empty).
    pub fn image_allowed(&self, image: &str) -> bool {
        self.spec.allowed_images.is_empty()
            || self.spec.allowed_images.iter().any(|entry| match entry.strip_suffix('*') {
                Some(prefix) => image.starts_with(prefix),
                None => image == entry,
            })
    }
}
