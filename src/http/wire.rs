//! The wire types of `/api/v1`: what is sent and received, with the OpenAPI schema derived
//! from the same types, so the document describes exactly what is sent. Converted from the
//! service's and the core's types; only `http/` knows these shapes.

use std::collections::BTreeMap;

use fleetspawn_core::instance as core_instance;
use fleetspawn_core::lifecycle as core_lifecycle;
use fleetspawn_core::profiles::{Profile, ProfileSet};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::http::auth::Caller;
use crate::kube::fleet;

/// The JSON body of every error response.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// A stable, machine-readable code such as `bad_option` or `too_many_spawns`.
    pub error: String,
    /// What went wrong, in a sentence.
    pub detail: String,
    /// The input at fault (`options.image`, `env.FOO`, `user`...), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A profile the caller may use.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProfileInfo {
    pub slug: String,
    pub display_name: String,
    pub description: String,
    /// The clusters (kubeconfig contexts) it can run on.
    pub clusters: Vec<String>,
    /// Whether it is the default profile.
    pub default: bool,
    pub options: Vec<OptionInfo>,
    /// How long a spawn of it may take, in whole seconds (a hub waits at least this long).
    #[schema(minimum = 1)]
    pub start_timeout: u64,
}

/// One user-selectable option of a profile.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OptionInfo {
    /// The key to send in `options`.
    pub name: String,
    pub display_name: String,
    /// Help text.
    pub description: String,
    /// The listed choices (may be empty for a free-text-only option).
    pub choices: Vec<ChoiceInfo>,
    /// The value preselected.
    pub default: Option<String>,
    /// Present when a free-text value is accepted.
    pub free_text: Option<FreeTextInfo>,
}

/// One listed choice of an option.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChoiceInfo {
    pub value: String,
    pub display_name: String,
    /// Help text.
    pub description: String,
}

/// How a free-text option value is checked.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FreeTextInfo {
    /// The regular expression the whole value must match.
    pub regex: String,
    /// What to type, in words.
    pub hint: String,
}

impl ProfileInfo {
    /// The wire form of `profile`.
    pub fn new(profile: &Profile, is_default: bool) -> ProfileInfo {
        let options = profile
            .options
            .iter()
            .map(|(name, opt)| OptionInfo {
                name: name.clone(),
                display_name: opt.display_name.clone(),
                description: opt.description.clone(),
                choices: opt
                    .choices
                    .iter()
                    .map(|(value, c)| ChoiceInfo { value: value.clone(), display_name: c.display_name.clone(), description: c.description.clone() })
                    .collect(),
                default: opt.default.clone(),
                free_text: opt.free_text.as_ref().map(|f| FreeTextInfo { regex: f.regex.clone(), hint: f.display_name.clone() }),
            })
            .collect();
        ProfileInfo {
            slug: profile.slug.clone(),
            display_name: profile.display_name.clone(),
            description: profile.description.clone(),
            clusters: profile.contexts.clone(),
            default: is_default,
            options,
            start_timeout: profile.start_timeout.as_secs().max(1),
        }
    }
}

/// The profiles of `set` that `caller` may use, the default first.
pub fn visible_profiles(set: &ProfileSet, caller: &Caller) -> Vec<ProfileInfo> {
    let default = set.default_profile().map(|p| p.slug.clone());
    let mut list: Vec<ProfileInfo> =
        set.iter().filter(|p| caller.can_use_profile(&p.allowed_groups)).map(|p| ProfileInfo::new(p, default.as_deref() == Some(p.slug.as_str()))).collect();
    list.sort_by_key(|p| !p.default);
    list
}

/// The body of a start request. Every field may be left out: `{}` starts the default profile.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StartRequest {
    /// The profile's slug; the default profile when absent.
    pub profile: Option<String>,
    /// Option values by option name; absent options take their default.
    pub options: BTreeMap<String, String>,
    /// Extra environment variables for the server (JupyterHub passes its API token here).
    pub env: BTreeMap<String, String>,
    /// The path the server is served under (e.g. `/user/alice/`), when a hub proxies it.
    pub url_prefix: Option<String>,
    /// Values of the profile's `hub_parameters` (a uid, a project claim...), by name: only the
    /// hub may send them; each is checked against the profile's declaration (type, bounds,
    /// regex) and a bad one is a 400 naming `hub_parameters.<name>`.
    #[schema(value_type = Object)]
    pub hub_parameters: BTreeMap<String, serde_json::Value>,
}

