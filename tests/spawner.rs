//! The spawn lifecycle against the real local clusters: spawn, progress, readiness, failures,
//! drift, concurrency and stop. Each test uses users of its own.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use fleetspawn::kube::fleet::{self, Fleet};
use fleetspawn::service::{SpawnError, SpawnRequest, Spawner, SpawnerSettings};
use fleetspawn_core::bundle::Renderer;
use fleetspawn_core::instance::InstanceState;
use fleetspawn_core::lifecycle::{FailureKind, ProgressEvent};
use fleetspawn_core::naming::InstanceKey;
use futures::StreamExt;

async fn spawner_with(settings: SpawnerSettings) -> Spawner {
    let loaded = fleet::load(Some(&common::kubeconfig())).expect("kubeconfig");
    let fleet = Fleet::connect(&loaded).await;
    let profiles = fleetspawn::sources::profiles_builtin(&common::repo().join("tests/fixtures/profiles.toml")).expect("test profiles");
    let renderer = Renderer::builtin().expect("templates");
    Spawner::start(fleet, profiles, renderer, settings, fleetspawn::metrics::Metrics::new()).await.expect("spawner")
}

async fn spawner() -> Spawner {
    spawner_with(SpawnerSettings { max_concurrent_spawns: 256, max_servers_per_user: 3, home_namespace: common::home_namespace(), ..Default::default() }).await
}

fn request(user: &str, server: &str, profile: &str) -> SpawnRequest {
    SpawnRequest { user: user.into(), server: server.into(), profile: profile.into(), ..Default::default() }
}

/// Follows a spawn's progress to its end.
async fn progress_to_end(s: &Spawner, user: &str, server: &str) -> Vec<ProgressEvent> {
    let progress = s.progress(user, server).expect("a spawn in flight");
    tokio::time::timeout(Duration::from_secs(90), progress.subscribe().collect::<Vec<_>>()).await.expect("spawn ends within 90s")
}

fn messages(events: &[ProgressEvent]) -> String {
    events.iter().map(|e| format!("[{:3}] {}", e.progress, e.message)).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn spawn_ready_url_and_stop_on_each_cluster_leaves_nothing_behind() {
    let s = spawner().await;
    for (profile, cluster) in [("a", "cluster-a"), ("b", "cluster-b"), ("c", "cluster-c")] {
        let user = common::unique("Alice.Smith@example.org");
        let started = s.spawn(request(&user, "", profile)).await.expect("spawn accepted");
        assert_eq!(started.cluster, cluster);
        assert_eq!(started.state, InstanceState::Pending);
        let events = progress_to_end(&s, &user, "").await;
        let last = events.last().expect("events");
        assert_eq!(last.ready, Some(true), "{}", messages(&events));
        let url = last.url.clone().expect("url");
        assert!(url.starts_with(&format!("http://{cluster}.127.0.0.1.nip.io:8080/user/")), "{url}");
        let key = InstanceKey::new(&user, "").key().to_string();
        assert!(common::objects_of(cluster, &key).len() >= 5, "bundle applied: {:?}", common::objects_of(cluster, &key));
        // The registry sees it running, from the watch.
        for _ in 0..50 {
            if s.status(&user, "").is_ok_and(|v| v.state == InstanceState::Running) {
                break;
            }
            s.registry().changed(Duration::from_millis(200)).await;
        }
        let status = s.status(&user, "").expect("status");
        assert_eq!((status.state, status.url.as_deref(), status.cluster.as_str()), (InstanceState::Running, Some(url.as_str()), cluster));
        s.stop(&user, "", false).await.expect("stop");
        assert_eq!(common::objects_of(cluster, &key), Vec::<String>::new(), "every object gone after stop");
        assert!(matches!(s.status(&user, ""), Err(SpawnError::NotFound)));
    }
}

#[tokio::test]
async fn progress_reports_the_scheduler_and_kubelet_events_in_order() {
    let s = spawner().await;
    let user = common::unique("events");
    s.spawn(request(&user, "nb", "b")).await.expect("spawn");
    let events = progress_to_end(&s, &user, "nb").await;
    let text = messages(&events);
    let pos = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle} missing from:\n{text}"));
    assert!(pos("Scheduled: Successfully assigned") < pos("Pulling") && pos("Pulling") < pos("Started"), "{text}");
    assert!(events.windows(2).all(|w| w[0].progress <= w[1].progress), "progress never goes back:\n{text}");
    // fleetspawn's own decisions are Kubernetes Events on the pod (the audit trail).
    let key = InstanceKey::new(&user, "nb").key().to_string();
    let described = common::kubectl("cluster-b", &["describe", "pod", "-n", "fleetspawn-test", &format!("fs-{key}")]);
    let audit = described.lines().find(|l| l.contains("Spawning")).unwrap_or_else(|| panic!("no Spawning event:\n{described}"));
    assert!(audit.contains("fleetspawn") && audit.contains(&format!("user {user:?}")) && audit.contains("cluster-b"), "{audit}");
    assert!(described.lines().any(|l| l.contains("Ready") && l.contains("Server ready at")), "{described}");
    s.stop(&user, "nb", false).await.expect("stop");
}

