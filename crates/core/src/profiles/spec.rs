//! The keys a profile (or the `[defaults]` table) may set, as written.
//!
//! Every field is optional here: `[defaults]`, each profile and each option
//! override are checked against this one type, then merged (see
//! [`merge_settings`]) and checked again as a whole.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::duration;
use crate::profiles::hub_parameters::HubParameterSpec;

/// TOML has no null: this string, as a value, removes the key it is set to
/// from the settings it is merged onto (`storage = "__null__"` turns off the
/// default storage). The same holds for JSON `null`.
pub const UNSET: &str = "__null__";

/// Everything a profile may set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileSpec {
    /// Stable identifier (a DNS-1123 label); derived from `display_name` when
    /// absent.
    pub slug: Option<String>,
    /// Name shown to users.
    pub display_name: Option<String>,
    /// Longer text shown to users.
    pub description: Option<String>,
    /// Whether this is the profile used when none is asked for.
    pub default: Option<bool>,
    /// Kubeconfig context, or a list of them to place servers on.
    pub context: Option<ContextSpec>,
    /// How a server is placed when `context` is a list.
    pub placement: Option<PlacementKind>,
    /// Weights per context for `placement = "weighted"`.
    pub weights: BTreeMap<String, u32>,
    /// Public URL of the cluster's ingress controller (or Gateway), or one per context.
    pub ingress_public_url: Option<PerContext<String>>,
    /// `ingress` (default) or `httproute`, or one per context.
    pub routing: Option<PerContext<Routing>>,
    /// The Gateway HTTPRoutes attach to, `namespace/name`, or one per context: required
    /// where `routing = "httproute"`.
    pub gateway: Option<PerContext<String>>,
    /// Ingress class, annotations, path type, host and TLS (the host and TLS name also
    /// for HTTPRoutes).
    pub ingress: IngressSpec,
    /// Namespace template (default `default`).
    pub namespace: Option<String>,
    /// Whether the bundle includes the Namespace (never deleted).
    pub create_namespace: bool,
    /// Container image.
    pub image: Option<String>,
    /// Container image pull policy.
    pub image_pull_policy: Option<PullPolicy>,
    /// Container entrypoint (default: the image's).
    pub cmd: Option<Vec<String>>,
    /// Container arguments (default: the image's).
    pub args: Option<Vec<String>>,
    /// Extra environment variables; values are templates.
    pub environment: BTreeMap<String, String>,
    /// CPU limit (cores).
    pub cpu_limit: Option<Quantity>,
    /// CPU request (cores).
    pub cpu_guarantee: Option<Quantity>,
    /// Memory limit (`1Gi`...).
    pub mem_limit: Option<Quantity>,
    /// Memory request.
    pub mem_guarantee: Option<Quantity>,
    /// Other resource limits, e.g. `nvidia.com/gpu = 1`.
    pub extra_resource_limits: BTreeMap<String, Quantity>,
    /// Other resource requests.
    pub extra_resource_guarantees: BTreeMap<String, Quantity>,
    /// Pod node selector.
    pub node_selector: BTreeMap<String, String>,
    /// Pod tolerations.
    pub tolerations: Vec<Toleration>,
    /// Extra pod volumes (Kubernetes `Volume` objects).
    pub volumes: Vec<Map<String, Value>>,
    /// Extra container volume mounts (Kubernetes `VolumeMount` objects).
    pub volume_mounts: Vec<Map<String, Value>>,
    /// Persistent storage; no PVC when unset.
    pub storage: Option<StorageSpec>,
    /// How the server's claim is named: fleetspawn's own names, or KubeSpawner's (so servers
    /// moved from KubeSpawner find their users' existing claims).
    pub naming: Naming,
    /// User and group ids, privilege settings.
    pub security_context: SecuritySpec,
    /// Mount the server's ServiceAccount token into the pod (default false: a user's code
    /// gets no Kubernetes credentials unless a profile grants it rights and asks).
    pub mount_service_account_token: bool,
    /// The server's NetworkPolicy (on by default).
    pub network_policy: NetworkPolicySpec,
    /// What the server is: a Jupyter server (JupyterHub's env, readiness on `<prefix>api`) or
    /// any other web app.
    pub kind: AppKind,
    /// The port the app listens on (default 8888).
    pub port: Option<u16>,
    /// How the kubelet tells the app is ready (default: HTTP on the path the kind implies).
    pub readiness: ReadinessSpec,
    /// The route strips the URL prefix before the app sees the request (an HTTPRoute's
    /// URLRewrite), for apps that cannot be served under a path.
    pub strip_prefix: bool,
    /// Images users may pick through options (exact names, or prefixes
    /// ending with `*`); empty = no restriction.
    pub allowed_images: Vec<String>,
    /// How long a spawn may take (default 300 s).
    #[serde(with = "duration::option")]
    pub start_timeout: Option<Duration>,
    /// How long `FailedScheduling` is tolerated before the spawn fails
    /// (default 60 s).
    #[serde(with = "duration::option")]
    pub scheduling_grace: Option<Duration>,
    /// How long a stop may take (default 30 s).
    #[serde(with = "duration::option")]
    pub stop_timeout: Option<Duration>,
    /// Stop a server this long after it became ready (its lifespan); unset: no limit.
    #[serde(with = "duration::option")]
    pub max_age: Option<Duration>,
    /// Stop a server after this long without activity (needs an activity source); unset:
    /// never idle-culled.
    #[serde(with = "duration::option")]
    pub idle_timeout: Option<Duration>,
    /// Keep the objects of a failed spawn for debugging.
    pub keep_on_failure: bool,
    /// Probe the user URL through the ingress before reporting ready.
    pub ready_check_url: bool,
    /// Groups allowed to use the profile; empty = everyone.
    pub allowed_groups: Vec<String>,
    /// Strategic merge patches applied to the rendered objects, by id (applied
    /// in id order).
    pub patches: BTreeMap<String, PatchSpec>,
    /// Extra per-server objects: id → YAML template.
    pub objects: BTreeMap<String, String>,
    /// Options users choose from.
    pub options: BTreeMap<String, OptionSpec>,
    /// Values only the hub may send per spawn, by name (see `hub_parameters`).
    pub hub_parameters: BTreeMap<String, HubParameterSpec>,
}

