//! The index of the Pods of every cluster that carry an owner: cluster → owner UID → the
//! compact [`Instance`]s of that owner's Pods (usually one). Synchronous and without I/O; it
//! changes only through [`Index::apply`] (a watch event of one cluster, at a given time) and
//! [`Index::mark_unreachable`].
//!
//! It is keyed by the owner a Pod claims, never by the names it claims: a Pod that copies
//! another user's instance label cannot push that user's Pod out of the index. Whether a Pod
//! really is a server is decided by its `UserServer` (which names the cluster and, once known,
//! the Pod's UID), not here.
//!
//! A cluster's initial list is buffered and swapped in whole at the end of the list, so a
//! re-list replaces the cluster's entries and a half-read list is never answered. A cluster
//! that is syncing or unreachable answers [`NotSynced`], never "no Pod".

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fleetspawn_core::instance::Instance;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher::Event;
use serde::Serialize;

/// How far a cluster's watch is.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum ClusterSync {
    /// The initial list is not in yet.
    Syncing,
    Synced,
    Unreachable {
        cause: String,
    },
}

/// The cluster's Pods cannot be known right now (syncing or unreachable).
#[derive(Clone, Debug, PartialEq)]
pub struct NotSynced(pub ClusterSync);

/// What one change did to the index.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// Whether readers may see something new.
    pub changed: bool,
    /// The instance keys (the names of the `UserServer`s) whose Pods changed: their servers
    /// are reconciled again.
    pub touched: BTreeSet<String>,
}

type Owners = HashMap<String, Vec<Instance>>;

/// The index. See the module documentation.
#[derive(Debug, Default)]
pub struct Index {
    pods: BTreeMap<String, Owners>,
    clusters: BTreeMap<String, ClusterSync>,
    /// The initial list being read, per cluster.
    buffers: HashMap<String, Owners>,
}

/// Puts `i` among its owner's Pods, replacing the entry of the same Pod.
fn upsert(owners: &mut Owners, i: Instance) {
    let pods = owners.entry(i.owner.clone()).or_default();
    match pods.iter_mut().find(|p| p.uid == i.uid) {
        Some(old) => *old = i,
        None => pods.push(i),
    }
}

fn keys(owners: &Owners) -> impl Iterator<Item = &String> {
    owners.values().flatten().map(|i| &i.key)
}

