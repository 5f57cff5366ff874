//! The `UserServer` record as operators and attackers meet it, against the real local
//! clusters: `kubectl apply` spawns and `kubectl delete` cleans up, a lifespan culls, a Pod
//! that copies another user's labels is neither believed nor kept, and a daemon killed with
//! SIGKILL mid-spawn is carried on by the next one.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{Daemon, DaemonOptions, HUB_TOKEN};
use fleetspawn::kube::fleet::{self, Fleet};
use fleetspawn::service::{SpawnError, SpawnRequest, Spawner, SpawnerSettings};
use fleetspawn_core::bundle::Renderer;
use fleetspawn_core::instance::InstanceState;
use fleetspawn_core::naming::InstanceKey;

const PROFILES: &str = "tests/fixtures/lifecycle-profiles.toml";

async fn spawner(home: &str) -> Spawner {
    let loaded = fleet::load(Some(&common::kubeconfig())).expect("kubeconfig");
    let profiles = fleetspawn::sources::profiles_builtin(&common::repo().join(PROFILES)).expect("profiles");
    let settings = SpawnerSettings { gc_interval: Duration::from_secs(1), gc_grace: Duration::from_secs(2), home_namespace: home.into(), ..Default::default() };
    Spawner::start(Fleet::connect(&loaded).await, profiles, Renderer::builtin().expect("templates"), settings, fleetspawn::metrics::Metrics::new())
        .await
        .expect("spawner")
}

fn running(s: &Spawner, user: &str) -> bool {
    s.status(user, "").is_ok_and(|v| v.state == InstanceState::Running)
}

fn record_field(home: &str, name: &str, path: &str) -> String {
    common::kubectl("cluster-a", &["get", "userserver", "-n", home, name, "--ignore-not-found", "-o", &format!("jsonpath={{{path}}}")])
}

#[tokio::test]
async fn kubectl_apply_of_a_user_server_spawns_and_kubectl_delete_cleans_up() {
    let home = common::home_namespace();
    let s = spawner(&home).await;
    let user = common::unique("applied");
    let name = InstanceKey::new(&user, "").key().to_string();
    common::kubectl_apply_to(
        "cluster-a",
        &format!("apiVersion: fleetspawn.io/v1alpha1\nkind: UserServer\nmetadata:\n  name: {name}\n  namespace: {home}\nspec:\n  user: {user}\n  profile: b\n"),
    );
    common::until("the applied record runs", Duration::from_secs(60), || running(&s, &user)).await;
    let table = common::kubectl("cluster-a", &["get", "userservers", "-n", &home]);
    let row = table.lines().find(|l| l.starts_with(&name)).unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
    for column in [user.as_str(), "b", "cluster-b", "Running", "http://cluster-b.127.0.0.1.nip.io:8080/user/"] {
        assert!(row.contains(column), "column {column:?} missing from the printer columns:\n{table}");
    }
    assert_eq!(record_field(&home, &name, ".status.conditions[?(@.type==\"Ready\")].status"), "True");
    let pods = common::objects_of("cluster-b", &name).into_iter().filter(|o| o.starts_with("pod/")).count();
    assert_eq!(pods, 1);

    common::kubectl("cluster-a", &["delete", "userserver", "-n", &home, &name, "--wait=false"]);
    common::until("kubectl delete removed the remote objects and then the record", Duration::from_secs(60), || {
        common::objects_of("cluster-b", &name).is_empty() && record_field(&home, &name, ".metadata.name").is_empty()
    })
    .await;
    assert!(matches!(s.status(&user, ""), Err(SpawnError::NotFound)));
}

#[tokio::test]
async fn a_lifespan_stops_the_server_with_reason_max_age() {
    let home = common::home_namespace();
    let s = spawner(&home).await;
    let user = common::unique("lifespan");
    let name = InstanceKey::new(&user, "").key().to_string();
    s.spawn(SpawnRequest { user: user.clone(), profile: "short-lived".into(), ..Default::default() }).await.expect("spawn");
    common::until("ready", Duration::from_secs(60), || running(&s, &user)).await;
    let ready_at = Instant::now();
    // Its lifespan is 20 s; it is stopped by the reconciler within a resync after that.
    common::until("culled", Duration::from_secs(60), || matches!(s.status(&user, ""), Err(SpawnError::NotFound))).await;
    assert!(ready_at.elapsed() >= Duration::from_secs(15), "culled after {:?}, before its lifespan", ready_at.elapsed());
    assert_eq!(record_field(&home, &name, ".status.failure.reason"), "MaxAge");
    assert_eq!(record_field(&home, &name, ".status.phase"), "Stopped");
    assert_eq!(record_field(&home, &name, ".spec.started"), "false");
    let events = common::kubectl("cluster-a", &["get", "events", "-n", &home, "--field-selector", &format!("involvedObject.name={name}"), "-o", "name"]);
    let described = common::kubectl("cluster-a", &["describe", "userserver", "-n", &home, &name]);
    assert!(described.contains("Culled") && described.contains("lifespan"), "no Culled event:\n{described}\n{events}");
    assert!(common::objects_of("cluster-b", &name).is_empty(), "culled means stopped: nothing left");
}