/// `context = "a"` or `context = ["a", "b"]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged, expecting = "a context name or a list of context names")]
pub enum ContextSpec {
    /// One context.
    One(String),
    /// Candidate contexts, for placement.
    Many(Vec<String>),
}

/// A setting that is one value for every context, or a table context → value
/// (`ingress_public_url`, `routing`, `gateway`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged, expecting = "one value, or a table of context = value")]
pub enum PerContext<T> {
    /// One value for every context.
    One(T),
    /// One value per context.
    PerContext(BTreeMap<String, T>),
}

/// How a server's URL path is routed to it on a cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppKind {
    /// A Jupyter server: JupyterHub's variables in its env, ready when `<prefix>api` answers.
    #[default]
    Jupyter,
    /// Any web app: no JupyterHub variables, ready when its path answers.
    Web,
}

/// The container's readiness probe.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadinessSpec {
    /// `"http"` (the default), `"tcp"` or `"none"`.
    #[serde(rename = "type")]
    pub probe: ProbeType,
    /// HTTP: the path asked (a plain-string template); default `<url_prefix>api` for Jupyter,
    /// the URL prefix for a web app (`/` when the route strips it).
    pub path: Option<String>,
    /// The port probed (default: the app's `port`).
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeType {
    #[default]
    Http,
    Tcp,
    None,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Naming {
    /// The claim is named like the server's other objects (`fs-<key>`).
    #[default]
    Fleetspawn,
    /// The claim is named as KubeSpawner 7 names it (`storage.claim_name_template`, its
    /// `safe` slug scheme).
    Kubespawner,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// An Ingress (`ingress` settings), for the cluster's ingress controller.
    #[default]
    Ingress,
    /// A Gateway API HTTPRoute attached to the cluster's Gateway (`gateway`).
    Httproute,
}

/// The `pathType` of the Ingress rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum PathType {
    /// Matched as the controller does (a prefix, for every common controller); passes
    /// ingress-nginx's strict path validation for any username.
    #[default]
    ImplementationSpecific,
    /// Element-wise prefix matching; ingress-nginx's strict validation refuses paths with
    /// characters other than letters, digits, `/`, `_` and `-` (`first.last`, `a@b.org`).
    Prefix,
}

/// The placement strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementKind {
    /// The first context, in list order, whose cluster is healthy.
    FirstHealthy,
    /// The healthy context running the fewest servers.
    LeastLoaded,
    /// A healthy context drawn at random by `weights`.
    Weighted,
}

/// Kubernetes image pull policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull when the image is missing.
    IfNotPresent,
    /// Never pull.
    Never,
}

/// Ingress settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngressSpec {
    /// `spec.ingressClassName`.
    pub class_name: Option<String>,
    /// Annotations of the Ingress.
    pub annotations: BTreeMap<String, String>,
    /// The rule's `pathType` (default `ImplementationSpecific`).
    pub path_type: PathType,
    /// Host the rule matches; any host when unset.
    pub host: Option<String>,
    /// Secret holding the TLS certificate for `host`; no TLS when unset.
    pub tls_secret: Option<String>,
}

