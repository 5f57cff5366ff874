//! Sharding by cluster with Leases (coordination.k8s.io, in the home namespace): each target
//! cluster has a Lease `fleetspawn-shard-<cluster>`, and only the replica holding it writes to
//! that cluster (spawns, stops, status from observation, garbage collection). Every replica
//! also holds a Lease of its own, `fleetspawn-member-<identity>`, so replicas can count each
//! other: each takes cluster Leases up to its fair share (`decide::fair_share`) and lets go
//! of what it holds beyond it. A replica that dies stops renewing; its clusters are taken
//! over within the Lease duration, and their spawns continue from the records' status.
//!
//! The Leases are kept by kube-lease-manager (server-side apply, so two replicas never both
//! hold one).

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use fleetspawn_core::naming::InstanceKey;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::decide;

/// How long a Lease is valid after its last renewal: a dead replica's clusters are taken over
/// within this.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long before expiry the holder renews.
const LEASE_GRACE: Duration = Duration::from_secs(5);
/// How often a replica looks at how many replicas there are and what it holds.
const REBALANCE_INTERVAL: Duration = Duration::from_secs(3);
/// A replica that let go of a cluster Lease (beyond its share) stays away from it this long.
const YIELD_FOR: Duration = Duration::from_secs(20);

const MEMBER_PREFIX: &str = "fleetspawn-member-";

/// The Lease of one target cluster.
pub fn lease_name(context: &str) -> String {
    format!("fleetspawn-shard-{}", InstanceKey::new(context, "").key())
}

/// What this replica holds.
pub struct Shards {
    identity: String,
    held: RwLock<BTreeSet<String>>,
}

impl Shards {
    /// Whether this replica holds the cluster's Lease (and so may write to it).
    pub fn holds(&self, context: &str) -> bool {
        self.held.read().unwrap_or_else(PoisonError::into_inner).contains(context)
    }

