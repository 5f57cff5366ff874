//! The `UserServer` custom resource (`userservers.fleetspawn.io`, v1alpha1): the durable record
//! of one user's server, what should run (`spec`) and what was observed (`status`). This is the
//! types, the CRD they generate (`fleetspawn crd`) and the pure helpers the reconciler needs;
//! nothing here talks to a cluster (`home` does).
//!
//! The hub's token never goes into a spec or a status: a hub that sends env names a Secret in
//! the same namespace (`spec.envSecretRef`).

use std::collections::BTreeMap;
use std::time::Duration;

use fleetspawn_core::lifecycle::FailureKind;
use fleetspawn_core::naming::InstanceKey;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The finalizer on every UserServer: deleting one removes its remote objects first.
pub const FINALIZER: &str = "fleetspawn.io/cleanup";

/// Annotation on a UserServer: deleting it (or stopping it) also deletes the server's storage
/// (its PersistentVolumeClaims): "delete forever".
pub const REMOVE_STORAGE: &str = "fleetspawn.io/remove-storage";

/// Condition type: the server answers (its Pod is Ready).
pub const CONDITION_READY: &str = "Ready";
/// Condition type: a spawn or a stop is under way.
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Condition type: the server cannot make progress without help (a failure, a timeout).
pub const CONDITION_STALLED: &str = "Stalled";

/// A duration as `spec.lifespan` and `spec.idleTimeout` accept it (what
/// `fleetspawn_core::duration::parse` reads: `90`, `"90s"`, `"5m"`, `"1h30m"`, `"500ms"`),
/// checked by the API server.
const DURATION_PATTERN: &str = r"^([0-9]+|([0-9]+(ms|s|m|h))+)$";

/// What should run: one server of one user.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "fleetspawn.io",
    version = "v1alpha1",
    kind = "UserServer",
    namespaced,
    status = "UserServerStatus",
    shortname = "us",
    doc = "One user's server: what should run (spec) and what fleetspawn observed (status).",
    // Raw JSON: clippy takes the structured `printcolumn(type_ = ...)` form for duplicated attributes.
    printcolumn = r#"{"name": "User", "type": "string", "jsonPath": ".spec.user"}"#,
    printcolumn = r#"{"name": "Server", "type": "string", "jsonPath": ".spec.server"}"#,
    printcolumn = r#"{"name": "Profile", "type": "string", "jsonPath": ".spec.profile"}"#,
    printcolumn = r#"{"name": "Cluster", "type": "string", "jsonPath": ".status.cluster"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "URL", "type": "string", "jsonPath": ".status.url"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct UserServerSpec {
    /// The user (as the hub names them).
    pub user: String,
    /// The server's name; empty for the user's default server.
    #[serde(default)]
    pub server: String,
    /// The profile's slug.
    pub profile: String,
    /// The user's options (resolved against the profile's options).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// false stops the server without deleting this record.
    #[serde(default = "default_started")]
    pub started: bool,
    /// The URL path prefix the hub routes (only the hub role may set it, and only to the
    /// user's own path); default
    /// `/user/<user>/[<server>/]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_prefix: Option<String>,
    /// Stop the server this long after it started (within the profile's bounds), e.g. "8h".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub lifespan: Option<String>,
    /// Stop the server after this long without activity (within the profile's bounds), e.g. "1h".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub idle_timeout: Option<String>,
    /// The hub's per-spawn parameters (only the hub role may send them), as text, checked
    /// against the profile's `hub_parameters` declarations when the server is rendered.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hub_parameters: BTreeMap<String, String>,
    /// A Secret in the same namespace holding the env a hub sends (its API token...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_secret_ref: Option<SecretRef>,
}

fn default_started() -> bool {
    true
}

/// A Secret in the UserServer's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    /// The Secret's name.
    pub name: String,
}

impl UserServerSpec {
    /// `spec.lifespan` as a duration (`None` when not set).
    pub fn lifespan_duration(&self) -> Result<Option<Duration>, String> {
        parse_optional(self.lifespan.as_deref(), "spec.lifespan")
    }

    /// `spec.idleTimeout` as a duration (`None` when not set).
    pub fn idle_timeout_duration(&self) -> Result<Option<Duration>, String> {
        parse_optional(self.idle_timeout.as_deref(), "spec.idleTimeout")
    }
}

