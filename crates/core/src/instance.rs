//! The instance model: one user server as fleetspawn knows it, and the rules for what a user
//! sees of it once a spawn has ended. Pure: the registry builds entries from Pods with
//! [`Instance::from_pod`]; the service, the API and the web pages all read the same rules.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::labels;
use crate::lifecycle::{judge_pod, runs, Failure, FailureKind, PodVerdict, ProgressEvent};

/// The state of an instance as users and operators see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Failed,
    /// Its cluster is unreachable or not synced yet: the instance may well be running.
    Unknown,
}

impl InstanceState {
    /// Every state, in the order metrics and tables list them.
    pub const ALL: [InstanceState; 5] =
        [InstanceState::Pending, InstanceState::Running, InstanceState::Stopping, InstanceState::Failed, InstanceState::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Failed => "failed",
            InstanceState::Unknown => "unknown",
        }
    }
}

/// One live Pod of a server, as the registry's index keeps it: names, state, URL, times; never
/// the whole object. It is only a server's if the `UserServer` whose UID is `owner` points at
/// it: the other fields are what the Pod claims.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Instance {
    pub key: String,
    /// The UID of the `UserServer` the Pod is labelled with ([`labels::OWNER`]).
    #[serde(skip)]
    pub owner: String,
    pub user: String,
    pub server: String,
    pub profile: String,
    pub cluster: String,
    pub namespace: String,
    pub pod: String,
    /// The Pod's uid: tells a new Pod of the same instance from the old one.
    #[serde(skip)]
    pub uid: String,
    pub state: InstanceState,
    pub url: Option<String>,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339: when the registry last heard of it from its cluster.
    pub last_seen: Option<String>,
    pub cause: Option<String>,
    /// The kind of failure, with `cause`.
    #[serde(skip)]
    pub failure: Option<FailureKind>,
    /// Its Pod runs (see [`runs`]): it may have served its user, so it is never removed as a
    /// spawn that did not start, even when it is not Ready now.
    #[serde(skip)]
    pub runs: bool,
}

impl Instance {
    /// The index entry for a managed Pod of `cluster`, seen at `now`; `None` for a Pod without
    /// an instance or an owner label.
    pub fn from_pod(cluster: &str, pod: &Pod, now: Timestamp) -> Option<Instance> {
        let meta = &pod.metadata;
        let labels = meta.labels.as_ref()?;
        let annotations = meta.annotations.clone().unwrap_or_default();
        let key = labels.get(labels::INSTANCE)?.clone();
        let owner = labels.get(labels::OWNER)?.clone();
        let (state, failure) = match judge_pod(pod) {
            PodVerdict::Starting | PodVerdict::Unschedulable(_) => (InstanceState::Pending, None),
            PodVerdict::Ready => (InstanceState::Running, None),
            PodVerdict::Failed(failure) => (InstanceState::Failed, Some(failure)),
            PodVerdict::Terminating => (InstanceState::Stopping, None),
        };
        Some(Instance {
            key,
            owner,
            user: annotations.get(labels::USERNAME).cloned().unwrap_or_default(),
            server: annotations.get(labels::SERVERNAME).cloned().unwrap_or_default(),
            profile: labels.get(labels::PROFILE).cloned().unwrap_or_default(),
            cluster: cluster.to_string(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            pod: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            state,
            url: annotations.get(labels::URL).cloned(),
            started_at: meta.creation_timestamp.as_ref().map(|t| t.0.to_string()),
            last_seen: Some(now.to_string()),
            failure: failure.as_ref().map(|f| f.kind),
            runs: runs(pod),
            cause: failure.map(|f| f.message),
        })
    }
}

/// One user server, as the API, the CLI and the web pages show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
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
    /// The kind of failure, with `cause`.
    #[serde(skip)]
    pub failure: Option<FailureKind>,
}

impl From<Instance> for InstanceView {
    fn from(i: Instance) -> Self {
        InstanceView {
            key: i.key,
            user: i.user,
            server: i.server,
            profile: i.profile,
            cluster: i.cluster,
            state: i.state,
            url: i.url,
            started_at: i.started_at,
            last_seen: i.last_seen,
            cause: i.cause,
            placement: None,
            failure: i.failure,
        }
    }
}

