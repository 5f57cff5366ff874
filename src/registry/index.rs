//! The index of every live instance across clusters: cluster → instance key → compact
//! [`Instance`]. Synchronous and without I/O; it changes only through [`Index::apply`] (a watch
//! event of one cluster, at a given time) and [`Index::mark_unreachable`].
//!
//! A cluster's initial list is buffered and swapped in whole at the end of the list, so a
//! re-list replaces the cluster's entries and a half-read list is never answered. A cluster
//! that is syncing or unreachable answers its instances as `unknown`, never as `stopped`.

use std::collections::{BTreeMap, HashMap};

use fleetspawn_core::instance::{Instance, InstanceState};
use fleetspawn_core::labels;
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

/// A Pod fleetspawn managed that disappeared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vanished {
    pub cluster: String,
    pub key: String,
}

/// What one change did to the index.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// Whether readers may see something new.
    pub changed: bool,
    /// Instances whose Pod went away (to clean up after).
    pub vanished: Vec<Vanished>,
}

/// The index. See the module documentation.
#[derive(Debug, Default)]
pub struct Index {
    instances: BTreeMap<String, HashMap<String, Instance>>,
    clusters: BTreeMap<String, ClusterSync>,
    /// The initial list being read, per cluster.
    buffers: HashMap<String, HashMap<String, Instance>>,
}

