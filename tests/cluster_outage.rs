//! What fleetspawn reports when one real cluster goes down. These tests stop a local cluster,
//! so they live in their own test binary and run one at a time.
#![allow(clippy::await_holding_lock)] // see common::serial

mod common;

use fleetspawn::kube::fleet::{self, Fleet};

#[tokio::test]
async fn a_stopped_cluster_is_reported_unhealthy_by_name_and_the_others_still_work() {
    let _serial = common::serial();
    let loaded = fleet::load(Some(&common::kubeconfig())).expect("load kubeconfig");
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

#[tokio::test]
async fn instances_on_a_stopped_cluster_are_unknown_not_stopped_and_come_back_running() {
    use fleetspawn::service::{SpawnRequest, Spawner, SpawnerSettings};
    use fleetspawn_core::instance::InstanceState;
    use futures::StreamExt;
    use std::time::Duration;
    let _serial = common::serial();

    let loaded = fleet::load(Some(&common::kubeconfig())).expect("kubeconfig");
    let profiles = fleetspawn::sources::profiles_builtin(&common::repo().join("tests/fixtures/profiles.toml")).expect("profiles");
    let renderer = fleetspawn_core::bundle::Renderer::builtin().expect("templates");
    let s = Spawner::start(
        Fleet::connect(&loaded).await,
        profiles,
        renderer,
        SpawnerSettings { home_namespace: common::home_namespace(), ..Default::default() },
        fleetspawn::metrics::Metrics::new(),
    )
    .await
    .expect("spawner");
    let req = |user: &str, profile: &str| SpawnRequest { user: user.into(), profile: profile.into(), ..Default::default() };
    let on_b = common::unique("outage-b");
    s.spawn(req(&on_b, "b")).await.expect("spawn on b");
    let end = s.progress(&on_b, "").expect("progress").subscribe().collect::<Vec<_>>().await;
    assert_eq!(end.last().and_then(|e| e.ready), Some(true), "{end:?}");

    let outage = common::ClusterOutage::begin("cluster-b");
    let state_of = |s: &Spawner, u: &str| s.status(u, "").map(|v| v.state).ok();
    let mut seen = None;
    for _ in 0..100 {
        seen = state_of(&s, &on_b);
        if seen == Some(InstanceState::Unknown) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, Some(InstanceState::Unknown), "instances of a down cluster are unknown, never stopped");
    // Spawns elsewhere still work.
    let on_a = common::unique("outage-a");
    s.spawn(req(&on_a, "a")).await.expect("spawn on a during the outage");
    let end = s.progress(&on_a, "").expect("progress").subscribe().collect::<Vec<_>>().await;
    assert_eq!(end.last().and_then(|e| e.ready), Some(true), "{end:?}");
    // Spawning on the down cluster is refused with the cluster named.
    let err = s.spawn(req(&common::unique("outage-b2"), "b")).await.expect_err("cluster-b is down");
    assert!(err.to_string().contains("cluster-b"), "{err}");

    outage.end();
    for _ in 0..200 {
        seen = state_of(&s, &on_b);
        if seen == Some(InstanceState::Running) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, Some(InstanceState::Running), "re-synced after the cluster came back");
    s.stop(&on_b, "", false).await.expect("stop b");
    s.stop(&on_a, "", false).await.expect("stop a");
}