fn parse_optional(text: Option<&str>, field: &str) -> Result<Option<Duration>, String> {
    text.map(|t| fleetspawn_core::duration::parse(t).map_err(|e| format!("{field}: {e}"))).transpose()
}

/// Where a server is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Accepted, nothing created yet.
    Pending,
    /// Objects applied, the Pod is not ready yet.
    Starting,
    /// The Pod has been ready (it stays Running, with `Ready=False`, if readiness blips).
    Running,
    /// The remote objects are being deleted.
    Stopping,
    /// Nothing runs (`spec.started=false`, or culled).
    Stopped,
    /// The spawn failed; `status.failure` says why.
    Failed,
    /// The server's cluster cannot be reached: its state is not known.
    Unknown,
}

/// What fleetspawn observed of the server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserServerStatus {
    /// Where the server is in its life (none until fleetspawn first looked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The kubeconfig context the server was placed on (written once, before any remote object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The namespace of the remote objects on that cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The user's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Why this cluster was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
    /// When the current spawn was accepted (its start timeout runs from here, across restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at: Option<Time>,
    /// The UID of the server's Pod.
    #[serde(default, rename = "podUID", skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Every remote object created for the server (the only inventory cleanup follows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
    /// When the server's Pod was first ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// The user's last activity fleetspawn saw (from the hub, or the routes it drives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<Time>,
    /// The spawn's progress (while starting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Why the server failed, or why fleetspawn stopped it (culling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureStatus>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions: Ready, Progressing, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl UserServerStatus {
    /// A merge patch that sets this whole status: the fields it does not have are removed.
    pub fn as_merge_patch(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({}));
        if let serde_json::Value::Object(map) = &mut value {
            for field in STATUS_FIELDS {
                map.entry(*field).or_insert(serde_json::Value::Null);
            }
        }
        serde_json::json!({ "status": value })
    }
}

/// Every field of the status, as written (see [`UserServerStatus::as_merge_patch`]).
const STATUS_FIELDS: &[&str] = &[
    "phase",
    "cluster",
    "namespace",
    "url",
    "placement",
    "acceptedAt",
    "podUID",
    "inventory",
    "startedAt",
    "lastActivity",
    "progress",
    "failure",
    "observedGeneration",
    "conditions",
];

/// One remote object of a server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    pub api_version: String,
    pub kind: String,
    /// None for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

/// A spawn's progress.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Progress {
    /// 0 to 100.
    #[schemars(range(max = 100))]
    pub percent: u8,
    #[serde(default)]
    pub message: String,
}

/// Why a server failed or was stopped by fleetspawn.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct FailureStatus {
    pub reason: FailureReason,
    #[serde(default)]
    pub message: String,
}

/// A typed failure: `fleetspawn_core::lifecycle::FailureKind`, plus the culler's reasons.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FailureReason {
    ImagePull,
    Unschedulable,
    OutOfMemory,
    Quota,
    CrashLoop,
    Timeout,
    ClusterUnreachable,
    Cancelled,
    Other,
    /// Culled: the server reached its lifespan.
    MaxAge,
    /// Culled: the server was idle for longer than its idle timeout.
    Idle,
}

impl From<FailureKind> for FailureReason {
    fn from(kind: FailureKind) -> Self {
        match kind {
            FailureKind::ImagePull => FailureReason::ImagePull,
            FailureKind::Unschedulable => FailureReason::Unschedulable,
            FailureKind::OutOfMemory => FailureReason::OutOfMemory,
            FailureKind::Quota => FailureReason::Quota,
            FailureKind::CrashLoop => FailureReason::CrashLoop,
            FailureKind::Timeout => FailureReason::Timeout,
            FailureKind::ClusterUnreachable => FailureReason::ClusterUnreachable,
            FailureKind::Cancelled => FailureReason::Cancelled,
            FailureKind::Other => FailureReason::Other,
        }
    }
}

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// The name of the UserServer of `user`'s server `server` (`""`: the default server): the
/// instance key, a DNS-1123 label.
pub fn object_name(user: &str, server: &str) -> String {
    InstanceKey::new(user, server).key().to_string()
}

