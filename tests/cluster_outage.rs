//! What fleetspawn reports when one real cluster goes down. These tests stop a local cluster,
//! so they live in their own test binary and run one at a time.

mod common;

use fleetspawn::kubeconfig::{self, Fleet};

#[tokio::test]
async fn a_stopped_cluster_is_reported_unhealthy_by_name_and_the_others_still_work() {
    let loaded = kubeconfig::load(Some(&common::kubeconfig())).expect("load kubeconfig");
    let fleet = Fleet::connect(&loaded).await;
    let outage = common::ClusterOutage::begin("cluster-b");
    let health = fleet.health().await;
    let by_name = |n: &str| health.iter().find(|h| h.context == n).expect("context present").clone();
    let b = by_name("cluster-b");
    assert!(!b.healthy);
    assert!(b.cause.as_deref().is_some_and(|c| c.to_lowercase().contains("connect")), "{b:?}");
    assert!(by_name("cluster-a").healthy && by_name("cluster-c").healthy, "{health:?}");
    outage.end();
    // Back up: the same client recovers without being rebuilt.
    assert!(fleet.get("cluster-b").expect("cluster-b").probe().await.healthy);
}
