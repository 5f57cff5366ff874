//! The UserServer CRD (`fleetspawn crd`) against a real API server (cluster-a): it installs and
//! becomes Established, UserServers written by the Rust types are accepted and read back into
//! them, the status subresource takes a status, `kubectl get` shows the printer columns, and
//! the schema rejects specs and statuses of the wrong shape.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fleetspawn::kube::userserver::{self, FailureReason, Phase, UserServer, CONDITION_READY};

const CONTEXT: &str = "cluster-a";
const CRD: &str = "customresourcedefinition/userservers.fleetspawn.io";

/// kubectl on cluster-a with `stdin` as its input; the output whatever the exit status.
fn kubectl_with_input(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(common::kubeconfig())
        .args(["--context", CONTEXT])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"));
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write to kubectl");
    child.wait_with_output().expect("kubectl output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// Applies `manifest` (YAML or JSON) in `ns`; retried for a few seconds while the API server's
/// discovery does not know the new kind yet.
fn apply(ns: &str, manifest: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = kubectl_with_input(&["apply", "-n", ns, "-f", "-"], manifest);
        let stderr = text(&out.stderr);
        if out.status.success() || !(stderr.contains("no matches for kind") || stderr.contains("the server could not find")) || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Installs the CRD that `fleetspawn crd` prints, once per test binary, and waits until the API
/// server serves it.
fn install_crd() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = Command::new(env!("CARGO_BIN_EXE_fleetspawn")).arg("crd").env_remove("FLEETSPAWN_LOG").output().expect("run fleetspawn crd");
        assert!(out.status.success(), "fleetspawn crd failed: {}", text(&out.stderr));
        let yaml = text(&out.stdout);
        assert!(yaml.contains("name: userservers.fleetspawn.io"), "{yaml}");
        let applied = kubectl_with_input(&["apply", "-f", "-"], &yaml);
        assert!(applied.status.success(), "kubectl apply of the CRD failed: {}", text(&applied.stderr));
        // Polled rather than `kubectl wait` (or a jsonpath filter), which fail while a new CRD
        // has no conditions yet.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let crd: serde_json::Value = serde_json::from_str(&common::kubectl(CONTEXT, &["get", CRD, "-o", "json"])).expect("CRD as JSON");
            let conditions = crd["status"]["conditions"].as_array().cloned().unwrap_or_default();
            let established = conditions.iter().any(|c| c["type"] == "Established" && c["status"] == "True");
            if established {
                break;
            }
            assert!(Instant::now() < deadline, "the CRD is not Established after 60 s: {conditions:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}

/// A namespace for one test, deleted when the test ends (even when it fails).
struct Namespace(String);

impl Namespace {
    fn create(prefix: &str) -> Self {
        let name = common::unique(prefix);
        common::kubectl(CONTEXT, &["create", "namespace", &name]);
        Namespace(name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(common::kubeconfig())
            .args(["--context", CONTEXT, "delete", "namespace", &self.0, "--wait=false", "--ignore-not-found"])
            .output();
    }
}

fn get(ns: &str, name: &str) -> UserServer {
    let json = common::kubectl(CONTEXT, &["get", "userserver", name, "-n", ns, "-o", "json"]);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("the UserServer does not deserialize into the Rust type: {e}\n{json}"))
}

#[test]
fn the_crd_is_established_and_user_servers_round_trip_with_status_and_columns() {
    install_crd();
    let ns = Namespace::create("us-crd");
    let ns = ns.0.as_str();

    // Written by the Rust type, read back into it.
    let options = BTreeMap::from([("image".to_string(), "lab".to_string())]);
    let mut us = UserServer::for_server(ns, "alice", "lab", "a", options.clone());
    us.spec.lifespan = Some("8h".into());
    us.spec.env_secret_ref = Some(userserver::SecretRef { name: "alice-hub-env".into() });
    let out = apply(ns, &serde_json::to_string(&us).expect("json"));
    assert!(out.status.success(), "apply failed: {}", text(&out.stderr));
    let back = get(ns, "alice--lab");
    assert_eq!(back.spec, us.spec);
    assert_eq!(back.status, None);
    assert_eq!(back.metadata.generation, Some(1));

    // A hand-written minimal manifest: the schema's defaults fill `started` and `server`.
    let minimal = "apiVersion: fleetspawn.io/v1alpha1\nkind: UserServer\nmetadata:\n  name: bob\nspec:\n  user: bob\n  profile: a\n";
    let out = apply(ns, minimal);
    assert!(out.status.success(), "apply failed: {}", text(&out.stderr));
    let bob = get(ns, "bob");
    assert!(bob.spec.started, "started defaults to true: {:?}", bob.spec);
    assert_eq!(bob.spec.server, "");

    // The status subresource takes a status; the spec's generation does not move.
    let status = serde_json::json!({"status": {
        "phase": "Running",
        "cluster": "cluster-b",
        "namespace": "users",
        "url": "http://cluster-b.example/user/alice/lab/",
        "podUID": "0b3c9a4e-1111-2222-3333-444455556666",
        "inventory": [{"apiVersion": "v1", "kind": "Pod", "namespace": "users", "name": "fs-alice--lab"}],
        "startedAt": "2026-01-02T03:04:05Z",
        "progress": {"percent": 100, "message": "ready"},
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "PodReady", "message": "", "lastTransitionTime": "2026-01-02T03:04:05Z", "observedGeneration": 1}],
    }});
    common::kubectl(CONTEXT, &["patch", "userserver", "alice--lab", "-n", ns, "--subresource=status", "--type=merge", "-p", &status.to_string()]);
    let back = get(ns, "alice--lab");
    let st = back.status.expect("a status");
    assert_eq!(st.phase, Some(Phase::Running));
    assert_eq!(
        (st.cluster.as_deref(), st.pod_uid.as_deref(), st.observed_generation),
        (Some("cluster-b"), Some("0b3c9a4e-1111-2222-3333-444455556666"), Some(1))
    );
    assert_eq!(st.inventory.len(), 1);
    assert_eq!(st.progress.map(|p| p.percent), Some(100));
    let ready = userserver::find_condition(&st.conditions, CONDITION_READY).expect("Ready condition");
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "PodReady"));
    assert_eq!(back.metadata.generation, Some(1), "a status write does not bump the generation");

    // A failure with a culling reason.
    let failed = serde_json::json!({"status": {"phase": "Stopped", "failure": {"reason": "MaxAge", "message": "lifespan of 8h reached"}}});
    common::kubectl(CONTEXT, &["patch", "userserver", "bob", "-n", ns, "--subresource=status", "--type=merge", "-p", &failed.to_string()]);
    let bob = get(ns, "bob").status.expect("a status");
    assert_eq!(bob.failure.map(|f| f.reason), Some(FailureReason::MaxAge));

    // The printer columns, by kind name and by short name.
    for resource in ["userservers", "us"] {
        let table = common::kubectl(CONTEXT, &["get", resource, "-n", ns]);
        let rows = columns(&table);
        assert_eq!(rows[0], ["NAME", "USER", "SERVER", "PROFILE", "CLUSTER", "PHASE", "URL", "AGE"], "{table}");
        let alice = rows.iter().find(|r| r[0] == "alice--lab").unwrap_or_else(|| panic!("alice--lab missing:\n{table}"));
        assert_eq!(alice[1..7], ["alice", "lab", "a", "cluster-b", "Running", "http://cluster-b.example/user/alice/lab/"], "{table}");
        assert!(alice[7].ends_with('s') || alice[7].ends_with('m'), "AGE: {table}");
        // bob: the default server (empty), no cluster or URL yet (blank cells).
        let bob = rows.iter().find(|r| r[0] == "bob").unwrap_or_else(|| panic!("bob missing:\n{table}"));
        assert_eq!(bob[1..7], ["bob", "", "a", "", "Stopped", ""], "{table}");
    }
}