impl Index {
    /// An empty index expecting these clusters, each `Syncing`.
    pub fn new<'a>(clusters: impl IntoIterator<Item = &'a str>) -> Index {
        let clusters: BTreeMap<String, ClusterSync> = clusters.into_iter().map(|c| (c.to_string(), ClusterSync::Syncing)).collect();
        Index { instances: clusters.keys().map(|c| (c.clone(), HashMap::new())).collect(), clusters, buffers: HashMap::new() }
    }

    /// Applies one watch event of `cluster`'s managed Pods, seen at `now`.
    pub fn apply(&mut self, cluster: &str, event: &Event<Pod>, now: Timestamp) -> Applied {
        match event {
            Event::Init => {
                self.buffers.insert(cluster.to_string(), HashMap::new());
                Applied::default()
            }
            Event::InitApply(pod) => {
                if let Some(i) = Instance::from_pod(cluster, pod, now) {
                    self.buffers.entry(cluster.to_string()).or_default().insert(i.key.clone(), i);
                }
                Applied::default()
            }
            Event::InitDone => {
                let fresh = self.buffers.remove(cluster).unwrap_or_default();
                let old = self.instances.insert(cluster.to_string(), fresh).unwrap_or_default();
                let now_live = self.instances.get(cluster);
                let vanished = old
                    .into_keys()
                    .filter(|key| !now_live.is_some_and(|m| m.contains_key(key)))
                    .map(|key| Vanished { cluster: cluster.to_string(), key })
                    .collect();
                self.clusters.insert(cluster.to_string(), ClusterSync::Synced);
                Applied { changed: true, vanished }
            }
            Event::Apply(pod) => {
                let Some(instance) = Instance::from_pod(cluster, pod, now) else { return Applied::default() };
                self.instances.entry(cluster.to_string()).or_default().insert(instance.key.clone(), instance);
                Applied { changed: true, vanished: Vec::new() }
            }
            Event::Delete(pod) => {
                let Some(key) = pod.metadata.labels.as_ref().and_then(|l| l.get(labels::INSTANCE)).cloned() else {
                    return Applied::default();
                };
                let entries = self.instances.entry(cluster.to_string()).or_default();
                // Only if the entry is this Pod (a new Pod of the same instance may be there).
                if entries.get(&key).is_some_and(|i| Some(&i.uid) == pod.metadata.uid.as_ref()) {
                    entries.remove(&key);
                }
                Applied { changed: true, vanished: vec![Vanished { cluster: cluster.to_string(), key }] }
            }
        }
    }

    /// Marks a cluster unreachable (its instances turn `unknown`); whether that changed it.
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

    /// Whether the cluster's instances can be trusted right now.
    pub fn is_synced(&self, cluster: &str) -> bool {
        self.clusters.get(cluster) == Some(&ClusterSync::Synced)
    }

    fn shown(&self, cluster: &str, i: &Instance) -> Instance {
        let mut i = i.clone();
        if !self.is_synced(cluster) {
            i.state = InstanceState::Unknown;
        }
        i
    }

    /// Every instance, sorted by user, server and cluster; `unknown` on unsynced clusters.
    pub fn list(&self) -> Vec<Instance> {
        let mut out: Vec<Instance> = self.instances.iter().flat_map(|(cluster, by_key)| by_key.values().map(move |i| self.shown(cluster, i))).collect();
        out.sort_by(|a, b| (&a.user, &a.server, &a.cluster).cmp(&(&b.user, &b.server, &b.cluster)));
        out
    }

    /// The instance with this key. `Ok(None)` means stopped (no cluster has it and every
    /// cluster is synced); `Err(clusters)` means it cannot be known yet: those clusters are
    /// not synced.
    pub fn get(&self, key: &str) -> Result<Option<Instance>, Vec<String>> {
        for (cluster, by_key) in &self.instances {
            if let Some(found) = by_key.get(key) {
                return Ok(Some(self.shown(cluster, found)));
            }
        }
        let unsynced = self.unsynced();
        if unsynced.is_empty() {
            Ok(None)
        } else {
            Err(unsynced)
        }
    }

    /// The keys of a user's instances that are not being stopped.
    pub fn keys_of_user(&self, user: &str) -> Vec<String> {
        self.instances.values().flat_map(|m| m.values()).filter(|i| i.user == user && i.state != InstanceState::Stopping).map(|i| i.key.clone()).collect()
    }

    /// Instances per cluster (any state), for least-loaded placement.
    pub fn instances_per_cluster(&self) -> BTreeMap<String, usize> {
        self.instances.iter().map(|(c, m)| (c.clone(), m.len())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2026-01-01T00:10:00Z";

    fn now() -> Timestamp {
        NOW.parse().expect("time")
    }

    /// A managed Pod of `user`'s default server, Ready or not.
    fn mk_pod(user: &str, uid: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("fs-{user}"), "namespace": "jh", "uid": uid, "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"app.kubernetes.io/managed-by": "fleetspawn", "fleetspawn.io/instance": user, "fleetspawn.io/profile": "cpu"},
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

    fn state(index: &Index, key: &str) -> Option<InstanceState> {
        index.get(key).ok().flatten().map(|i| i.state)
    }

    #[test]
    fn the_initial_list_is_buffered_then_swapped_in_at_its_end() {
        let mut index = Index::new(["east"]);
        assert_eq!(index.get("alice"), Err(vec!["east".to_string()]), "syncing: cannot be known");
        index.apply("east", &Event::Init, now());
        index.apply("east", &Event::InitApply(mk_pod("alice", "1", true)), now());
        assert!(index.list().is_empty(), "a half-read list is never answered");
        assert!(!index.is_synced("east"));
        let applied = index.apply("east", &Event::InitDone, now());
        assert!(applied.changed && applied.vanished.is_empty());
        assert_eq!(state(&index, "alice"), Some(InstanceState::Running));
        assert_eq!(index.get("bob"), Ok(None), "synced everywhere and absent: stopped");
        assert_eq!(index.list()[0].last_seen.as_deref(), Some(NOW), "the time comes in as an argument");
    }

    #[test]
    fn pods_are_added_changed_and_deleted() {
        let mut index = Index::new(["east"]);
        synced(&mut index, "east", &[]);
        index.apply("east", &Event::Apply(mk_pod("alice", "1", false)), now());
        assert_eq!(state(&index, "alice"), Some(InstanceState::Pending));
        index.apply("east", &Event::Apply(mk_pod("alice", "1", true)), now());
        assert_eq!(state(&index, "alice"), Some(InstanceState::Running));
        let applied = index.apply("east", &Event::Delete(mk_pod("alice", "1", true)), now());
        assert_eq!(applied.vanished, vec![Vanished { cluster: "east".into(), key: "alice".into() }]);
        assert_eq!(index.get("alice"), Ok(None));
    }

    #[test]
    fn deleting_an_old_pod_keeps_the_new_pod_of_the_same_instance() {
        let mut index = Index::new(["east"]);
        synced(&mut index, "east", &[mk_pod("alice", "new", true)]);
        index.apply("east", &Event::Delete(mk_pod("alice", "old", true)), now());
        assert_eq!(state(&index, "alice"), Some(InstanceState::Running));
    }

    #[test]
    fn an_unreachable_cluster_answers_unknown_never_stopped() {
        let mut index = Index::new(["east", "west"]);
        synced(&mut index, "east", &[mk_pod("alice", "1", true)]);
        synced(&mut index, "west", &[]);
        assert!(index.mark_unreachable("east", "connection refused"));
        assert!(!index.mark_unreachable("east", "connection refused"), "no change the second time");
        assert_eq!(state(&index, "alice"), Some(InstanceState::Unknown));
        assert_eq!(index.list()[0].state, InstanceState::Unknown);
        assert_eq!(index.get("bob"), Err(vec!["east".to_string()]), "absent but east may have it");
        assert_eq!(index.unsynced(), ["east"]);
    }

    #[test]
    fn a_relist_replaces_the_clusters_entries_and_reports_what_vanished() {
        let mut index = Index::new(["east"]);
        synced(&mut index, "east", &[mk_pod("alice", "1", true), mk_pod("bob", "2", true)]);
        index.mark_unreachable("east", "watch error");
        let applied = synced(&mut index, "east", &[mk_pod("bob", "2", true), mk_pod("carol", "3", false)]);
        assert_eq!(applied.vanished, vec![Vanished { cluster: "east".into(), key: "alice".into() }]);
        let keys: Vec<String> = index.list().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["bob", "carol"]);
        assert!(index.is_synced("east"), "a finished re-list makes the cluster synced again");
    }

    #[test]
    fn counts_per_cluster_and_a_users_servers_feed_placement_and_limits() {
        let mut index = Index::new(["east", "west"]);
        synced(&mut index, "east", &[mk_pod("alice", "1", true), mk_pod("bob", "2", false)]);
        synced(&mut index, "west", &[]);
        assert_eq!(index.instances_per_cluster(), BTreeMap::from([("east".to_string(), 2), ("west".to_string(), 0)]));
        assert_eq!(index.keys_of_user("alice"), ["alice"]);
        let mut stopping = mk_pod("alice", "1", true);
        stopping.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        index.apply("east", &Event::Apply(stopping), now());
        assert!(index.keys_of_user("alice").is_empty(), "a server being stopped does not count");
    }

    #[test]
    fn pods_without_an_instance_label_are_ignored() {
        let mut index = Index::new(["east"]);
        let mut stray = mk_pod("x", "9", true);
        stray.metadata.labels = None;
        synced(&mut index, "east", &[stray.clone()]);
        assert_eq!(index.apply("east", &Event::Apply(stray), now()), Applied::default());
        assert!(index.list().is_empty());
    }
}
