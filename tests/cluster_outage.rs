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

    let settings = SpawnerSettings { home_namespace: common::home_namespace(), ..Default::default() };
    let s = common::spawner(&common::kubeconfig(), &common::repo().join("tests/fixtures/profiles.toml"), settings).await;
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

async fn lifecycle_spawner(home: &str) -> fleetspawn::service::Spawner {
    let settings = fleetspawn::service::SpawnerSettings { max_concurrent_spawns: 256, home_namespace: home.into(), ..Default::default() };
    common::spawner(&common::kubeconfig(), &common::repo().join("tests/fixtures/lifecycle-profiles.toml"), settings).await
}

/// The home cluster (the records, cluster-a) stopped for 30 s: servers elsewhere run on
/// untouched; reads answer from the records' cache; writes answer "home unavailable, nothing
/// changed"; when it returns, everything works again.
#[tokio::test]
async fn the_home_cluster_stopped_for_30s_leaves_servers_running_reads_answering_and_writes_refused() {
    use fleetspawn::service::{SpawnError, SpawnRequest};
    use fleetspawn_core::instance::InstanceState;
    use std::time::Duration;
    let _serial = common::serial();
    let home = common::home_namespace();
    let s = lifecycle_spawner(&home).await;
    let user = common::unique("homeless");
    let req = |u: &str| SpawnRequest { user: u.into(), profile: "b".into(), ..Default::default() };
    s.spawn(req(&user)).await.expect("spawn");
    common::until("running", Duration::from_secs(60), || s.status(&user, "").is_ok_and(|v| v.state == InstanceState::Running)).await;
    let pod = fleetspawn_core::naming::InstanceKey::new(&user, "").object_name();
    let pod_uid = || common::kubectl("cluster-b", &["get", "pod", "-n", "fleetspawn-lifecycle", &pod, "-o", "jsonpath={.metadata.uid}"]);
    let uid_before = pod_uid();

    let outage = common::ClusterOutage::begin("cluster-a");
    let started = std::time::Instant::now();
    let other = common::unique("homeless-new");
    while started.elapsed() < Duration::from_secs(30) {
        let seen = s.status(&user, "").expect("reads answer from the cache");
        assert_eq!(seen.state, InstanceState::Running, "{seen:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let refused = s.spawn(req(&other)).await;
    assert!(matches!(refused, Err(SpawnError::Home(_))), "a write without the home cluster: {refused:?}");
    let refused = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("nothing was changed"), "{refused}");
    outage.end();

    assert_eq!(pod_uid(), uid_before, "the running server was not touched");
    common::until("the records' watch is back", Duration::from_secs(60), || s.status(&user, "").is_ok_and(|v| v.state == InstanceState::Running)).await;
    // Writes work again.
    let mut accepted = s.spawn(req(&other)).await;
    for _ in 0..30 {
        if accepted.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        accepted = s.spawn(req(&other)).await;
    }
    accepted.expect("a spawn after the home cluster came back");
    common::until("the new one runs", Duration::from_secs(60), || s.status(&other, "").is_ok_and(|v| v.state == InstanceState::Running)).await;
    for u in [&user, &other] {
        s.stop(u, "", false).await.expect("stop");
    }
}

/// A target cluster's API server stopped for 60 s while 20 servers run there and 5 spawns
/// are in flight: its servers are `unknown`, nothing is deleted; once it is back, the 20 run
/// with the same Pods and each of the 5 is running or failed with a cause.
#[tokio::test]
async fn a_target_cluster_stopped_for_60s_deletes_nothing_and_everything_converges() {
    use fleetspawn::service::SpawnRequest;
    use fleetspawn_core::instance::InstanceState;
    use std::collections::BTreeMap;
    use std::time::Duration;
    let _serial = common::serial();
    let home = common::home_namespace();
    let s = lifecycle_spawner(&home).await;
    let prefix = common::unique("flaky");
    let req = |u: &str| SpawnRequest { user: u.into(), profile: "b".into(), ..Default::default() };
    let running: Vec<String> = (0..20).map(|i| format!("{prefix}-run-{i}")).collect();
    for r in futures::future::join_all(running.iter().map(|u| s.spawn(req(u)))).await {
        r.expect("spawn");
    }
    common::until("20 running", Duration::from_secs(120), || running.iter().all(|u| s.status(u, "").is_ok_and(|v| v.state == InstanceState::Running))).await;
    let uids = || -> BTreeMap<String, String> {
        let out = common::kubectl(
            "cluster-b",
            &["get", "pods", "-n", "fleetspawn-lifecycle", "-o", "jsonpath={range .items[*]}{.metadata.name} {.metadata.uid}{\"\\n\"}{end}"],
        );
        out.lines().filter_map(|l| l.split_once(' ')).filter(|(n, _)| n.contains(&prefix)).map(|(n, u)| (n.to_string(), u.to_string())).collect()
    };
    let before = uids();
    assert_eq!(before.len(), 20);
    let in_flight: Vec<String> = (0..5).map(|i| format!("{prefix}-new-{i}")).collect();
    for r in futures::future::join_all(in_flight.iter().map(|u| s.spawn(req(u)))).await {
        r.expect("spawn");
    }
    let outage = common::ClusterOutage::begin("cluster-b");
    common::until("20 unknown", Duration::from_secs(20), || running.iter().all(|u| s.status(u, "").is_ok_and(|v| v.state == InstanceState::Unknown))).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    for u in &running {
        assert_eq!(s.status(u, "").map(|v| v.state).ok(), Some(InstanceState::Unknown), "{u} during the outage");
    }
    outage.end();
    common::until("the 20 run again", Duration::from_secs(90), || running.iter().all(|u| s.status(u, "").is_ok_and(|v| v.state == InstanceState::Running)))
        .await;
    let after = uids();
    for (name, uid) in &before {
        assert_eq!(after.get(name), Some(uid), "{name} was deleted or replaced during the outage");
    }
    common::until("the 5 in flight ended", Duration::from_secs(120), || {
        in_flight.iter().all(|u| s.status(u, "").is_ok_and(|v| v.state == InstanceState::Running || (v.state == InstanceState::Failed && v.cause.is_some())))
    })
    .await;
    for r in futures::future::join_all(running.iter().chain(&in_flight).map(|u| s.stop(u, "", false))).await {
        r.expect("stop");
    }
}