impl UserServer {
    /// A new UserServer (started, no status) for `user`'s server `server` in `namespace`.
    pub fn for_server(namespace: &str, user: &str, server: &str, profile: &str, options: BTreeMap<String, String>) -> UserServer {
        let metadata = ObjectMeta { name: Some(object_name(user, server)), namespace: Some(namespace.to_string()), ..Default::default() };
        let spec = UserServerSpec {
            user: user.to_string(),
            server: server.to_string(),
            profile: profile.to_string(),
            options,
            started: true,
            url_prefix: None,
            lifespan: None,
            idle_timeout: None,
            hub_parameters: BTreeMap::new(),
            env_secret_ref: None,
        };
        UserServer { metadata, spec, status: None }
    }
}

/// The condition of type `type_`, if there is one.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Sets the condition of type `type_` (as apimachinery's `meta.SetStatusCondition`):
/// `lastTransitionTime` becomes `now` only when the condition is new or its status changed;
/// reason, message and observedGeneration are updated in place. Returns whether anything
/// changed, so a status is written only when it changed (never stamping the time on every
/// reconcile). `reason` should be a non-empty CamelCase word (the API requires one).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: Time,
) -> bool {
    let status = status.as_str();
    let Some(existing) = conditions.iter_mut().find(|c| c.type_ == type_) else {
        conditions.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation,
            last_transition_time: now,
        });
        return true;
    };
    let mut changed = false;
    if existing.status != status {
        existing.status = status.to_string();
        existing.last_transition_time = now;
        changed = true;
    }
    if existing.reason != reason {
        existing.reason = reason.to_string();
        changed = true;
    }
    if existing.message != message {
        existing.message = message.to_string();
        changed = true;
    }
    if existing.observed_generation != observed_generation {
        existing.observed_generation = observed_generation;
        changed = true;
    }
    changed
}

