//! Loading the kubeconfig and probing every cluster, against the real local clusters.

mod common;

use std::process::Command;

use fleetspawn::kube::fleet::{self, Fleet, KubeconfigError};

fn fleetspawn(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fleetspawn")).args(args).output().expect("run fleetspawn")
}

#[tokio::test]
async fn every_local_cluster_is_healthy_with_its_version() {
    let loaded = fleet::load(Some(&common::kubeconfig())).expect("load kubeconfig");
    assert_eq!(loaded.contexts(), ["cluster-a", "cluster-b", "cluster-c"]);
    let health = Fleet::connect(&loaded).await.health().await;
    for h in &health {
        assert!(h.healthy, "{} unhealthy: {:?}", h.context, h.cause);
        assert!(h.version.as_deref().is_some_and(|v| v.starts_with("v1.")), "{h:?}");
        assert!(h.latency_ms.is_some());
    }
}

#[test]
fn clusters_command_prints_a_table_and_json() {
    let kc = common::kubeconfig();
    let kc = kc.to_str().expect("utf-8 path");
    let out = fleetspawn(&["--kubeconfig", kc, "clusters"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("CONTEXT"), "{table}");
    for name in ["cluster-a", "cluster-b", "cluster-c"] {
        let line = table.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} missing:\n{table}"));
        assert!(line.contains("healthy") && line.contains("v1."), "{line}");
    }
    let out = fleetspawn(&["--kubeconfig", kc, "clusters", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(rows.as_array().map(Vec::len), Some(3));
    assert_eq!(rows[1]["context"], "cluster-b");
    assert_eq!(rows[1]["healthy"], true);
}

#[test]
fn a_missing_kubeconfig_is_named() {
    let err = fleet::load(Some(std::path::Path::new("/nonexistent/kube.yaml"))).err().expect("an error");
    assert!(matches!(err, KubeconfigError::Read { .. }));
    let out = fleetspawn(&["--kubeconfig", "/nonexistent/kube.yaml", "clusters"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/kube.yaml") && stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn invalid_yaml_is_named_with_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, "apiVersion: v1\nclusters: [ {name: a\n").expect("write");
    let err = fleet::load(Some(&path)).err().expect("an error").to_string();
    assert!(err.contains("broken.yaml") && err.contains("invalid"), "{err}");
}

#[test]
fn kubeconfig_env_merges_several_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = std::fs::read_to_string(common::kubeconfig()).expect("read kubeconfig");
    // Split the real kubeconfig in two files: cluster-a alone, and everything.
    let extra = dir.path().join("extra.yaml");
    std::fs::write(&extra, "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: lab\n  user: {token: x}\ncontexts:\n- name: lab\n  context: {cluster: lab, user: lab}\n").expect("write");
    let main = dir.path().join("main.yaml");
    std::fs::write(&main, real).expect("write");
    let joined = std::env::join_paths([&main, &extra]).expect("join");
    let out = Command::new(env!("CARGO_BIN_EXE_fleetspawn"))
        .args(["clusters", "--json"])
        .env("KUBECONFIG", joined)
        .env_remove("FLEETSPAWN_KUBECONFIG")
        .output()
        .expect("run");
    // One context is unreachable: the command says so with exit code 2, the others still work.
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 4);
    let lab = rows.iter().find(|r| r["context"] == "lab").expect("lab row");
    assert_eq!(lab["healthy"], false);
    assert!(lab["cause"].as_str().is_some_and(|c| !c.is_empty()), "{lab}");
    assert!(rows.iter().filter(|r| r["context"] != "lab").all(|r| r["healthy"] == true));
}

#[test]
fn a_second_up_is_a_no_op_and_status_lists_the_clusters() {
    let kubeconfig = common::kubeconfig();
    let script = common::repo().join("deploy/local/clusters");
    let up = Command::new(&script).arg("up").output().expect("clusters up");
    assert!(up.status.success());
    assert_eq!(String::from_utf8_lossy(&up.stdout).trim(), kubeconfig.to_str().expect("utf-8"));
    let said = String::from_utf8_lossy(&up.stderr);
    for name in ["cluster-a", "cluster-b", "cluster-c"] {
        assert!(said.contains(&format!("{name}: already running")), "{said}");
    }
    let status = Command::new(&script).arg("status").output().expect("clusters status");
    let status = String::from_utf8_lossy(&status.stdout);
    for name in ["cluster-a", "cluster-b", "cluster-c"] {
        assert!(status.lines().any(|l| l == format!("{name} running")), "{status}");
    }
    let path = Command::new(&script).arg("kubeconfig").output().expect("clusters kubeconfig");
    assert_eq!(String::from_utf8_lossy(&path.stdout).trim(), kubeconfig.to_str().expect("utf-8"));
}

#[test]
fn kubectl_sees_ready_fake_nodes_and_a_pod_gets_scheduled_and_ready() {
    let nodes = common::kubectl("cluster-b", &["get", "nodes", "--no-headers"]);
    assert!(nodes.lines().filter(|l| l.split_whitespace().nth(1) == Some("Ready")).count() >= 2, "{nodes}");
    let name = common::unique("plain-pod");
    common::kubectl("cluster-a", &["run", &name, "--image=registry.example/app:1", "--restart=Never"]);
    common::kubectl("cluster-a", &["wait", "--for=condition=Ready", &format!("pod/{name}"), "--timeout=60s"]);
    common::kubectl("cluster-a", &["delete", "pod", &name, "--wait=false"]);
}

/// A ServiceAccount on cluster-c with cluster-admin (a test identity, not least privilege),
/// removed with its namespace when the test ends.
struct ExecIdentity {
    namespace: String,
    binding: String,
}

impl ExecIdentity {
    fn create() -> ExecIdentity {
        let namespace = common::unique("fs-exec");
        let binding = common::unique("fs-exec-admin");
        common::kubectl("cluster-c", &["create", "namespace", &namespace]);
        common::kubectl("cluster-c", &["create", "serviceaccount", "exec-plugin", "-n", &namespace]);
        let subject = format!("{namespace}:exec-plugin");
        common::kubectl("cluster-c", &["create", "clusterrolebinding", &binding, "--clusterrole=cluster-admin", &format!("--serviceaccount={subject}")]);
        ExecIdentity { namespace, binding }
    }
}

impl Drop for ExecIdentity {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(common::kubeconfig())
            .args(["--context", "cluster-c", "delete", "clusterrolebinding", &self.binding, "--ignore-not-found"])
            .output();
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(common::kubeconfig())
            .args(["--context", "cluster-c", "delete", "namespace", &self.namespace, "--wait=false", "--ignore-not-found"])
            .output();
    }
}

/// A kubeconfig with the home (cluster-a, as the admin) and `exec-c`: cluster-c reached as a
/// ServiceAccount whose token an exec credential plugin mints (`kubectl create token`), the
/// way GKE's, EKS's and AKS's plugins hand out short-lived tokens. The plugin says each token
/// expires 70 s after it was minted, so the client asks again 10 s later (a minute ahead);
/// every call is counted in `calls`; while `fail` exists the plugin fails.
fn exec_kubeconfig(dir: &std::path::Path, identity: &ExecIdentity) -> std::path::PathBuf {
    let plugin = dir.join("plugin");
    let script = format!(
        r#"#!/bin/sh
date +%s.%N >> "{dir}/calls"
if [ -e "{dir}/fail" ]; then echo "the identity provider is unavailable" >&2; exit 1; fi
token=$(kubectl --kubeconfig "{admin}" --context cluster-c create token exec-plugin -n "{ns}" --duration 10m) || exit 1
expires=$(date -u -d '+70 seconds' +%Y-%m-%dT%H:%M:%SZ)
printf '{{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{{"token":"%s","expirationTimestamp":"%s"}}}}\n' "$token" "$expires"
"#,
        dir = dir.display(),
        admin = common::kubeconfig().display(),
        ns = identity.namespace,
    );
    std::fs::write(&plugin, script).expect("write the plugin");
    std::process::Command::new("chmod").arg("+x").arg(&plugin).status().expect("chmod");
    let admin: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(common::kubeconfig()).expect("kubeconfig")).expect("YAML");
    let named = |list: &str, name: &str| -> serde_yaml::Value {
        admin[list].as_sequence().and_then(|s| s.iter().find(|e| e["name"].as_str() == Some(name))).cloned().unwrap_or_else(|| panic!("no {list} entry {name}"))
    };
    let context_a = named("contexts", "cluster-a");
    let cluster_a = named("clusters", context_a["context"]["cluster"].as_str().expect("cluster"));
    let user_a = named("users", context_a["context"]["user"].as_str().expect("user"));
    let context_c = named("contexts", "cluster-c");
    let mut cluster_c = named("clusters", context_c["context"]["cluster"].as_str().expect("cluster"));
    cluster_c["name"] = "exec-c".into();
    let exec_user: serde_yaml::Value = serde_yaml::from_str(&format!(
        "name: exec-c\nuser:\n  exec:\n    apiVersion: client.authentication.k8s.io/v1\n    command: {}\n    interactiveMode: Never\n",
        plugin.display()
    ))
    .expect("exec user");
    let exec_context: serde_yaml::Value = serde_yaml::from_str("name: exec-c\ncontext: {cluster: exec-c, user: exec-c}\n").expect("context");
    let config = serde_yaml::to_string(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster_a, cluster_c],
        "users": [user_a, exec_user],
        "contexts": [context_a, exec_context],
        "current-context": "cluster-a",
    }))
    .expect("kubeconfig YAML");
    let path = dir.join("kubeconfig");
    std::fs::write(&path, config).expect("write the kubeconfig");
    path
}