/// A Kubernetes toleration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Toleration {
    /// Taint key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Exists` or `Equal`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<TolerationOperator>,
    /// Taint value (with `Equal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    /// How long a `NoExecute` taint is tolerated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// Toleration operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TolerationOperator {
    /// Any value.
    Exists,
    /// The given value.
    Equal,
}

/// Taint effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TaintEffect {
    /// Do not schedule.
    NoSchedule,
    /// Avoid scheduling.
    PreferNoSchedule,
    /// Evict.
    NoExecute,
}

/// A PersistentVolumeClaim per server.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    /// Requested size (`10Gi`).
    pub capacity: Quantity,
    /// Storage class; the cluster's default when unset.
    #[serde(default)]
    pub storage_class: Option<String>,
    /// Access modes (default `["ReadWriteOnce"]`).
    #[serde(default = "default_access_modes")]
    pub access_modes: Vec<String>,
    /// Where the volume is mounted (default `/home/jovyan`).
    #[serde(default = "default_mount_path")]
    pub mount_path: String,
    /// With `naming = "kubespawner"`: KubeSpawner's `pvc_name_template` (default Zero to
    /// JupyterHub's `claim-{username}{servername}`).
    #[serde(default)]
    pub claim_name_template: Option<String>,
}

/// Zero to JupyterHub's claim name template.
pub const Z2JH_CLAIM_NAME_TEMPLATE: &str = "claim-{username}{servername}";

impl StorageSpec {
    /// The KubeSpawner template of the claim's name.
    pub fn claim_name_template(&self) -> &str {
        self.claim_name_template.as_deref().unwrap_or(Z2JH_CLAIM_NAME_TEMPLATE)
    }
}

fn default_access_modes() -> Vec<String> {
    vec!["ReadWriteOnce".to_owned()]
}

fn default_mount_path() -> String {
    "/home/jovyan".to_owned()
}

/// User, group and privilege settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySpec {
    /// `runAsUser`.
    pub uid: Option<i64>,
    /// `runAsGroup`.
    pub gid: Option<i64>,
    /// Pod `fsGroup`.
    pub fs_gid: Option<i64>,
    /// `runAsNonRoot` (default true).
    pub run_as_non_root: bool,
    /// `allowPrivilegeEscalation` (default false).
    pub allow_privilege_escalation: bool,
}

impl Default for SecuritySpec {
    fn default() -> Self {
        Self { uid: None, gid: None, fs_gid: None, run_as_non_root: true, allow_privilege_escalation: false }
    }
}

/// The per-server NetworkPolicy: who may reach the server's port, and the addresses it may
/// not reach (the cloud metadata service, which hands out the node's credentials).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkPolicySpec {
    /// Render it (default true).
    pub enabled: bool,
    /// Namespaces whose pods may reach the server's port: the ingress controller's
    /// (default `["ingress-nginx"]`).
    pub ingress_from_namespaces: Vec<String>,
    /// Address ranges that may reach it too: the hub's connect range, or the nodes' for an
    /// ingress controller on the host network.
    pub ingress_from_cidrs: Vec<String>,
    /// Addresses the server may not reach; everything else is open (default the metadata
    /// service, `169.254.169.254/32`).
    pub egress_deny_cidrs: Vec<String>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            ingress_from_namespaces: vec!["ingress-nginx".to_owned()],
            ingress_from_cidrs: Vec::new(),
            egress_deny_cidrs: vec!["169.254.169.254/32".to_owned()],
        }
    }
}

/// A strategic merge patch applied to rendered objects.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PatchSpec {
    /// Which objects it applies to.
    pub target: PatchTarget,
    /// The patch: a YAML template.
    pub patch: String,
}

/// Objects a patch applies to.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PatchTarget {
    /// Object kind (`Pod`, `Service`...).
    pub kind: String,
    /// Object name (a template); every object of the kind when unset.
    #[serde(default)]
    pub name: Option<String>,
}

/// A user-selectable option.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptionSpec {
    /// Label shown to users.
    pub display_name: Option<String>,
    /// Help text.
    pub description: Option<String>,
    /// Key of the choice used when the user picks nothing.
    pub default: Option<String>,
    /// Choices, by key.
    pub choices: BTreeMap<String, ChoiceSpec>,
    /// Free text the user may type instead of a choice.
    pub free_text: Option<FreeTextSpec>,
}