/// The `/readyz` answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Readiness {
    /// True when the registry is synced for every reachable cluster.
    pub ready: bool,
    /// Reachable clusters whose registry is not synced yet.
    pub unsynced_clusters: Vec<String>,
    /// The error of the last profiles reload, when it failed (the previous profiles are in use).
    pub profiles_error: Option<String>,
}

/// A user and one of their servers; the default server's name is empty.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ServerPath {
    /// The user's name: at most 255 bytes of UTF-8, no control or invisible formatting
    /// characters (zero-width, byte order mark, bidirectional controls), no `/` or `\`, not
    /// `.` or `..`. Anything else is a 400 naming the field.
    #[param(min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1F\x7F/\\]+$")]
    pub user: String,
    /// The server's name, with the rules of `user` (the route `/users/{user}/server` is the
    /// default server, whose name is empty).
    #[serde(default)]
    #[param(max_length = 255, pattern = r"^[^\x00-\x1F\x7F/\\]*$")]
    pub server: String,
}

/// `DELETE` query parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default)]
pub struct StopQuery {
    /// Also delete the server's persistent volume claim (its files).
    pub remove: bool,
}

/// Filters of `GET /instances`; each one narrows the list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default, deny_unknown_fields)]
pub struct InstanceFilter {
    pub cluster: Option<String>,
    pub profile: Option<String>,
    pub state: Option<InstanceState>,
    pub user: Option<String>,
}

impl InstanceFilter {
    /// Whether `i` passes every filter that is set.
    pub fn matches(&self, i: &core_instance::InstanceView) -> bool {
        let eq = |filter: &Option<String>, value: &str| filter.as_deref().is_none_or(|f| f == value);
        eq(&self.cluster, &i.cluster) && eq(&self.profile, &i.profile) && eq(&self.user, &i.user) && self.state.is_none_or(|s| s == i.state.into())
    }
}

/// The state of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Failed,
    /// Its cluster is unreachable or not synced yet: the server may well be running.
    Unknown,
}

impl From<core_instance::InstanceState> for InstanceState {
    fn from(s: core_instance::InstanceState) -> Self {
        use core_instance::InstanceState as S;
        match s {
            S::Pending => InstanceState::Pending,
            S::Running => InstanceState::Running,
            S::Stopping => InstanceState::Stopping,
            S::Failed => InstanceState::Failed,
            S::Unknown => InstanceState::Unknown,
        }
    }
}

/// One user server.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct InstanceView {
    /// Unique key of the instance across clusters.
    pub key: String,
    pub user: String,
    /// The server's name; empty for the user's default server.
    pub server: String,
    pub profile: String,
    /// The kubeconfig context (cluster) it runs on.
    pub cluster: String,
    pub state: InstanceState,
    /// Where the server answers, once known.
    pub url: Option<String>,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339: when the registry last heard of the instance from its cluster.
    pub last_seen: Option<String>,
    /// Why it failed, when it did.
    pub cause: Option<String>,
    /// Why this cluster was chosen (spawns in flight).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
}

impl From<core_instance::InstanceView> for InstanceView {
    fn from(v: core_instance::InstanceView) -> Self {
        let core_instance::InstanceView { key, user, server, profile, cluster, state, url, started_at, last_seen, cause, placement, failure: _ } = v;
        InstanceView { key, user, server, profile, cluster, state: state.into(), url, started_at, last_seen, cause, placement }
    }
}

/// One step of a spawn's progress, in the shape JupyterHub's progress API uses: the `data` of
/// every SSE event, whose name is `progress`, then `ready` or `failed` for the last one.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ProgressEvent {
    /// 0..=100.
    pub progress: u8,
    pub message: String,
    /// Present (true) on the final event of a successful spawn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// The user's URL, with `ready`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Present (true) on the final event of a failed spawn; `message` is the cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<bool>,
}

impl From<core_lifecycle::ProgressEvent> for ProgressEvent {
    fn from(e: core_lifecycle::ProgressEvent) -> Self {
        let core_lifecycle::ProgressEvent { progress, message, ready, url, failed, failure: _ } = e;
        ProgressEvent { progress, message, ready, url, failed }
    }
}

/// The health of one cluster (kubeconfig context) at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Health {
    pub context: String,
    pub server: Option<String>,
    pub healthy: bool,
    /// The API server's version (`v1.34.4`), when reachable.
    pub version: Option<String>,
    /// Round-trip time of the version request, in milliseconds.
    pub latency_ms: Option<u64>,
    /// Why the cluster is unhealthy.
    pub cause: Option<String>,
}

impl From<fleet::Health> for Health {
    fn from(h: fleet::Health) -> Self {
        let fleet::Health { context, server, healthy, version, latency_ms, cause } = h;
        Health { context, server, healthy, version, latency_ms, cause }
    }
}
