//! The registry: what is observed on the target clusters, in memory: the Pods of this
//! installation (labelled with its home) across all clusters, by the owner they claim. It is
//! not the record of what should run (the `UserServer`s are); it is what the reconciler
//! compares the record with.
//!
//! [`index`] is the synchronous index (changed only through `apply`); [`watch`] runs one
//! watch per cluster over the installation's Pods and feeds it. [`Registry`] is the shared
//! handle: readers take a snapshot under a read lock; every change bumps a version that
//! waiters can await; the servers whose Pods changed are sent on a channel, so they are
//! reconciled again.

pub mod index;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use fleetspawn_core::instance::Instance;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch as channel};

pub use index::{ClusterSync, Index, NotSynced};

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
    touched: mpsc::UnboundedSender<String>,
    /// The label selector of the Pods watched (this installation's).
    selector: String,
    /// Counts watch restarts (errors, reconnections) per cluster.
    metrics: Metrics,
}

impl Registry {
    /// An empty registry expecting the given clusters, watching Pods that match `selector`;
    /// the receiver gets the instance keys whose Pods changed.
    pub fn new<'a>(clusters: impl IntoIterator<Item = &'a str>, selector: String, metrics: Metrics) -> (Registry, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Inner { index: RwLock::new(Index::new(clusters)), version: channel::channel(0).0, touched: tx, selector, metrics };
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
        for key in applied.touched {
            let _ = self.inner.touched.send(key);
        }
        if applied.changed {
            self.bump();
        }
    }

    /// Marks a cluster unreachable (its Pods cannot be known), e.g. when its health probe fails.
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

    /// Whether the cluster's Pods can be trusted right now.
    pub fn is_synced(&self, cluster: &str) -> bool {
        self.read().is_synced(cluster)
    }

    /// See [`Index::pods_of`].
    pub fn pods_of(&self, cluster: &str, owner: &str) -> Result<Vec<Instance>, NotSynced> {
        self.read().pods_of(cluster, owner)
    }

    /// Pods per cluster, for least-loaded placement.
    pub fn pods_per_cluster(&self) -> BTreeMap<String, usize> {
        self.read().pods_per_cluster()
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