/// A kubectl table as cells, cut at the header's column starts (a cell may be empty).
fn columns(table: &str) -> Vec<Vec<String>> {
    let header = table.lines().next().expect("a header");
    let mut starts: Vec<usize> = Vec::new();
    let mut previous = ' ';
    for (i, c) in header.char_indices() {
        if c != ' ' && previous == ' ' {
            starts.push(i);
        }
        previous = c;
    }
    table
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            (0..starts.len())
                .map(|n| {
                    let end = starts.get(n + 1).copied().unwrap_or(line.len()).min(line.len());
                    line.get(starts[n].min(end)..end).unwrap_or_default().trim().to_string()
                })
                .collect()
        })
        .collect()
}

#[test]
fn the_api_server_rejects_user_servers_of_the_wrong_shape() {
    install_crd();
    let ns = Namespace::create("us-bad");
    let ns = ns.0.as_str();
    let manifest = |spec: &str| format!("apiVersion: fleetspawn.io/v1alpha1\nkind: UserServer\nmetadata:\n  name: carol\nspec:\n{spec}");

    for (spec, expected) in [
        ("  user: carol\n  profile: a\n  started: \"yes\"\n", "spec.started"),
        ("  user: carol\n  profile: a\n  lifespan: 8 days\n", "spec.lifespan"),
        ("  user: carol\n  profile: a\n  options: {cpu: 2}\n", "spec.options.cpu"),
        ("  profile: a\n", "spec.user"),
    ] {
        let out = apply(ns, &manifest(spec));
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{spec}");
        assert!(stderr.contains("Invalid value") || stderr.contains("Required value"), "not a schema error for\n{spec}: {stderr}");
        assert!(stderr.contains(expected), "{expected} not named for\n{spec}: {stderr}");
    }

    // A valid one, then statuses the schema rejects.
    let out = apply(ns, &manifest("  user: carol\n  profile: a\n"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    for (status, expected) in [
        (r#"{"status":{"phase":"Exploded"}}"#, "status.phase"),
        (r#"{"status":{"progress":{"percent":140}}}"#, "status.progress.percent"),
        (r#"{"status":{"failure":{"reason":"Gremlins"}}}"#, "status.failure.reason"),
    ] {
        let out = kubectl_with_input(&["patch", "userserver", "carol", "-n", ns, "--subresource=status", "--type=merge", "-p", status], "");
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "accepted: {status}");
        assert!(stderr.contains(expected), "{expected} not named for {status}: {stderr}");
    }
}