/// One choice of an option.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChoiceSpec {
    /// Label shown to users.
    pub display_name: Option<String>,
    /// Help text.
    pub description: Option<String>,
    /// Profile settings this choice overrides (merged like `[defaults]`).
    #[serde(rename = "override")]
    pub overrides: Map<String, Value>,
}

/// Free text accepted instead of a choice.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FreeTextSpec {
    /// Label shown to users.
    pub display_name: Option<String>,
    /// The whole text must match this regex.
    pub regex: String,
    /// Settings overridden, with `{value}` in strings replaced by the text.
    #[serde(rename = "override")]
    pub overrides: Map<String, Value>,
}

/// A Kubernetes resource quantity (`500m`, `1.5`, `2Gi`); numbers are
/// accepted and kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Quantity(pub String);

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a quantity such as 2, 0.5, \"500m\" or \"1Gi\"")]
        enum Raw {
            Int(i64),
            Float(f64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Int(n) => n.to_string(),
            Raw::Float(x) => x.to_string(),
            Raw::Text(s) => s,
        };
        if is_quantity(&text) {
            Ok(Quantity(text))
        } else {
            Err(serde::de::Error::custom(format!("invalid quantity {text:?}: expected e.g. 2, 0.5, \"500m\" or \"1Gi\"")))
        }
    }
}

/// Kubernetes quantity syntax: a non-negative decimal then an optional
/// binary (`Ki`..`Ei`), decimal (`m`, `k`, `M`..`E`) or exponent suffix.
fn is_quantity(s: &str) -> bool {
    let number_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let number = number.strip_prefix('+').unwrap_or(number);
    let valid_number = !number.is_empty() && number != "." && number.matches('.').count() <= 1 && number.chars().all(|c| c.is_ascii_digit() || c == '.');
    let valid_suffix = matches!(suffix, "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "m" | "k" | "M" | "G" | "T" | "P" | "E")
        || suffix
            .strip_prefix(['e', 'E'])
            .map(|exp| exp.strip_prefix(['+', '-']).unwrap_or(exp))
            .is_some_and(|exp| !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit()));
    valid_number && valid_suffix
}

/// Whether a settings value means "remove this key".
pub fn is_unset(value: &Value) -> bool {
    value.is_null() || value.as_str() == Some(UNSET)
}

/// Merges `over` onto `base`: tables merge key by key, recursively; an
/// [`UNSET`] (or null) value removes the key; anything else (lists included)
/// replaces.
pub fn merge_settings(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                if is_unset(value) {
                    base.remove(key);
                } else if let Some(existing) = base.get_mut(key) {
                    merge_settings(existing, value);
                } else {
                    base.insert(key.clone(), without_unset(value));
                }
            }
        }
        (base, over) => *base = without_unset(over),
    }
}

/// `value` with every [`UNSET`] table entry removed: what it means when it is
/// merged onto nothing.
pub fn without_unset(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.iter().filter(|(_, v)| !is_unset(v)).map(|(k, v)| (k.clone(), without_unset(v))).collect()),
        Value::Array(items) => Value::Array(items.iter().map(without_unset).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_merge_lists_replace_unset_removes() {
        let mut base = json!({
            "image": "a",
            "environment": {"A": "1", "B": "2"},
            "tolerations": [{"key": "x"}],
            "storage": {"capacity": "1Gi"},
            "node_selector": {"zone": "z1"},
        });
        merge_settings(
            &mut base,
            &json!({
                "environment": {"B": UNSET, "C": "3"},
                "tolerations": [{"key": "y"}],
                "storage": UNSET,
                "node_selector": null,
                "cpu_limit": 2,
                "volumes": [{"name": "v", "x": UNSET}],
            }),
        );
        assert_eq!(
            base,
            json!({
                "image": "a",
                "environment": {"A": "1", "C": "3"},
                "tolerations": [{"key": "y"}],
                "cpu_limit": 2,
                "volumes": [{"name": "v"}],
            })
        );
    }

    #[test]
    fn quantities() {
        for ok in ["1", "0.5", "500m", "1Gi", "2G", "1e3", "+1", ".5"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "1GB", "abc", "1.2.3", "-1", "1e", "."] {
            assert!(!is_quantity(bad), "{bad}");
        }
        let q: Quantity = serde_json::from_value(json!(0.5)).unwrap();
        assert_eq!(q.0, "0.5");
        let q: Quantity = serde_json::from_value(json!(4)).unwrap();
        assert_eq!(q.0, "4");
        assert!(serde_json::from_value::<Quantity>(json!("lots")).is_err());
    }
}