/// The reproduction: a Pod anyone may create, labelled with fleetspawn's labels and
/// another user's instance key (and a URL of the attacker's), in any namespace. It must not
/// change what that user sees, must not make a server appear for a user who has none, and
/// is collected; the real server stays.
#[tokio::test]
async fn a_pod_copying_another_users_labels_is_not_believed_and_is_collected() {
    let home = common::home_namespace();
    let s = spawner(&home).await;
    let bob = common::unique("bob");
    let zed = common::unique("zed");
    s.spawn(SpawnRequest { user: bob.clone(), profile: "b".into(), ..Default::default() }).await.expect("spawn");
    common::until("bob's server runs", Duration::from_secs(60), || running(&s, &bob)).await;
    let url = s.status(&bob, "").expect("status").url;
    let scratch = common::unique("scratch");
    common::kubectl("cluster-b", &["create", "namespace", &scratch]);
    for (victim, owner) in [(&bob, "not-bobs-uid"), (&zed, "made-up")] {
        let key = InstanceKey::new(victim, "").key().to_string();
        let decoy = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("decoy-{key}"), "namespace": scratch,
                "labels": {"app.kubernetes.io/managed-by": "fleetspawn", "fleetspawn.io/instance": key, "fleetspawn.io/owner": owner, "fleetspawn.io/home": home},
                "annotations": {"fleetspawn.io/url": "https://attacker.example/", "fleetspawn.io/username": victim}},
            "spec": {"containers": [{"name": "c", "image": "quay.io/jupyter/base-notebook:latest"}]},
        });
        common::kubectl_apply_to("cluster-b", &decoy.to_string());
    }
    // While the decoys exist: bob's server is his, zed has none.
    for _ in 0..10 {
        let seen = s.status(&bob, "").expect("bob's status");
        assert_eq!((seen.state, &seen.url), (InstanceState::Running, &url), "a decoy changed what bob sees");
        assert!(matches!(s.status(&zed, ""), Err(SpawnError::NotFound)), "a decoy made a server appear for zed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    common::until("the decoys are collected", Duration::from_secs(30), || {
        common::kubectl("cluster-b", &["get", "pods", "-n", &scratch, "-o", "name"]).trim().is_empty()
    })
    .await;
    assert!(running(&s, &bob), "bob's server survived the collection of the decoys");
    s.stop(&bob, "", false).await.expect("stop");
    common::kubectl("cluster-b", &["delete", "namespace", &scratch, "--wait=false"]);
}