    /// The clusters this replica holds.
    pub fn held(&self) -> BTreeSet<String> {
        self.held.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Gives up `context` if this replica holds more than `fair` (one at a time, so two
    /// clusters seeing the excess at once do not both go); whether it did.
    fn give_up(&self, context: &str, fair: usize) -> bool {
        let mut held = self.held.write().unwrap_or_else(PoisonError::into_inner);
        held.len() > fair && held.remove(context)
    }

    fn set(&self, context: &str, holding: bool) -> bool {
        let mut held = self.held.write().unwrap_or_else(PoisonError::into_inner);
        if holding {
            held.insert(context.to_string())
        } else {
            held.remove(context)
        }
    }

    /// Starts keeping this replica's member Lease (a `member`; a guest has none) and competing
    /// for the clusters' Leases in `namespace` of the home cluster. `changed` gets a cluster's name whenever this replica
    /// takes or loses it. Leases are released at `shutdown`.
    pub fn start(
        client: Client,
        namespace: &str,
        contexts: Vec<String>,
        member: bool,
        shutdown: CancellationToken,
        changed: mpsc::UnboundedSender<String>,
    ) -> Arc<Shards> {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "fleetspawn".into());
        let identity = format!("{}-{}", InstanceKey::new(&host, "").key(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
        tracing::info!(replica = %identity, clusters = contexts.len(), member, "competing for the clusters' Leases");
        let shards = Arc::new(Shards { identity: identity.clone(), held: RwLock::default() });
        if member {
            let name = format!("{MEMBER_PREFIX}{identity}");
            tokio::spawn(keep_member(client.clone(), namespace.to_string(), name, identity.clone(), shutdown.clone()));
        }
        for context in contexts.iter().cloned() {
            let run = ShardRun {
                shards: shards.clone(),
                client: client.clone(),
                namespace: namespace.to_string(),
                clusters: contexts.len(),
                context,
                shutdown: shutdown.clone(),
                changed: changed.clone(),
            };
            tokio::spawn(run.compete());
        }
        shards
    }
}

fn manager(client: Client, namespace: &str, name: &str, identity: &str) -> LeaseManagerBuilder {
    LeaseManagerBuilder::new(client, name)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(LEASE_DURATION.as_secs())
        .with_grace(LEASE_GRACE.as_secs())
}

/// Keeps this replica's member Lease until shutdown (then releases it).
async fn keep_member(client: Client, namespace: String, name: String, identity: String, shutdown: CancellationToken) {
    loop {
        match manager(client.clone(), &namespace, &name, &identity).build().await {
            Ok(m) => loop {
                tokio::select! {
                    r = m.changed() => if let Err(e) = r {
                        tracing::warn!(error = %e, "renewing this replica's member Lease");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    },
                    () = shutdown.cancelled() => {
                        let _ = m.release().await;
                        return;
                    }
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "creating this replica's member Lease; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// How long one request about Leases may take: a connection that hangs (an API server coming
/// back) never stalls the renewals.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

fn timed_out() -> kube_lease_manager::LeaseManagerError {
    kube_lease_manager::LeaseManagerError::InconsistentState(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()))
}

/// Replicas whose member Lease was renewed within its duration (`None`: not known now).
async fn live_members(leases: &Api<Lease>, now: Timestamp) -> Option<usize> {
    let list = tokio::time::timeout(REQUEST_TIMEOUT, leases.list(&ListParams::default())).await.ok()?.ok()?;
    let live = list
        .items
        .iter()
        .filter(|l| l.metadata.name.as_deref().is_some_and(|n| n.starts_with(MEMBER_PREFIX)))
        .filter_map(|l| l.spec.as_ref())
        .filter(|spec| spec.holder_identity.is_some())
        .filter(|spec| {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            spec.renew_time.as_ref().is_some_and(|t| now.as_second() - t.0.as_second() <= duration)
        })
        .count();
    Some(live)
}

/// One cluster's Lease, as this replica competes for it.
struct ShardRun {
    shards: Arc<Shards>,
    client: Client,
    namespace: String,
    clusters: usize,
    context: String,
    shutdown: CancellationToken,
    changed: mpsc::UnboundedSender<String>,
}

impl ShardRun {
    fn note(&self, holding: bool) {
        if self.shards.set(&self.context, holding) {
            tracing::info!(cluster = %self.context, replica = %self.shards.identity, holding, "cluster Lease");
            let _ = self.changed.send(self.context.clone());
        }
    }

    /// The manager of the cluster's Lease (creating the Lease if needed), retried until it
    /// works; `None` at shutdown.
    async fn manager(&self, name: &str) -> Option<LeaseManager> {
        loop {
            let built = tokio::time::timeout(REQUEST_TIMEOUT, manager(self.client.clone(), &self.namespace, name, &self.shards.identity).build()).await;
            match built.unwrap_or_else(|_| Err(timed_out())) {
                Ok(m) => return Some(m),
                Err(e) => {
                    tracing::warn!(cluster = %self.context, error = %e, "creating the cluster's Lease; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(2)) => {}
                        () = self.shutdown.cancelled() => return None,
                    }
                }
            }
        }
    }

    async fn compete(self) {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = lease_name(&self.context);
        let Some(mut m) = self.manager(&name).await else { return };
        let mut tick = tokio::time::interval(REBALANCE_INTERVAL);
        loop {
            // How many this replica may hold now.
            let members = live_members(&leases, Timestamp::now()).await.unwrap_or(1);
            let fair = decide::fair_share(self.clusters, members);
            if self.shards.give_up(&self.context, fair) {
                // Beyond its share: let another replica have it.
                tracing::info!(cluster = %self.context, replica = %self.shards.identity, fair, members, "cluster Lease given up to another replica");
                let _ = self.changed.send(self.context.clone());
                if !matches!(tokio::time::timeout(REQUEST_TIMEOUT, m.release()).await, Ok(Ok(()))) {
                    tracing::warn!(cluster = %self.context, "could not release the cluster's Lease (it expires by itself)");
                }
                tokio::select! {
                    () = tokio::time::sleep(YIELD_FOR) => {}
                    () = self.shutdown.cancelled() => return,
                }
                continue;
            }
            let holding = self.shards.holds(&self.context);
            let held = self.shards.held().len();
            if !holding && held >= fair {
                tokio::select! {
                    _ = tick.tick() => continue,
                    () = self.shutdown.cancelled() => return,
                }
            }
            // Take it when free, keep it renewed while held; look again every interval.
            tokio::select! {
                state = m.changed() => match state {
                    Ok(holding) => self.note(holding),
                    Err(e) => {
                        // Not renewed: stop writing to the cluster. The manager is made anew, so
                        // that it reports the Lease as taken again when it renews it.
                        tracing::warn!(cluster = %self.context, error = %e, "the cluster's Lease");
                        self.note(false);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let Some(fresh) = self.manager(&name).await else { return };
                        m = fresh;
                    }
                },
                _ = tick.tick() => {}
                () = self.shutdown.cancelled() => {
                    if self.shards.holds(&self.context) {
                        let _ = tokio::time::timeout(REQUEST_TIMEOUT, m.release()).await;
                        self.note(false);
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clusters_lease_is_named_after_it() {
        assert_eq!(lease_name("cluster-b"), "fleetspawn-shard-cluster-b");
        let odd = lease_name("arn:aws:eks:eu-west-1:123:cluster/Prod");
        assert!(odd.starts_with("fleetspawn-shard-") && fleetspawn_core::naming::is_dns1123_label(&odd["fleetspawn-shard-".len()..]), "{odd}");
    }
}