#[tokio::test]
async fn more_cpu_than_any_node_fails_with_the_scheduler_message() {
    let s = spawner().await;
    let user = common::unique("greedy");
    let t = std::time::Instant::now();
    s.spawn(request(&user, "", "huge")).await.expect("spawn");
    let events = progress_to_end(&s, &user, "").await;
    let last = events.last().expect("events");
    assert_eq!(last.failed, Some(true), "{}", messages(&events));
    assert!(last.message.contains("Insufficient cpu"), "{}", last.message);
    assert!(t.elapsed() < Duration::from_secs(20), "fails within seconds, took {:?}", t.elapsed());
    // Reported to the user at once, before the grace period ended.
    assert!(events.iter().any(|e| e.failed.is_none() && e.message.contains("Insufficient cpu")), "{}", messages(&events));
    let key = InstanceKey::new(&user, "").key().to_string();
    assert_eq!(common::objects_of("cluster-a", &key), Vec::<String>::new(), "rolled back");
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_fast_with_the_cause() {
    let s = spawner().await;
    let user = common::unique("pull");
    let t = std::time::Instant::now();
    s.spawn(request(&user, "", "broken-image")).await.expect("spawn");
    let events = progress_to_end(&s, &user, "").await;
    let last = events.last().expect("events");
    assert_eq!(last.failed, Some(true), "{}", messages(&events));
    assert!(last.message.contains("ErrImagePull") && last.message.contains("not found"), "{}", last.message);
    assert!(t.elapsed() < Duration::from_secs(15), "fast, not start_timeout: {:?}", t.elapsed());
    let status = s.status(&user, "");
    assert!(matches!(&status, Err(SpawnError::NotFound)) || status.as_ref().is_ok_and(|v| v.state == InstanceState::Failed), "{status:?}");
}

#[tokio::test]
async fn a_crashing_container_fails_fast() {
    let s = spawner().await;
    let user = common::unique("crash");
    s.spawn(request(&user, "", "crashing")).await.expect("spawn");
    let events = progress_to_end(&s, &user, "").await;
    let last = events.last().expect("events");
    assert!(last.failed == Some(true) && last.message.contains("CrashLoopBackOff"), "{}", messages(&events));
}

#[tokio::test]
async fn a_second_spawn_returns_the_one_in_flight_and_bad_input_is_refused() {
    let s = spawner().await;
    let user = common::unique("twice");
    let first = s.spawn(request(&user, "", "a")).await.expect("spawn");
    let second = s.spawn(request(&user, "", "a")).await.expect("same spawn");
    assert_eq!(first.key, second.key);
    assert!(matches!(s.spawn(request(&user, "x", "nope")).await, Err(SpawnError::UnknownProfile(p)) if p == "nope"));
    progress_to_end(&s, &user, "").await;
    // Running: spawning again answers the running one.
    assert_eq!(s.spawn(request(&user, "", "a")).await.expect("running").state, InstanceState::Running);
    // Named servers count towards the per-user limit of 3.
    for name in ["n1", "n2"] {
        s.spawn(request(&user, name, "a")).await.expect("named server");
    }
    assert!(matches!(s.spawn(request(&user, "n3", "a")).await, Err(SpawnError::TooManyServers { limit: 3, .. })));
    for name in ["", "n1", "n2"] {
        s.stop(&user, name, false).await.expect("stop");
    }
}

#[tokio::test]
async fn stop_during_spawn_leaves_nothing_and_stop_is_idempotent() {
    let s = spawner().await;
    let user = common::unique("impatient");
    s.spawn(request(&user, "", "with-extras")).await.expect("spawn");
    tokio::time::sleep(Duration::from_millis(150)).await;
    s.stop(&user, "", false).await.expect("stop during spawn");
    let key = InstanceKey::new(&user, "").key().to_string();
    assert_eq!(common::objects_of("cluster-b", &key), Vec::<String>::new());
    let events = s.progress(&user, "").expect("history").history();
    assert_eq!(events.last().and_then(|e| e.failed), Some(true), "{}", messages(&events));
    s.stop(&user, "", false).await.expect("second stop");
    s.stop(&user, "", false).await.expect("third stop");
    assert!(matches!(s.status(&user, ""), Err(SpawnError::NotFound)));
}

#[tokio::test]
async fn a_pod_deleted_out_of_band_makes_the_server_failed_with_the_cause_and_its_objects_go() {
    let s = spawner().await;
    let user = common::unique("drift");
    s.spawn(request(&user, "", "with-extras")).await.expect("spawn");
    assert_eq!(progress_to_end(&s, &user, "").await.last().and_then(|e| e.ready), Some(true));
    let key = InstanceKey::new(&user, "").key().to_string();
    common::kubectl("cluster-b", &["delete", "pod", "-n", "fleetspawn-test", &format!("fs-{key}"), "--wait=true"]);
    let mut leftovers = Vec::new();
    for _ in 0..100 {
        leftovers = common::objects_of("cluster-b", &key);
        let failed =
            s.status(&user, "").is_ok_and(|v| v.state == InstanceState::Failed && v.cause.as_deref().is_some_and(|c| c.contains("deleted or evicted")));
        if leftovers.is_empty() && failed {
            // And it can be started again.
            s.spawn(request(&user, "", "with-extras")).await.expect("spawn again");
            assert_eq!(progress_to_end(&s, &user, "").await.last().and_then(|e| e.ready), Some(true));
            s.stop(&user, "", false).await.expect("stop");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("after 10s: status {:?}, leftovers {leftovers:?}", s.status(&user, ""));
}

/// Starts a spawn in a runtime of its own and drops that runtime 300 ms later: the spawner
/// dies mid-spawn, as in a crash, with none of its tasks left running.
fn spawn_then_crash(user: &str, profile: &str, home: &str) {
    let (user, profile, home) = (user.to_string(), profile.to_string(), home.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let s = spawner_with(SpawnerSettings { home_namespace: home, ..Default::default() }).await;
            s.spawn(request(&user, "", &profile)).await.expect("spawn");
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        drop(rt);
    })
    .join()
    .expect("crashed spawner thread");
}

#[tokio::test]
async fn a_spawner_dropped_mid_spawn_is_picked_up_by_the_next_one() {
    let user = common::unique("restart");
    let key = InstanceKey::new(&user, "").key().to_string();
    let home = common::home_namespace();
    spawn_then_crash(&user, "c", &home);
    let s = spawner_with(SpawnerSettings { home_namespace: home, ..Default::default() }).await;
    // Listed exactly once, and the spawn completes from its record.
    let mut state = None;
    for _ in 0..300 {
        let views: Vec<_> = s.list().into_iter().filter(|v| v.key == key).collect();
        assert!(views.len() <= 1, "listed twice: {views:?}");
        state = views.first().map(|v| v.state);
        if state == Some(InstanceState::Running) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, Some(InstanceState::Running), "the spawn was not completed from its record");
    let pods = common::objects_of("cluster-c", &key).into_iter().filter(|o| o.starts_with("pod/")).count();
    assert_eq!(pods, 1, "one Pod, not one per spawner");
    s.stop(&user, "", false).await.expect("stop");
}

#[tokio::test]
async fn a_failed_spawn_whose_spawner_died_fails_with_its_cause_under_the_next_one() {
    let user = common::unique("orphan");
    let key = InstanceKey::new(&user, "").key().to_string();
    let home = common::home_namespace();
    spawn_then_crash(&user, "broken-image", &home);
    let s = spawner_with(SpawnerSettings { gc_interval: Duration::from_secs(1), home_namespace: home, ..Default::default() }).await;
    for _ in 0..300 {
        let failed = s.status(&user, "").is_ok_and(|v| v.state == InstanceState::Failed && v.failure == Some(FailureKind::ImagePull));
        if common::objects_of("cluster-a", &key).is_empty() && failed {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("after 30s: {:?}, objects {:?}", s.status(&user, ""), common::objects_of("cluster-a", &key));
}

#[tokio::test]
async fn two_hundred_concurrent_spawns_across_three_clusters_all_succeed() {
    let s = spawner().await;
    let prefix = common::unique("storm");
    let users: Vec<String> = (0..200).map(|i| format!("{prefix}-{i}")).collect();
    let accepted = futures::future::join_all(users.iter().map(|u| s.spawn(request(u, "", "spread")))).await;
    let mut per_cluster = BTreeMap::new();
    for (u, r) in users.iter().zip(&accepted) {
        let v = r.as_ref().unwrap_or_else(|e| panic!("{u}: {e}"));
        *per_cluster.entry(v.cluster.clone()).or_insert(0) += 1;
    }
    assert_eq!(per_cluster.len(), 3, "spread over three clusters: {per_cluster:?}");
    let ends = futures::future::join_all(users.iter().map(|u| progress_to_end(&s, u, ""))).await;
    for (u, events) in users.iter().zip(&ends) {
        assert_eq!(events.last().and_then(|e| e.ready), Some(true), "{u}:\n{}", messages(events));
    }
    // No duplicate objects: exactly one Pod per user, across all clusters.
    let mut pods = 0;
    for c in ["cluster-a", "cluster-b", "cluster-c"] {
        let out = common::kubectl(
            c,
            &[
                "get",
                "pods",
                "-A",
                "-l",
                "app.kubernetes.io/managed-by=fleetspawn",
                "-o",
                "jsonpath={range .items[*]}{.metadata.annotations.fleetspawn\\.io/username}{\"\\n\"}{end}",
            ],
        );
        pods += out.lines().filter(|l| l.starts_with(&prefix)).count();
    }
    assert_eq!(pods, 200);
    futures::future::join_all(users.iter().map(|u| s.stop(u, "", false))).await.into_iter().collect::<Result<Vec<_>, _>>().expect("stops");
}

#[tokio::test]
async fn storage_survives_stop_and_goes_only_when_deleted_forever() {
    let s = spawner().await;
    let user = common::unique("keeper");
    let key = InstanceKey::new(&user, "").key().to_string();
    let pvcs = || common::objects_of("cluster-c", &key).into_iter().filter(|o| o.starts_with("persistentvolumeclaim/")).collect::<Vec<_>>();
    for round in 0..2 {
        s.spawn(request(&user, "", "persistent")).await.expect("spawn");
        let events = progress_to_end(&s, &user, "").await;
        assert_eq!(events.last().and_then(|e| e.ready), Some(true), "round {round}: {}", messages(&events));
        assert_eq!(pvcs().len(), 1, "one claim, reused by the second spawn");
        s.stop(&user, "", false).await.expect("stop");
        assert_eq!(common::objects_of("cluster-c", &key), pvcs(), "only the claim is left after a stop");
    }
    s.stop(&user, "", true).await.expect("delete forever");
    assert_eq!(common::objects_of("cluster-c", &key), Vec::<String>::new());
}

#[tokio::test]
async fn a_rejected_object_fails_the_spawn_naming_it_and_rolls_back_new_claims_too() {
    let s = spawner().await;
    let user = common::unique("partial");
    s.spawn(request(&user, "", "partial-failure")).await.expect("spawn");
    let events = progress_to_end(&s, &user, "").await;
    let last = events.last().expect("events");
    assert_eq!(last.failed, Some(true), "{}", messages(&events));
    // The object and the API server's own message.
    assert!(last.message.contains("ConfigMap") && last.message.contains("not a valid key!") && last.message.contains("Invalid"), "{}", last.message);
    let key = InstanceKey::new(&user, "").key().to_string();
    assert_eq!(common::objects_of("cluster-a", &key), Vec::<String>::new(), "rolled back, the new claim included");
}

#[tokio::test]
async fn a_failed_spawn_is_kept_for_debugging_when_the_profile_says_so() {
    let s = spawner().await;
    let user = common::unique("kept");
    s.spawn(request(&user, "", "broken-kept")).await.expect("spawn");
    let events = progress_to_end(&s, &user, "").await;
    assert_eq!(events.last().and_then(|e| e.failed), Some(true));
    let key = InstanceKey::new(&user, "").key().to_string();
    assert!(common::objects_of("cluster-a", &key).iter().any(|o| o.starts_with("pod/")), "kept");
    let mut status = None;
    for _ in 0..50 {
        status = s.status(&user, "").ok();
        if status.as_ref().is_some_and(|v| v.state == InstanceState::Failed && v.cause.is_some()) {
            break;
        }
        s.registry().changed(Duration::from_millis(200)).await;
    }
    let status = status.expect("a kept failure has a status");
    assert!(status.cause.as_deref().is_some_and(|c| c.contains("ErrImagePull")), "{status:?}");
    s.stop(&user, "", false).await.expect("stop");
    assert_eq!(common::objects_of("cluster-a", &key), Vec::<String>::new());
}

#[tokio::test]
async fn extra_objects_of_any_kind_custom_resources_included_are_applied_and_removed() {
    common::kubectl("cluster-a", &["apply", "-f", common::repo().join("tests/fixtures/widget-crd.yaml").to_str().expect("utf-8")]);
    common::kubectl("cluster-a", &["wait", "--for=condition=Established", "crd/widgets.fleetspawn-test.example.org"]);
    let s = spawner().await;
    let user = common::unique("widgets");
    s.spawn(request(&user, "", "with-crd")).await.expect("spawn");
    let events = progress_to_end(&s, &user, "").await;
    assert_eq!(events.last().and_then(|e| e.ready), Some(true), "{}", messages(&events));
    let key = InstanceKey::new(&user, "").key().to_string();
    let widgets = || common::kubectl("cluster-a", &["get", "widgets", "-A", "-l", &format!("fleetspawn.io/instance={key}"), "-o", "name"]);
    assert_eq!(widgets().lines().count(), 1, "the custom resource was applied");
    s.stop(&user, "", false).await.expect("stop");
    assert_eq!(widgets().trim(), "", "and removed with the server");
}

/// Forty parallel starts of one user's servers never get past the per-user limit together:
/// counting and registering a spawn are one step. Three rounds, each from scratch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_starts_of_one_user_never_exceed_the_server_limit() {
    let s = spawner().await;
    for round in 0..3 {
        let user = common::unique(&format!("limit{round}"));
        let starts = (0..40).map(|i| {
            let (s, req) = (s.clone(), request(&user, &format!("s{i}"), "a"));
            tokio::spawn(async move { s.spawn(req).await })
        });
        let results: Vec<_> = futures::future::join_all(starts).await.into_iter().map(|r| r.expect("task")).collect();
        let accepted: Vec<String> = results.iter().filter_map(|r| r.as_ref().ok()).map(|v| v.server.clone()).collect();
        assert_eq!(accepted.len(), 3, "round {round}: {accepted:?}");
        assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(e, SpawnError::TooManyServers { limit: 3, .. })), "round {round}");
        for server in &accepted {
            progress_to_end(&s, &user, server).await;
            s.stop(&user, server, false).await.expect("stop");
        }
    }
}