/// A `fleetspawn serve` killed with SIGKILL a moment after it accepted a spawn: the next
/// daemon on the same records carries the spawn to Ready, with exactly one Pod, and a stop
/// then leaves nothing behind.
#[tokio::test]
async fn a_daemon_killed_mid_spawn_is_carried_on_by_the_next_one() {
    let home = common::home_namespace();
    let options = || DaemonOptions { profiles: std::path::Path::new(PROFILES), home_namespace: Some(&home), ..Default::default() };
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
    let user = common::unique("killed");
    let key = InstanceKey::new(&user, "").key().to_string();
    let first = Daemon::start(options());
    let path = format!("/api/v1/users/{user}/server");
    let put = http.put(format!("{}{path}", first.url)).bearer_auth(HUB_TOKEN).json(&serde_json::json!({"profile": "c"})).send().await.expect("put");
    assert_eq!(put.status(), reqwest::StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(first); // SIGKILL: no shutdown, its tasks die where they are

    let second = Daemon::start(options());
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let r = http.get(format!("{}{path}", second.url)).bearer_auth(HUB_TOKEN).send().await.expect("get");
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        if body["state"] == "running" {
            break;
        }
        assert!(Instant::now() < until, "not running after the restart: {body}\n{}", second.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let pods = common::objects_of("cluster-c", &key).into_iter().filter(|o| o.starts_with("pod/")).count();
    assert_eq!(pods, 1, "one Pod, not one per daemon");
    let deleted = http.delete(format!("{}{path}", second.url)).bearer_auth(HUB_TOKEN).send().await.expect("delete");
    assert_eq!(deleted.status(), reqwest::StatusCode::NO_CONTENT);
    assert_eq!(common::objects_of("cluster-c", &key), Vec::<String>::new());
}

/// The holder of a cluster's Lease in `home` (empty if none).
fn lease_holder(home: &str, context: &str) -> String {
    let name = format!("fleetspawn-shard-{context}");
    common::kubectl("cluster-a", &["get", "lease", "-n", home, &name, "--ignore-not-found", "-o", "jsonpath={.spec.holderIdentity}"]).trim().to_string()
}

/// A daemon's replica identity, from its log.
fn identity_of(d: &Daemon) -> String {
    let log = d.log();
    let line = log.lines().find(|l| l.contains("competing for the clusters' Leases")).unwrap_or_else(|| panic!("no identity in the log:\n{log}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    v["fields"]["replica"].as_str().or_else(|| v["replica"].as_str()).expect("replica field").to_string()
}

/// A start answered as taken: 202 while it starts, or 200 when the replica holding the
/// cluster's Lease had it running before the answer was sent (the Pod is on a kwok node).
fn started(status: reqwest::StatusCode) -> bool {
    status == reqwest::StatusCode::ACCEPTED || status == reqwest::StatusCode::OK
}

/// Two replicas on the same records split the clusters' Leases. The one holding cluster-b's
/// is killed with SIGKILL in the middle of a 200-user storm on cluster-b: the other takes the
/// Lease over within its duration and every spawn ends running exactly once (one Pod per
/// user), none lost, none duplicated.
#[tokio::test]
async fn two_replicas_split_the_clusters_and_one_killed_mid_storm_loses_nothing() {
    let home = common::home_namespace();
    let options = || DaemonOptions { profiles: std::path::Path::new(PROFILES), home_namespace: Some(&home), max_concurrent_spawns: 512, ..Default::default() };
    let (a, b) = (Daemon::start(options()), Daemon::start(options()));
    let (ida, idb) = (identity_of(&a), identity_of(&b));
    common::until("the replicas split the Leases", Duration::from_secs(90), || {
        let holders: Vec<String> = ["cluster-a", "cluster-b", "cluster-c"].iter().map(|c| lease_holder(&home, c)).collect();
        holders.iter().all(|h| *h == ida || *h == idb) && holders.contains(&ida) && holders.contains(&idb)
    })
    .await;
    let (victim, survivor, survivor_id) = if lease_holder(&home, "cluster-b") == ida { (a, b, idb) } else { (b, a, ida) };
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("client");
    let prefix = common::unique("ha");
    let users: Vec<String> = (0..200).map(|i| format!("{prefix}-{i}")).collect();
    let put = |u: &String| {
        let (http, url) = (http.clone(), format!("{}/api/v1/users/{u}/server", survivor.url));
        async move { http.put(url).bearer_auth(HUB_TOKEN).json(&serde_json::json!({"profile": "b"})).send().await.map(|r| r.status()) }
    };
    let (first, rest) = users.split_at(100);
    for r in futures::future::join_all(first.iter().map(put)).await {
        assert!(started(r.expect("put")));
    }
    let killed_at = Instant::now();
    drop(victim); // SIGKILL, holding cluster-b's Lease, with spawns in flight there
    for r in futures::future::join_all(rest.iter().map(put)).await {
        assert!(started(r.expect("put")));
    }
    common::until("the survivor takes cluster-b's Lease", Duration::from_secs(60), || lease_holder(&home, "cluster-b") == survivor_id).await;
    let takeover = killed_at.elapsed();
    eprintln!("takeover of cluster-b's Lease after SIGKILL: {:.1} s", takeover.as_secs_f64());
    assert!(takeover < Duration::from_secs(30), "takeover took {takeover:?}");
    let until = Instant::now() + Duration::from_secs(240);
    loop {
        let states = futures::future::join_all(users.iter().map(|u| {
            let (http, url) = (http.clone(), format!("{}/api/v1/users/{u}/server", survivor.url));
            async move {
                let body: serde_json::Value = http.get(url).bearer_auth(HUB_TOKEN).send().await.ok()?.json().await.ok()?;
                body["state"].as_str().map(str::to_string)
            }
        }))
        .await;
        let running = states.iter().filter(|s| s.as_deref() == Some("running")).count();
        if running == users.len() {
            break;
        }
        assert!(Instant::now() < until, "{running} of {} running; states: {states:?}", users.len());
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let pods = common::kubectl(
        "cluster-b",
        &["get", "pods", "-n", "fleetspawn-lifecycle", "-o", "jsonpath={range .items[*]}{.metadata.annotations.fleetspawn\\.io/username}{\"\\n\"}{end}"],
    );
    let mut owners: Vec<&str> = pods.lines().filter(|l| l.starts_with(&prefix)).collect();
    owners.sort_unstable();
    let total = owners.len();
    owners.dedup();
    assert_eq!((total, owners.len()), (200, 200), "one Pod per user, none lost or duplicated");
    for r in futures::future::join_all(users.iter().map(|u| {
        let (http, url) = (http.clone(), format!("{}/api/v1/users/{u}/server", survivor.url));
        async move { http.delete(url).bearer_auth(HUB_TOKEN).send().await.map(|r| r.status()) }
    }))
    .await
    {
        assert_eq!(r.expect("delete"), reqwest::StatusCode::NO_CONTENT);
    }
}
