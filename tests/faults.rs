//! A failing world and hostile neighbours, each reproduced as described in the issue that
//! found it, against the real local clusters: a readiness blip, a cancelled stop with a Pod
//! stuck Terminating, a decoy Pod whose inventory names an unrelated object, a dropped watch.

#![allow(clippy::await_holding_lock)] // see common::serial

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use fleetspawn::kube::fleet::{self, Fleet};
use fleetspawn::service::{SpawnError, SpawnRequest, Spawner, SpawnerSettings};
use fleetspawn_core::bundle::Renderer;
use fleetspawn_core::instance::InstanceState;
use fleetspawn_core::naming::InstanceKey;
use futures::StreamExt;

const NS: &str = "fleetspawn-faults";

/// Every test here holds [`common::serial`]: the dropped-watch test resets every connection to
/// cluster-a, which would fail the others' kubectl calls.
async fn spawner() -> Spawner {
    spawner_with_grace(Duration::from_secs(1)).await
}

async fn spawner_with_grace(gc_grace: Duration) -> Spawner {
    let loaded = fleet::load(Some(&common::kubeconfig())).expect("kubeconfig");
    let fleet = Fleet::connect(&loaded).await;
    let profiles = fleetspawn::sources::profiles_builtin(&common::repo().join("tests/fixtures/faults-profiles.toml")).expect("profiles");
    let settings = SpawnerSettings { gc_interval: Duration::from_secs(1), gc_grace, home_namespace: common::home_namespace(), ..Default::default() };
    Spawner::start(fleet, profiles, Renderer::builtin().expect("templates"), settings, fleetspawn::metrics::Metrics::new()).await.expect("spawner")
}

/// Spawns `user`'s default server on profile `quick` and waits until it is ready.
async fn running(s: &Spawner, user: &str) -> String {
    s.spawn(SpawnRequest { user: user.into(), profile: "quick".into(), ..Default::default() }).await.expect("spawn accepted");
    let events: Vec<_> =
        tokio::time::timeout(Duration::from_secs(60), s.progress(user, "").expect("progress").subscribe().collect::<Vec<_>>()).await.expect("spawn ends");
    assert_eq!(events.last().and_then(|e| e.ready), Some(true), "{events:?}");
    wait_for(Duration::from_secs(10), || s.status(user, "").is_ok_and(|v| v.state == InstanceState::Running)).await;
    InstanceKey::new(user, "").object_name()
}

