//! The registry: one in-memory index of every live instance across all clusters, rebuilt from
//! the clusters themselves (labels and annotations are the truth; there is no database).
//!
//! [`index`] is the synchronous index (changed only through `apply`); [`watch`] runs one
//! watch per cluster over fleetspawn-managed Pods and feeds it. [`Registry`] is the shared
//! handle: readers take a snapshot under a read lock; every change bumps a version that
//! waiters can await; Pods that disappear are reported on a channel so their leftovers can be
//! cleaned up.

pub mod index;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use fleetspawn_core::instance::Instance;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch as channel};

pub use index::{ClusterSync, Index, Vanished};

use crate::metrics::Metrics;

/// The shared index. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    index: RwLock<Index>,
    /// Bumped on every change: lets waiters (tests, the API) notice.
    version: channel::Sender<u64>,
    vanished: mpsc::UnboundedSender<Vanished>,
    /// Counts watch restarts (errors, reconnections) per cluster.
    metrics: Metrics,
}

impl Registry {
    /// An empty registry expecting the given clusters; the receiver gets vanished Pods.
    pub fn new<'a>(clusters: impl IntoIterator<Item = &'a str>, metrics: Metrics) -> (Registry, mpsc::UnboundedReceiver<Vanished>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Inner { index: RwLock::new(Index::new(clusters)), version: channel::channel(0).0, vanished: tx, metrics };
        (Registry { inner: Arc::new(inner) }, rx)
    }

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.inner.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.inner.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.inner.version.send_modify(|v| *v += 1);
    }

    /// Applies one watch event of `cluster` to the index, now.
    pub fn apply(&self, cluster: &str, event: &kube::runtime::watcher::Event<Pod>) {
        let applied = self.write().apply(cluster, event, Timestamp::now());
        for v in applied.vanished {
            let _ = self.inner.vanished.send(v);
        }
        if applied.changed {
            self.bump();
        }
    }

    /// Marks a cluster unreachable (its instances turn `unknown`), e.g. when its health probe fails.
    pub fn mark_unreachable(&self, cluster: &str, cause: &str) {
        if self.write().mark_unreachable(cluster, cause) {
            tracing::debug!(cluster, cause, "cluster unreachable");
            self.bump();
        }
    }

    /// Waits for the next change of the index (or the timeout).
    pub async fn changed(&self, timeout: Duration) {
        let mut rx = self.inner.version.subscribe();
        let _ = tokio::time::timeout(timeout, rx.changed()).await;
    }

    /// The sync state of every cluster.
    pub fn sync_states(&self) -> BTreeMap<String, ClusterSync> {
        self.read().sync_states().clone()
    }

    /// Clusters whose initial list is not in, or which are unreachable.
    pub fn unsynced(&self) -> Vec<String> {
        self.read().unsynced()
    }

    /// Whether the cluster's instances can be trusted right now.
    pub fn is_synced(&self, cluster: &str) -> bool {
        self.read().is_synced(cluster)
    }

    /// Every instance, with the state answered as `unknown` on clusters that are not synced.
    pub fn list(&self) -> Vec<Instance> {
        self.read().list()
    }

    /// See [`Index::get`].
    pub fn get(&self, key: &str) -> Result<Option<Instance>, Vec<String>> {
        self.read().get(key)
    }

    /// The keys of a user's instances that are not being stopped.
    pub fn keys_of_user(&self, user: &str) -> Vec<String> {
        self.read().keys_of_user(user)
    }

    /// Instances per cluster (any state), for least-loaded placement.
    pub fn instances_per_cluster(&self) -> BTreeMap<String, usize> {
        self.read().instances_per_cluster()
    }

    /// Waits until every cluster is synced or unreachable, at most `timeout`.
    pub async fn wait_settled(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.inner.version.subscribe();
        loop {
            if self.read().sync_states().values().all(|s| *s != ClusterSync::Syncing) {
                return true;
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return false;
            }
        }
    }
}
