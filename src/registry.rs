//! The registry: one in-memory index of every live instance across all clusters, rebuilt from
//! the clusters themselves (labels and annotations are the truth; there is no database).
//!
//! One watch per cluster over fleetspawn-managed Pods feeds the index. Each entry keeps only
//! what the index needs (names, state, URL, times), never whole objects. A cluster's instances
//! are answered as `unknown` until its initial list is in and whenever it is unreachable, never
//! as `stopped`: a daemon restart or an outage must not make running servers look dead. Pods
//! that disappear are reported on a channel so their leftovers can be cleaned up.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::labels;
use crate::metrics::Metrics;
use crate::lifecycle::{judge_pod, PodVerdict};

/// How often each cluster's watch is restarted with a fresh list, whatever happens: the bound
/// on how long a silently stalled watch can keep the index stale.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(600);

/// The state of an instance as users and operators see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    Failed,
    /// Its cluster is unreachable or not synced yet: the instance may well be running.
    Unknown,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::Failed => "failed",
            InstanceState::Unknown => "unknown",
        }
    }
}

/// One live instance, as the registry knows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Instance {
    pub key: String,
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
}

/// How far a cluster's watch is.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum ClusterSync {
    /// The initial list is not in yet.
    Syncing,
    Synced,
    Unreachable { cause: String },
}

/// A Pod fleetspawn managed that disappeared.
#[derive(Clone, Debug)]
pub struct Vanished {
    pub cluster: String,
    pub key: String,
}

/// The shared index. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    /// cluster → instance key → instance.
    instances: RwLock<BTreeMap<String, HashMap<String, Instance>>>,
    clusters: RwLock<BTreeMap<String, ClusterSync>>,
    /// Bumped on every change: lets waiters (tests, the API) notice.
    version: watch::Sender<u64>,
    vanished: mpsc::UnboundedSender<Vanished>,
    /// Counts watch restarts (errors, reconnections) per cluster.
    metrics: Metrics,
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Turns a managed Pod into the compact index entry.
pub fn instance_from_pod(cluster: &str, pod: &Pod) -> Option<Instance> {
    let meta = &pod.metadata;
    let labels = meta.labels.as_ref()?;
    let annotations = meta.annotations.clone().unwrap_or_default();
    let key = labels.get(labels::INSTANCE)?.clone();
    let (state, cause) = match judge_pod(pod) {
        PodVerdict::Starting | PodVerdict::Unschedulable(_) => (InstanceState::Pending, None),
        PodVerdict::Ready => (InstanceState::Running, None),
        PodVerdict::Failed(cause) => (InstanceState::Failed, Some(cause)),
        PodVerdict::Terminating => (InstanceState::Stopping, None),
    };
    Some(Instance {
        key,
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
        last_seen: Some(now_rfc3339()),
        cause,
    })
}

