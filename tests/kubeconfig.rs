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