impl InstanceView {
    /// A server known only by its names (nothing observed yet), in `state`.
    pub fn named(key: &str, user: &str, server: &str, state: InstanceState) -> InstanceView {
        InstanceView {
            key: key.to_string(),
            user: user.to_string(),
            server: server.to_string(),
            profile: String::new(),
            cluster: String::new(),
            state,
            url: None,
            started_at: None,
            last_seen: None,
            cause: None,
            placement: None,
            failure: None,
        }
    }
}

/// How a spawn ended, read from the last event of its progress log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpawnEnd<'a> {
    /// Ready at this URL.
    Ready(&'a str),
    /// Failed.
    Failed(Failure),
}

impl<'a> SpawnEnd<'a> {
    /// The end of a spawn whose last progress event is `last`; `None` while it runs.
    pub fn of(last: Option<&'a ProgressEvent>) -> Option<SpawnEnd<'a>> {
        let last = last?;
        if last.failed == Some(true) {
            Some(SpawnEnd::Failed(Failure::new(last.failure.unwrap_or(FailureKind::Other), last.message.clone())))
        } else if last.ready == Some(true) {
            Some(SpawnEnd::Ready(last.url.as_deref().unwrap_or_default()))
        } else {
            None
        }
    }
}

/// What a user sees of a server the registry does not know (it is gone) after its last spawn
/// ended: a failed spawn (rolled back) is shown as failed with its cause, so the user learns
/// why; a spawn that became ready and was stopped since is not shown at all (its old `ready`,
/// with a URL that no longer answers, must not be replayed).
pub fn gone_after(key: &str, user: &str, server: &str, end: Option<SpawnEnd<'_>>) -> Option<InstanceView> {
    match end {
        Some(SpawnEnd::Failed(failure)) => {
            Some(InstanceView { cause: Some(failure.message), failure: Some(failure.kind), ..InstanceView::named(key, user, server, InstanceState::Failed) })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "fs-alice", "namespace": "jh", "uid": "u1", "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"fleetspawn.io/instance": "alice", "fleetspawn.io/owner": "o1", "fleetspawn.io/profile": "cpu"},
                "annotations": {"fleetspawn.io/username": "Alice", "fleetspawn.io/servername": "", "fleetspawn.io/url": "http://h/user/Alice/"}},
            "status": status,
        }))
        .expect("pod")
    }

    #[test]
    fn pods_become_compact_entries_with_the_time_given() {
        let now: Timestamp = "2026-01-01T00:05:00Z".parse().expect("time");
        let ready = pod(json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}));
        let i = Instance::from_pod("east", &ready, now).expect("entry");
        assert_eq!((i.key.as_str(), i.user.as_str(), i.profile.as_str(), i.cluster.as_str()), ("alice", "Alice", "cpu", "east"));
        assert_eq!((i.state, i.url.as_deref(), i.uid.as_str()), (InstanceState::Running, Some("http://h/user/Alice/"), "u1"));
        assert_eq!(i.last_seen.as_deref(), Some("2026-01-01T00:05:00Z"));
        assert_eq!(i.owner, "o1");
        let mut ownerless = ready.clone();
        ownerless.metadata.labels.as_mut().expect("labels").remove("fleetspawn.io/owner");
        assert_eq!(Instance::from_pod("east", &ownerless, now), None, "a Pod without an owner is nobody's server");
        let mut unlabelled = ready;
        unlabelled.metadata.labels = None;
        assert_eq!(Instance::from_pod("east", &unlabelled, now), None);
    }

    #[test]
    fn a_gone_server_shows_its_failure_but_never_a_stale_ready() {
        let failed = ProgressEvent::failed(Failure::new(FailureKind::Timeout, "boom"));
        let shown = gone_after("k", "u", "s", SpawnEnd::of(Some(&failed))).expect("failed is shown");
        assert_eq!((shown.state, shown.cause.as_deref(), shown.server.as_str()), (InstanceState::Failed, Some("boom"), "s"));
        assert_eq!(shown.failure, Some(FailureKind::Timeout), "the kind survives the progress log");
        assert_eq!(gone_after("k", "u", "s", SpawnEnd::of(Some(&ProgressEvent::ready("http://u")))), None);
        assert_eq!(gone_after("k", "u", "s", None), None);
        assert_eq!(SpawnEnd::of(Some(&ProgressEvent::ready("http://u"))), Some(SpawnEnd::Ready("http://u")));
    }
}