async fn wait_for(limit: Duration, mut ok: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < until, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pod_exists(name: &str) -> bool {
    !common::kubectl("cluster-a", &["get", "pod", "-n", NS, name, "--ignore-not-found", "-o", "name"]).trim().is_empty()
}

/// A running server whose Pod turns not-Ready (a probe failing under load, a node going
/// NotReady) past its start timeout is not deleted: it stays `running`, with the cause, and
/// only spawns that never became ready are subject to the start timeout.
#[tokio::test]
async fn a_readiness_blip_does_not_delete_a_running_server() {
    let _one = common::serial();
    let s = spawner().await;
    let user = common::unique("blip");
    let pod = running(&s, &user).await;
    // Older than the profile's start timeout (10 s), then not Ready.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let not_ready = r#"{"status":{"conditions":[{"type":"Ready","status":"False"}]}}"#;
    common::kubectl("cluster-a", &["patch", "pod", "-n", NS, &pod, "--subresource=status", "--type=strategic", "-p", not_ready]);
    wait_for(Duration::from_secs(10), || s.status(&user, "").is_ok_and(|v| v.state == InstanceState::Running && v.cause.is_some())).await;
    // Past another start timeout, through many reconciles, it is still there and running.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(pod_exists(&pod), "a running server was deleted because its readiness blipped");
    let seen = s.status(&user, "").expect("status");
    assert_eq!(seen.state, InstanceState::Running, "{seen:?}");
    s.stop(&user, "", false).await.expect("stop");
}

/// Garbage collection never takes a spawning server's objects, however long its pass takes:
/// even with no grace at all, passes running while servers spawn leave every one running (it
/// once listed the records before the objects, so a Pod created in between looked ownerless).
#[tokio::test]
async fn garbage_collection_with_no_grace_leaves_spawning_servers_alone() {
    let _one = common::serial();
    let s = spawner_with_grace(Duration::ZERO).await;
    let users: Vec<String> = (0..3).map(|_| common::unique("gcrace")).collect();
    let collector = {
        let s = s.clone();
        tokio::spawn(async move {
            loop {
                s.collect_garbage().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let pods = futures::future::join_all(users.iter().map(|u| running(&s, u))).await;
    // A few more passes over the running servers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    collector.abort();
    for (user, pod) in users.iter().zip(&pods) {
        assert!(pod_exists(pod), "{user}'s server was garbage-collected");
        s.stop(user, "", false).await.expect("stop");
    }
}

/// A stop whose caller goes away (a client timeout, `curl -m2`) while the Pod is held by a
/// finalizer runs on; once the Pod goes, the server can be started again: nothing is wedged.
#[tokio::test]
async fn a_cancelled_stop_of_a_pod_stuck_terminating_does_not_wedge_the_server() {
    let _one = common::serial();
    let s = spawner().await;
    let user = common::unique("wedge");
    let pod = running(&s, &user).await;
    common::kubectl("cluster-a", &["patch", "pod", "-n", NS, &pod, "--type=merge", "-p", r#"{"metadata":{"finalizers":["fleetspawn.test/hold"]}}"#]);
    assert!(tokio::time::timeout(Duration::from_secs(2), s.stop(&user, "", false)).await.is_err(), "the stop waits for the held Pod");
    common::kubectl("cluster-a", &["patch", "pod", "-n", NS, &pod, "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    wait_for(Duration::from_secs(20), || !pod_exists(&pod)).await;
    wait_for(Duration::from_secs(20), || matches!(s.status(&user, ""), Err(SpawnError::NotFound))).await;
    let again = s.spawn(SpawnRequest { user: user.clone(), profile: "quick".into(), ..Default::default() }).await;
    assert!(again.is_ok(), "the server can be started again: {again:?}");
    let stopped = tokio::time::timeout(Duration::from_secs(30), s.stop(&user, "", false)).await;
    assert!(matches!(stopped, Ok(Ok(()))), "a later stop answers: {stopped:?}");
}

/// A Pod anyone may create with fleetspawn's labels and an inventory annotation naming an
/// unrelated object: when fleetspawn removes the decoy, the unrelated object stays.
#[tokio::test]
async fn a_decoys_inventory_never_gets_an_unrelated_object_deleted() {
    let _one = common::serial();
    let s = spawner().await;
    let (scratch, victim_ns) = (common::unique("scratch"), common::unique("victimns"));
    let zed = common::unique("zed");
    for ns in [&scratch, &victim_ns] {
        common::kubectl("cluster-a", &["create", "namespace", ns]);
    }
    common::kubectl("cluster-a", &["create", "configmap", "victim", "-n", &victim_ns, "--from-literal=k=v"]);
    let inventory = format!(r#"[{{"apiVersion":"v1","kind":"ConfigMap","namespace":"{victim_ns}","name":"victim"}}]"#);
    let decoy = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "decoy", "namespace": scratch,
            "labels": {"app.kubernetes.io/managed-by": "fleetspawn", "fleetspawn.io/instance": zed},
            "annotations": {"fleetspawn.io/inventory": inventory, "fleetspawn.io/username": zed}},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/crashing:latest"}]},
    });
    common::kubectl_apply_to("cluster-a", &decoy.to_string());
    // The reaper removes the failed decoy (it is labelled), and only what is labelled.
    wait_for(Duration::from_secs(30), || {
        common::kubectl("cluster-a", &["get", "pod", "-n", &scratch, "decoy", "--ignore-not-found", "-o", "name"]).trim().is_empty()
    })
    .await;
    s.collect_garbage().await;
    let left = common::kubectl("cluster-a", &["get", "configmap", "-n", &victim_ns, "victim", "--ignore-not-found", "-o", "name"]);
    assert_eq!(left.trim(), "configmap/victim", "an object named only by a Pod's annotation was deleted");
    for ns in [&scratch, &victim_ns] {
        common::kubectl("cluster-a", &["delete", "namespace", ns, "--wait=false"]);
    }
}

/// A dropped watch connection (an API server restart, a load balancer's idle timeout; here
/// every connection to cluster-a's API server is reset with `ss -K`) heals within seconds:
/// running servers stay `running` and new spawns are accepted.
#[tokio::test]
async fn a_dropped_watch_connection_heals_within_seconds() {
    let _one = common::serial();
    let s = spawner().await;
    let user = common::unique("drop");
    running(&s, &user).await;
    let port = cluster_a_port();
    let killed = Command::new("ss").args(["-K", "-tn", "state", "established", &format!("( dport = :{port} )")]).output().expect("ss");
    assert!(killed.status.success(), "ss -K: {}", String::from_utf8_lossy(&killed.stderr));
    // Give the watch time to notice, then it must be synced and the server running.
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_for(Duration::from_secs(10), || s.registry().is_synced("cluster-a") && s.status(&user, "").is_ok_and(|v| v.state == InstanceState::Running)).await;
    let other = common::unique("drop-new");
    let started = s.spawn(SpawnRequest { user: other.clone(), profile: "quick".into(), ..Default::default() }).await;
    assert!(started.is_ok(), "a new spawn on cluster-a after the drop: {started:?}");
    for u in [&user, &other] {
        s.stop(u, "", false).await.expect("stop");
    }
}

fn cluster_a_port() -> String {
    let server = common::kubectl("cluster-a", &["config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"]);
    server.trim().rsplit(':').next().expect("port").to_string()
}