fn calls(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("calls")).unwrap_or_default().lines().count()
}

/// Credentials that expire: a context whose user is an exec plugin spawns; the plugin is asked
/// again only as its token nears expiry; while it fails, that cluster is unhealthy by name, its
/// server is unknown and nothing is deleted; when it works again, everything comes back.
#[tokio::test]
async fn an_exec_plugin_is_asked_near_expiry_and_while_it_fails_its_cluster_is_unhealthy_and_nothing_is_deleted() {
    use fleetspawn::service::{SpawnRequest, Spawner, SpawnerSettings};
    use fleetspawn_core::instance::InstanceState;
    use futures::StreamExt;
    use std::time::{Duration, Instant};

    let identity = ExecIdentity::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = exec_kubeconfig(dir.path(), &identity);
    let profiles_path = dir.path().join("profiles.toml");
    let fixture = std::fs::read_to_string(common::repo().join("tests/fixtures/profiles.toml")).expect("fixture profiles");
    let defaults = &fixture[fixture.find("[defaults]").expect("defaults")..fixture.find("[[profiles]]").expect("profiles")];
    std::fs::write(
        &profiles_path,
        format!("{defaults}[[profiles]]\nslug = \"exec\"\ndisplay_name = \"Through an exec plugin\"\ncontext = \"exec-c\"\ningress_public_url = \"http://cluster-c.127.0.0.1.nip.io:8080\"\n"),
    )
    .expect("write profiles");
    let settings = SpawnerSettings { home_context: Some("cluster-a".into()), home_namespace: common::home_namespace(), ..Default::default() };
    let s = common::spawner(&kubeconfig, &profiles_path, settings).await;

    let user = common::unique("exec");
    s.spawn(SpawnRequest { user: user.clone(), profile: "exec".into(), ..Default::default() }).await.expect("spawn through the exec context");
    let end = s.progress(&user, "").expect("progress").subscribe().collect::<Vec<_>>().await;
    assert_eq!(end.last().and_then(|e| e.ready), Some(true), "{end:?}");
    let key = fleetspawn_core::naming::InstanceKey::new(&user, "").key().to_string();
    let pod_uid = || {
        common::kubectl(
            "cluster-c",
            &["get", "pods", "-n", "fleetspawn-test", "-l", &format!("fleetspawn.io/instance={key}"), "-o", "jsonpath={.items[*].metadata.uid}"],
        )
    };
    let uid = pod_uid();
    assert!(!uid.is_empty(), "no pod for {key}");

    // Many requests (probes every 2 s, the spawn, the watches) over 25 s after the clients were
    // built (kube-rs runs the plugin a few times while building one); the plugin is called once
    // per token, each good for 10 s: a handful of calls, not one per request.
    let (built, at_start) = (Instant::now(), calls(dir.path()));
    tokio::time::sleep(Duration::from_secs(25)).await;
    let asked = calls(dir.path()) - at_start;
    let tokens = usize::try_from(built.elapsed().as_secs() / 10).unwrap_or(usize::MAX) + 1;
    let log = || std::fs::read_to_string(dir.path().join("calls")).unwrap_or_default();
    assert!((1..=tokens).contains(&asked), "the plugin was called {asked} times in {:?} (tokens last 10 s): {}", built.elapsed(), log());

    // The identity provider fails: cluster exec-c is unhealthy by name, its server unknown.
    std::fs::write(dir.path().join("fail"), "").expect("fail flag");
    let health_of = |s: &Spawner| s.cluster_health().into_iter().find(|h| h.context == "exec-c").expect("exec-c in the health");
    common::until("exec-c unhealthy", Duration::from_secs(40), || !health_of(&s).healthy).await;
    let cause = health_of(&s).cause.unwrap_or_default();
    assert!(!cause.is_empty(), "no cause given");
    assert!(health_of(&s).context == "exec-c" && s.cluster_health().iter().any(|h| h.context == "cluster-a" && h.healthy), "the home stays healthy");
    common::until("the server unknown", Duration::from_secs(20), || s.status(&user, "").map(|v| v.state).ok() == Some(InstanceState::Unknown)).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(s.status(&user, "").map(|v| v.state).ok(), Some(InstanceState::Unknown), "still unknown, never stopped");
    assert_eq!(pod_uid(), uid, "the pod was deleted or replaced while the plugin failed");

    // The plugin works again: healthy, running, the same pod.
    std::fs::remove_file(dir.path().join("fail")).expect("clear the flag");
    common::until("exec-c healthy again", Duration::from_secs(30), || health_of(&s).healthy).await;
    common::until("the server running again", Duration::from_secs(30), || s.status(&user, "").map(|v| v.state).ok() == Some(InstanceState::Running)).await;
    assert_eq!(pod_uid(), uid, "the same pod");
    s.stop(&user, "", false).await.expect("stop through the exec context");
    s.shutdown(Duration::from_secs(5)).await;
}