impl Index {
    /// An empty index expecting these clusters, each `Syncing`.
    pub fn new<'a>(clusters: impl IntoIterator<Item = &'a str>) -> Index {
        let clusters: BTreeMap<String, ClusterSync> = clusters.into_iter().map(|c| (c.to_string(), ClusterSync::Syncing)).collect();
        Index { pods: clusters.keys().map(|c| (c.clone(), HashMap::new())).collect(), clusters, buffers: HashMap::new() }
    }

    /// Applies one watch event of `cluster`'s Pods, seen at `now`.
    pub fn apply(&mut self, cluster: &str, event: &Event<Pod>, now: Timestamp) -> Applied {
        match event {
            Event::Init => {
                self.buffers.insert(cluster.to_string(), HashMap::new());
                Applied::default()
            }
            Event::InitApply(pod) => {
                if let Some(i) = Instance::from_pod(cluster, pod, now) {
                    upsert(self.buffers.entry(cluster.to_string()).or_default(), i);
                }
                Applied::default()
            }
            Event::InitDone => {
                let fresh = self.buffers.remove(cluster).unwrap_or_default();
                let old = self.pods.insert(cluster.to_string(), fresh).unwrap_or_default();
                // Every server with a Pod before or after the list is looked at again.
                let mut touched: BTreeSet<String> = keys(&old).cloned().collect();
                touched.extend(self.pods.get(cluster).into_iter().flat_map(keys).cloned());
                self.clusters.insert(cluster.to_string(), ClusterSync::Synced);
                Applied { changed: true, touched }
            }
            Event::Apply(pod) => {
                let Some(i) = Instance::from_pod(cluster, pod, now) else { return Applied::default() };
                let touched = BTreeSet::from([i.key.clone()]);
                upsert(self.pods.entry(cluster.to_string()).or_default(), i);
                Applied { changed: true, touched }
            }
            Event::Delete(pod) => {
                let Some(gone) = Instance::from_pod(cluster, pod, now) else { return Applied::default() };
                let owners = self.pods.entry(cluster.to_string()).or_default();
                if let Some(pods) = owners.get_mut(&gone.owner) {
                    pods.retain(|p| p.uid != gone.uid);
                    if pods.is_empty() {
                        owners.remove(&gone.owner);
                    }
                }
                Applied { changed: true, touched: BTreeSet::from([gone.key]) }
            }
        }
    }

    /// Marks a cluster unreachable (its Pods cannot be known); whether that changed it.
    pub fn mark_unreachable(&mut self, cluster: &str, cause: &str) -> bool {
        let sync = ClusterSync::Unreachable { cause: cause.to_string() };
        if self.clusters.get(cluster) == Some(&sync) {
            return false;
        }
        self.clusters.insert(cluster.to_string(), sync);
        true
    }

    /// The sync state of every cluster.
    pub fn sync_states(&self) -> &BTreeMap<String, ClusterSync> {
        &self.clusters
    }

    /// Clusters whose initial list is not in, or which are unreachable.
    pub fn unsynced(&self) -> Vec<String> {
        self.clusters.iter().filter(|(_, s)| **s != ClusterSync::Synced).map(|(c, _)| c.clone()).collect()
    }

    /// Whether the cluster's Pods can be trusted right now.
    pub fn is_synced(&self, cluster: &str) -> bool {
        self.clusters.get(cluster) == Some(&ClusterSync::Synced)
    }

    /// The Pods on `cluster` labelled as owned by `owner` (a `UserServer`'s UID); `Err` while
    /// the cluster cannot be known.
    pub fn pods_of(&self, cluster: &str, owner: &str) -> Result<Vec<Instance>, NotSynced> {
        match self.clusters.get(cluster) {
            Some(ClusterSync::Synced) => Ok(self.pods.get(cluster).and_then(|o| o.get(owner)).cloned().unwrap_or_default()),
            Some(other) => Err(NotSynced(other.clone())),
            None => Err(NotSynced(ClusterSync::Unreachable { cause: "not in the kubeconfig".into() })),
        }
    }

    /// Pods per cluster, for least-loaded placement.
    pub fn pods_per_cluster(&self) -> BTreeMap<String, usize> {
        self.pods.iter().map(|(c, m)| (c.clone(), m.values().map(Vec::len).sum())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetspawn_core::instance::InstanceState;
    use serde_json::json;

    const NOW: &str = "2026-01-01T00:10:00Z";

    fn now() -> Timestamp {
        NOW.parse().expect("time")
    }

    /// A managed Pod of `user`'s default server owned by `owner`, Ready or not.
    fn mk_pod(user: &str, owner: &str, uid: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("fs-{user}"), "namespace": "jh", "uid": uid, "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"app.kubernetes.io/managed-by": "fleetspawn", "fleetspawn.io/instance": user, "fleetspawn.io/owner": owner, "fleetspawn.io/profile": "cpu"},
                "annotations": {"fleetspawn.io/username": user, "fleetspawn.io/servername": ""}},
            "status": {"phase": if ready { "Running" } else { "Pending" }, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .expect("pod")
    }

    fn synced(index: &mut Index, cluster: &str, pods: &[Pod]) -> Applied {
        index.apply(cluster, &Event::Init, now());
        for p in pods {
            index.apply(cluster, &Event::InitApply(p.clone()), now());
        }
        index.apply(cluster, &Event::InitDone, now())
    }

    fn states(index: &Index, cluster: &str, owner: &str) -> Vec<InstanceState> {
        index.pods_of(cluster, owner).expect("synced").into_iter().map(|i| i.state).collect()
    }

    #[test]
    fn the_initial_list_is_buffered_then_swapped_in_at_its_end() {
        let mut index = Index::new(["east"]);
        assert_eq!(index.pods_of("east", "o-alice"), Err(NotSynced(ClusterSync::Syncing)), "syncing: cannot be known");
        index.apply("east", &Event::Init, now());
        index.apply("east", &Event::InitApply(mk_pod("alice", "o-alice", "1", true)), now());
        assert!(index.pods_of("east", "o-alice").is_err(), "a half-read list is never answered");
        let applied = index.apply("east", &Event::InitDone, now());
        assert!(applied.changed && applied.touched.contains("alice"));
        assert_eq!(states(&index, "east", "o-alice"), [InstanceState::Running]);
        assert_eq!(states(&index, "east", "o-bob"), [], "synced and absent: no Pod");
        assert_eq!(index.pods_of("east", "o-alice").expect("synced")[0].last_seen.as_deref(), Some(NOW), "the time comes in as an argument");
        assert!(index.pods_of("west", "o-alice").is_err(), "a cluster not in the kubeconfig is never 'no Pod'");
    }

    #[test]
    fn pods_are_added_changed_and_deleted() {
        let mut index = Index::new(["east"]);
        synced(&mut index, "east", &[]);
        index.apply("east", &Event::Apply(mk_pod("alice", "o", "1", false)), now());
        assert_eq!(states(&index, "east", "o"), [InstanceState::Pending]);
        let applied = index.apply("east", &Event::Apply(mk_pod("alice", "o", "1", true)), now());
        assert_eq!(applied.touched, BTreeSet::from(["alice".to_string()]));
        assert_eq!(states(&index, "east", "o"), [InstanceState::Running]);
        let applied = index.apply("east", &Event::Delete(mk_pod("alice", "o", "1", true)), now());
        assert_eq!(applied.touched, BTreeSet::from(["alice".to_string()]));
        assert_eq!(states(&index, "east", "o"), []);
    }

    #[test]
    fn a_pod_copying_anothers_names_never_pushes_theirs_out() {
        let mut index = Index::new(["east"]);
        synced(&mut index, "east", &[mk_pod("bob", "o-bob", "real", true)]);
        // A decoy with bob's instance label and name, but its own (or no) owner.
        index.apply("east", &Event::Apply(mk_pod("bob", "o-attacker", "decoy", true)), now());
        let bobs = index.pods_of("east", "o-bob").expect("synced");
        assert_eq!(bobs.iter().map(|i| i.uid.as_str()).collect::<Vec<_>>(), ["real"]);
        index.apply("east", &Event::Delete(mk_pod("bob", "o-attacker", "decoy", true)), now());
        assert_eq!(states(&index, "east", "o-bob"), [InstanceState::Running], "the decoy's delete leaves bob's Pod");
    }

    #[test]
    fn deleting_an_old_pod_keeps_the_new_pod_of_the_same_owner() {
        let mut index = Index::new(["east"]);
        synced(&mut index, "east", &[mk_pod("alice", "o", "new", true)]);
        index.apply("east", &Event::Delete(mk_pod("alice", "o", "old", true)), now());
        assert_eq!(states(&index, "east", "o"), [InstanceState::Running]);
    }

    #[test]
    fn an_unreachable_cluster_is_never_no_pod() {
        let mut index = Index::new(["east", "west"]);
        synced(&mut index, "east", &[mk_pod("alice", "o", "1", true)]);
        synced(&mut index, "west", &[]);
        assert!(index.mark_unreachable("east", "connection refused"));
        assert!(!index.mark_unreachable("east", "connection refused"), "no change the second time");
        assert_eq!(index.pods_of("east", "o"), Err(NotSynced(ClusterSync::Unreachable { cause: "connection refused".into() })));
        assert_eq!(index.unsynced(), vec!["east".to_string()]);
        synced(&mut index, "east", &[mk_pod("alice", "o", "1", true)]);
        assert_eq!(states(&index, "east", "o"), [InstanceState::Running], "a fresh list makes it known again");
    }

    #[test]
    fn a_relist_replaces_the_clusters_entries_and_touches_what_changed() {
        let mut index = Index::new(["east"]);
        synced(&mut index, "east", &[mk_pod("alice", "oa", "1", true), mk_pod("bob", "ob", "2", true)]);
        let applied = synced(&mut index, "east", &[mk_pod("alice", "oa", "1", true)]);
        assert!(applied.touched.contains("bob"), "bob's Pod vanished while the watch was down: his server is looked at");
        assert_eq!(states(&index, "east", "ob"), []);
        assert_eq!(states(&index, "east", "oa"), [InstanceState::Running]);
    }

    #[test]
    fn counts_per_cluster_feed_placement() {
        let mut index = Index::new(["east", "west"]);
        synced(&mut index, "east", &[mk_pod("a", "oa", "1", true), mk_pod("b", "ob", "2", false)]);
        synced(&mut index, "west", &[mk_pod("c", "oc", "3", true)]);
        assert_eq!(index.pods_per_cluster(), BTreeMap::from([("east".to_string(), 2), ("west".to_string(), 1)]));
    }

    #[test]
    fn pods_without_an_owner_are_ignored() {
        let mut index = Index::new(["east"]);
        let mut p = mk_pod("alice", "o", "1", true);
        p.metadata.labels.as_mut().expect("labels").remove("fleetspawn.io/owner");
        let applied = synced(&mut index, "east", &[p.clone()]);
        assert!(applied.touched.is_empty());
        assert_eq!(index.apply("east", &Event::Apply(p), now()), Applied::default());
        assert_eq!(index.pods_per_cluster()["east"], 0);
    }
}