/// The CRD as YAML (what `fleetspawn crd` prints).
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt as _;
    serde_yaml::to_string(&UserServer::crd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::{CustomResourceExt as _, Resource as _};

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("timestamp"))
    }

    #[test]
    fn the_crd_has_its_names_columns_and_status_subresource() {
        let crd = UserServer::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("userservers.fleetspawn.io"));
        assert_eq!(crd.spec.group, "fleetspawn.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, "UserServer");
        assert_eq!(crd.spec.names.short_names.as_deref(), Some(&["us".to_string()][..]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        let columns: Vec<(&str, &str, &str)> =
            version.additional_printer_columns.iter().flatten().map(|c| (c.name.as_str(), c.type_.as_str(), c.json_path.as_str())).collect();
        assert_eq!(
            columns,
            [
                ("User", "string", ".spec.user"),
                ("Server", "string", ".spec.server"),
                ("Profile", "string", ".spec.profile"),
                ("Cluster", "string", ".status.cluster"),
                ("Phase", "string", ".status.phase"),
                ("URL", "string", ".status.url"),
                ("Age", "date", ".metadata.creationTimestamp"),
            ]
        );
        assert_eq!(UserServer::api_version(&()), "fleetspawn.io/v1alpha1");
    }

    #[test]
    fn the_schema_has_camel_case_fields_defaults_and_standard_conditions() {
        let crd = serde_json::to_value(UserServer::crd()).expect("json");
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
        let spec = &schema["spec"];
        assert_eq!(spec["required"], serde_json::json!(["profile", "user"]));
        for field in ["user", "server", "profile", "options", "started", "urlPrefix", "lifespan", "idleTimeout", "envSecretRef"] {
            assert!(spec["properties"].get(field).is_some(), "spec.{field} missing: {spec}");
        }
        assert_eq!(spec["properties"]["started"]["type"], "boolean");
        assert_eq!(spec["properties"]["started"]["default"], true);
        assert_eq!(spec["properties"]["lifespan"]["pattern"], DURATION_PATTERN);
        let status = &schema["status"]["properties"];
        for field in STATUS_FIELDS {
            assert!(status.get(field).is_some(), "status.{field} missing: {status}");
        }
        assert_eq!(status["phase"]["enum"], serde_json::json!(["Pending", "Starting", "Running", "Stopping", "Stopped", "Failed", "Unknown"]));
        assert_eq!(status["conditions"]["x-kubernetes-list-type"], "map");
        assert_eq!(status["conditions"]["items"]["required"], serde_json::json!(["lastTransitionTime", "message", "reason", "status", "type"]));
        assert!(status["failure"]["properties"]["reason"]["enum"].as_array().is_some_and(|r| r.contains(&"MaxAge".into()) && r.contains(&"Idle".into())));
    }

    #[test]
    fn the_yaml_is_one_crd_document() {
        let yaml = crd_yaml().expect("yaml");
        assert!(yaml.starts_with("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"), "{yaml}");
        let back: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_yaml::from_str(&yaml).expect("parses back");
        assert_eq!(back, UserServer::crd());
    }

    #[test]
    fn an_empty_status_and_a_minimal_spec_deserialize_with_defaults() {
        let status: UserServerStatus = serde_json::from_str("{}").expect("empty status");
        assert_eq!(status, UserServerStatus::default());
        let spec: UserServerSpec = serde_json::from_str(r#"{"user":"alice","profile":"a"}"#).expect("minimal spec");
        assert!(spec.started && spec.server.is_empty() && spec.options.is_empty() && spec.env_secret_ref.is_none());
    }

    #[test]
    fn status_round_trips_with_its_wire_names() {
        let status = UserServerStatus {
            phase: Some(Phase::Failed),
            cluster: Some("cluster-a".into()),
            pod_uid: Some("1234".into()),
            inventory: vec![InventoryEntry { api_version: "v1".into(), kind: "Pod".into(), namespace: Some("ns".into()), name: "fs-alice".into() }],
            started_at: Some(at(1_700_000_000)),
            progress: Some(Progress { percent: 40, message: "pulling".into() }),
            failure: Some(FailureStatus { reason: FailureKind::ImagePull.into(), message: "no such image".into() }),
            observed_generation: Some(3),
            ..Default::default()
        };
        let json = serde_json::to_value(&status).expect("json");
        assert_eq!(json["podUID"], "1234");
        assert_eq!(json["startedAt"], "2023-11-14T22:13:20Z");
        assert_eq!(json["failure"]["reason"], "ImagePull");
        assert_eq!(json["inventory"][0]["apiVersion"], "v1");
        assert_eq!(json["observedGeneration"], 3);
        assert!(json.get("conditions").is_none() && json.get("url").is_none());
        assert_eq!(serde_json::from_value::<UserServerStatus>(json).expect("back"), status);
    }

    #[test]
    fn a_status_patch_removes_the_fields_it_does_not_have() {
        let full = UserServerStatus {
            phase: Some(Phase::Running),
            cluster: Some("c".into()),
            namespace: Some("n".into()),
            url: Some("u".into()),
            placement: Some("p".into()),
            accepted_at: Some(at(1)),
            pod_uid: Some("1".into()),
            inventory: vec![InventoryEntry { api_version: "v1".into(), kind: "Pod".into(), namespace: None, name: "p".into() }],
            started_at: Some(at(2)),
            last_activity: Some(at(3)),
            progress: Some(Progress::default()),
            failure: Some(FailureStatus { reason: FailureReason::Idle, message: String::new() }),
            observed_generation: Some(1),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "R".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: at(4),
            }],
        };
        let keys: Vec<String> = serde_json::to_value(&full).expect("json").as_object().expect("object").keys().cloned().collect();
        let mut listed: Vec<String> = STATUS_FIELDS.iter().map(|f| f.to_string()).collect();
        listed.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, listed, "every status field is in STATUS_FIELDS");
        let patch = UserServerStatus { phase: Some(Phase::Stopped), ..Default::default() }.as_merge_patch();
        assert_eq!(patch["status"]["phase"], "Stopped");
        assert!(patch["status"]["cluster"].is_null() && patch["status"].get("cluster").is_some(), "unset fields are removed: {patch}");
    }

    #[test]
    fn every_failure_kind_has_a_reason_of_the_same_name() {
        use FailureKind::*;
        for kind in [ImagePull, Unschedulable, OutOfMemory, Quota, CrashLoop, Timeout, ClusterUnreachable, Cancelled, Other] {
            let reason = serde_json::to_value(FailureReason::from(kind)).expect("json");
            assert_eq!(reason.as_str(), Some(format!("{kind:?}").as_str()));
        }
    }

    #[test]
    fn names_follow_the_instance_key() {
        assert_eq!(object_name("alice", ""), "alice");
        assert_eq!(object_name("alice", "lab"), "alice--lab");
        let odd = object_name("Alice@Example.org", "My Lab");
        assert!(fleetspawn_core::naming::is_dns1123_label(&odd), "{odd}");
        assert_eq!(odd, InstanceKey::new("Alice@Example.org", "My Lab").key());
    }

    #[test]
    fn a_new_user_server_is_started_and_named() {
        let options = BTreeMap::from([("image".to_string(), "lab".to_string())]);
        let us = UserServer::for_server("fleetspawn", "alice", "lab", "a", options.clone());
        assert_eq!(us.metadata.name.as_deref(), Some("alice--lab"));
        assert_eq!(us.metadata.namespace.as_deref(), Some("fleetspawn"));
        assert!(us.metadata.finalizers.is_none(), "the controller adds the finalizer, not a client");
        assert_eq!((us.spec.user.as_str(), us.spec.server.as_str(), us.spec.profile.as_str()), ("alice", "lab", "a"));
        assert_eq!(us.spec.options, options);
        assert!(us.spec.started && us.status.is_none());
        let json = serde_json::to_value(&us).expect("json");
        assert_eq!(json["apiVersion"], "fleetspawn.io/v1alpha1");
        assert_eq!(json["kind"], "UserServer");
    }

    #[test]
    fn durations_are_checked() {
        let mut spec = UserServer::for_server("ns", "u", "", "a", BTreeMap::new()).spec;
        assert_eq!(spec.lifespan_duration(), Ok(None));
        spec.lifespan = Some("8h".into());
        spec.idle_timeout = Some("1h30m".into());
        assert_eq!(spec.lifespan_duration(), Ok(Some(Duration::from_secs(8 * 3600))));
        assert_eq!(spec.idle_timeout_duration(), Ok(Some(Duration::from_secs(5400))));
        spec.idle_timeout = Some("8 days".into());
        assert!(spec.idle_timeout_duration().is_err_and(|e| e.starts_with("spec.idleTimeout: ")));
        // The API server's pattern accepts what the parser accepts.
        let pattern = regex::Regex::new(DURATION_PATTERN).expect("regex");
        for ok in ["90", "90s", "5m", "1h30m", "500ms"] {
            assert!(pattern.is_match(ok) && fleetspawn_core::duration::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "8 days", "1d", "h", "-5m"] {
            assert!(!pattern.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn a_new_condition_is_added_with_the_time() {
        let mut conditions = Vec::new();
        assert!(set_condition(&mut conditions, CONDITION_READY, ConditionStatus::False, "Starting", "pulling", Some(1), at(100)));
        let c = find_condition(&conditions, CONDITION_READY).expect("ready");
        assert_eq!((c.status.as_str(), c.reason.as_str(), c.message.as_str(), c.observed_generation), ("False", "Starting", "pulling", Some(1)));
        assert_eq!(c.last_transition_time, at(100));
        assert!(find_condition(&conditions, CONDITION_STALLED).is_none());
    }

    #[test]
    fn the_same_condition_again_changes_nothing() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, CONDITION_READY, ConditionStatus::True, "PodReady", "", Some(1), at(100));
        let before = conditions.clone();
        assert!(!set_condition(&mut conditions, CONDITION_READY, ConditionStatus::True, "PodReady", "", Some(1), at(200)));
        assert_eq!(conditions, before, "no time stamped on a reconcile that changed nothing");
    }

    #[test]
    fn only_a_status_change_moves_the_transition_time() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, CONDITION_PROGRESSING, ConditionStatus::True, "Spawning", "applying", Some(1), at(100));
        // Reason, message, generation change: written, but the transition time stays.
        assert!(set_condition(&mut conditions, CONDITION_PROGRESSING, ConditionStatus::True, "Pulling", "pulling image", Some(2), at(150)));
        let c = &conditions[0];
        assert_eq!((c.reason.as_str(), c.message.as_str(), c.observed_generation), ("Pulling", "pulling image", Some(2)));
        assert_eq!(c.last_transition_time, at(100));
        // The status changes: the time moves.
        assert!(set_condition(&mut conditions, CONDITION_PROGRESSING, ConditionStatus::from(false), "Ready", "", Some(2), at(200)));
        assert_eq!((conditions[0].status.as_str(), &conditions[0].last_transition_time), ("False", &at(200)));
        // Other conditions are independent.
        assert!(set_condition(&mut conditions, CONDITION_STALLED, ConditionStatus::Unknown, "Unknown", "", None, at(300)));
        assert_eq!(conditions.len(), 2);
        assert_eq!(find_condition(&conditions, CONDITION_PROGRESSING).map(|c| &c.last_transition_time), Some(&at(200)));
    }
}