impl Registry {
    /// An empty registry expecting the given clusters; the receiver gets vanished Pods.
    pub fn new<'a>(clusters: impl IntoIterator<Item = &'a str>, metrics: Metrics) -> (Registry, mpsc::UnboundedReceiver<Vanished>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let clusters: BTreeMap<String, ClusterSync> = clusters.into_iter().map(|c| (c.to_string(), ClusterSync::Syncing)).collect();
        let inner = Inner {
            instances: RwLock::new(clusters.keys().map(|c| (c.clone(), HashMap::new())).collect()),
            clusters: RwLock::new(clusters),
            version: watch::channel(0).0,
            vanished: tx,
            metrics,
        };
        (Registry { inner: Arc::new(inner) }, rx)
    }

    fn bump(&self) {
        self.inner.version.send_modify(|v| *v += 1);
    }

    /// Waits for the next change of the index (or the timeout).
    pub async fn changed(&self, timeout: Duration) {
        let mut rx = self.inner.version.subscribe();
        let _ = tokio::time::timeout(timeout, rx.changed()).await;
    }

    /// The sync state of every cluster.
    pub fn sync_states(&self) -> BTreeMap<String, ClusterSync> {
        self.inner.clusters.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Clusters whose initial list is not in, or which are unreachable.
    pub fn unsynced(&self) -> Vec<String> {
        self.sync_states().into_iter().filter(|(_, s)| *s != ClusterSync::Synced).map(|(c, _)| c).collect()
    }

    /// Whether the cluster's instances can be trusted right now.
    pub fn is_synced(&self, cluster: &str) -> bool {
        self.sync_states().get(cluster) == Some(&ClusterSync::Synced)
    }

    fn set_sync(&self, cluster: &str, sync: ClusterSync) {
        let mut clusters = self.inner.clusters.write().unwrap_or_else(PoisonError::into_inner);
        if clusters.get(cluster) != Some(&sync) {
            tracing::debug!(cluster, ?sync, "cluster sync state");
            clusters.insert(cluster.to_string(), sync);
            drop(clusters);
            self.bump();
        }
    }

    /// Marks a cluster unreachable (its instances turn `unknown`), e.g. when its health probe fails.
    pub fn mark_unreachable(&self, cluster: &str, cause: &str) {
        self.set_sync(cluster, ClusterSync::Unreachable { cause: cause.to_string() });
    }

    /// Every instance, with the state answered as `unknown` on clusters that are not synced.
    pub fn list(&self) -> Vec<Instance> {
        let sync = self.sync_states();
        let instances = self.inner.instances.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<Instance> = instances
            .iter()
            .flat_map(|(cluster, by_key)| {
                let trusted = sync.get(cluster) == Some(&ClusterSync::Synced);
                by_key.values().map(move |i| {
                    let mut i = i.clone();
                    if !trusted {
                        i.state = InstanceState::Unknown;
                    }
                    i
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.user, &a.server, &a.cluster).cmp(&(&b.user, &b.server, &b.cluster)));
        out
    }

    /// The instance with this key. `Ok(None)` means stopped (no cluster has it and every
    /// cluster is synced); `Err(clusters)` means it cannot be known yet: those clusters are not
    /// synced.
    pub fn get(&self, key: &str) -> Result<Option<Instance>, Vec<String>> {
        let sync = self.sync_states();
        let instances = self.inner.instances.read().unwrap_or_else(PoisonError::into_inner);
        for (cluster, by_key) in instances.iter() {
            if let Some(found) = by_key.get(key) {
                let mut found = found.clone();
                if sync.get(cluster) != Some(&ClusterSync::Synced) {
                    found.state = InstanceState::Unknown;
                }
                return Ok(Some(found));
            }
        }
        let unsynced: Vec<String> = sync.into_iter().filter(|(_, s)| *s != ClusterSync::Synced).map(|(c, _)| c).collect();
        if unsynced.is_empty() {
            Ok(None)
        } else {
            Err(unsynced)
        }
    }

    /// The keys of a user's instances that are not being stopped.
    pub fn keys_of_user(&self, user: &str) -> Vec<String> {
        let instances = self.inner.instances.read().unwrap_or_else(PoisonError::into_inner);
        instances
            .values()
            .flat_map(|m| m.values())
            .filter(|i| i.user == user && i.state != InstanceState::Stopping)
            .map(|i| i.key.clone())
            .collect()
    }

    /// Instances per cluster (any state), for least-loaded placement.
    pub fn load(&self) -> BTreeMap<String, usize> {
        let instances = self.inner.instances.read().unwrap_or_else(PoisonError::into_inner);
        instances.iter().map(|(c, m)| (c.clone(), m.len())).collect()
    }

    fn upsert(&self, cluster: &str, pod: &Pod) {
        let Some(instance) = instance_from_pod(cluster, pod) else { return };
        let mut all = self.inner.instances.write().unwrap_or_else(PoisonError::into_inner);
        all.entry(cluster.to_string()).or_default().insert(instance.key.clone(), instance);
        drop(all);
        self.bump();
    }

    fn remove(&self, cluster: &str, pod: &Pod) {
        let Some(key) = pod.metadata.labels.as_ref().and_then(|l| l.get(labels::INSTANCE)).cloned() else { return };
        let mut all = self.inner.instances.write().unwrap_or_else(PoisonError::into_inner);
        // Only if the entry is this pod (a new pod of the same instance may already be there).
        let ours = all.get(cluster).and_then(|m| m.get(&key)).is_some_and(|i| Some(&i.uid) == pod.metadata.uid.as_ref());
        if ours {
            all.entry(cluster.to_string()).or_default().remove(&key);
        }
        drop(all);
        let _ = self.inner.vanished.send(Vanished { cluster: cluster.to_string(), key });
        self.bump();
    }

    fn replace_cluster(&self, cluster: &str, fresh: HashMap<String, Instance>) {
        let mut all = self.inner.instances.write().unwrap_or_else(PoisonError::into_inner);
        let old = all.insert(cluster.to_string(), fresh);
        let gone: Vec<Vanished> = old
            .unwrap_or_default()
            .into_values()
            .filter(|i| !all.get(cluster).is_some_and(|m| m.contains_key(&i.key)))
            .map(|i| Vanished { cluster: cluster.to_string(), key: i.key })
            .collect();
        drop(all);
        for v in gone {
            let _ = self.inner.vanished.send(v);
        }
    }

    /// Runs the watch of one cluster forever: lists, then follows changes; on errors it backs
    /// off and re-lists by itself. `restart` forces a fresh list (e.g. when the cluster comes
    /// back after an outage the watch may not have noticed).
    pub async fn watch_cluster(self, cluster: String, client: Client, mut restart: watch::Receiver<u64>) {
        let api: Api<Pod> = Api::all(client);
        loop {
            // Pages of 250 Pods: the initial list of a large cluster is decoded a page at a time, which
            // bounds the memory peak while syncing (docs/benchmarks.md).
            let config = watcher::Config::default().labels(labels::MANAGED_SELECTOR).page_size(250);
            let mut stream = watcher::watcher(api.clone(), config).default_backoff().boxed();
            let mut buffer: HashMap<String, Instance> = HashMap::new();
            // A watch can stall without an error (a middlebox silently dropping the stream):
            // a fresh list every RESYNC_INTERVAL bounds how stale the index can get.
            let resync = tokio::time::sleep(RESYNC_INTERVAL);
            tokio::pin!(resync);
            loop {
                let next = tokio::select! {
                    next = stream.next() => next,
                    changed = restart.changed() => {
                        if changed.is_err() { return; }
                        break;
                    }
                    () = &mut resync => break,
                };
                match next {
                    None => break,
                    Some(Ok(Event::Init)) => buffer.clear(),
                    Some(Ok(Event::InitApply(pod))) => {
                        if let Some(i) = instance_from_pod(&cluster, &pod) {
                            buffer.insert(i.key.clone(), i);
                        }
                    }
                    Some(Ok(Event::InitDone)) => {
                        let n = buffer.len();
                        self.replace_cluster(&cluster, std::mem::take(&mut buffer));
                        tracing::info!(cluster, instances = n, "registry synced");
                        self.set_sync(&cluster, ClusterSync::Synced);
                        self.bump();
                    }
                    Some(Ok(Event::Apply(pod))) => self.upsert(&cluster, &pod),
                    Some(Ok(Event::Delete(pod))) => self.remove(&cluster, &pod),
                    Some(Err(e)) => {
                        tracing::warn!(cluster, error = %e, "watch error; retrying with backoff");
                        self.mark_unreachable(&cluster, &e.to_string());
                        self.inner.metrics.watch_restart(&cluster);
                    }
                }
            }
            tracing::info!(cluster, "restarting the watch");
            self.inner.metrics.watch_restart(&cluster);
        }
    }

    /// Waits until every cluster is synced or unreachable, at most `timeout`.
    pub async fn wait_settled(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.inner.version.subscribe();
        loop {
            if self.sync_states().values().all(|s| *s != ClusterSync::Syncing) {
                return true;
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return false;
            }
        }
    }
}
