//! Shared harness of the integration tests: one set of real local clusters for every test.
//!
//! The first test to ask starts them with `deploy/local/clusters up` (a no-op when they are
//! already up), and every test binary reuses them. Tests that stop a cluster live in their own
//! test binary and start it again before they end (see `ClusterOutage`).
#![allow(dead_code)] // each test binary uses its own part of the harness

pub mod browser;
pub mod daemon;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn clusters_script(args: &[&str]) -> String {
    let out =
        Command::new(repo().join("deploy/local/clusters")).args(args).output().unwrap_or_else(|e| panic!("cannot run deploy/local/clusters {args:?}: {e}"));
    assert!(out.status.success(), "deploy/local/clusters {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The kubeconfig of the local clusters, starting them if needed.
pub fn kubeconfig() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| PathBuf::from(clusters_script(&["up"]))).clone()
}

/// `kubectl` against the local clusters; returns stdout, panics with stderr on failure.
pub fn kubectl(context: &str, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["--context", context])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"));
    assert!(out.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `kubectl apply -f -` of `manifest` (YAML or JSON) on one local cluster.
pub fn kubectl_apply_to(context: &str, manifest: &str) {
    use std::io::Write as _;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["--context", context, "apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"));
    child.stdin.take().expect("stdin").write_all(manifest.as_bytes()).expect("write the manifest");
    assert!(child.wait().expect("kubectl apply").success(), "kubectl apply on {context} of:\n{manifest}");
}

/// Held for the whole of a test that stops clusters: such tests run one at a time. (Each test
/// runs on its own thread and current-thread runtime, so holding it across awaits is fine.)
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Stops one local cluster for the life of the guard; starts it again on drop, even if the
/// test fails, so the next test binary finds every cluster up.
pub struct ClusterOutage(&'static str);

impl ClusterOutage {
    pub fn begin(name: &'static str) -> Self {
        kubeconfig();
        clusters_script(&["stop", name]);
        ClusterOutage(name)
    }

    /// Ends the outage early (the drop then has nothing to do).
    pub fn end(self) {}
}

impl Drop for ClusterOutage {
    fn drop(&mut self) {
        clusters_script(&["start", self.0]);
    }
}

/// A home namespace of its own for one daemon or spawner (its records, its Pods): tests
/// running side by side never reconcile each other's servers.
pub fn home_namespace() -> String {
    unique("fs-home")
}

/// A name no earlier run used, so tests never trip over each other's leftovers.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{:x}{}", std::process::id(), nanos, N.fetch_add(1, Ordering::Relaxed))
}

/// Every object fleetspawn labelled for an instance, on one cluster, seen by kubectl (a fresh
/// client, not fleetspawn's): `Kind/name` lines.
pub fn objects_of(context: &str, key: &str) -> Vec<String> {
    let kinds = "pods,services,ingresses.networking.k8s.io,secrets,serviceaccounts,configmaps,persistentvolumeclaims,roles,rolebindings,networkpolicies";
    let out = kubectl(context, &["get", kinds, "-A", "-l", &format!("fleetspawn.io/instance={key}"), "-o", "name"]);
    out.lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

/// Waits (checking every 200 ms) until `ok`; fails the test naming `what` after `limit`.
pub async fn until(what: &str, limit: std::time::Duration, mut ok: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + limit;
    while !ok() {
        assert!(std::time::Instant::now() < end, "{what}: not within {limit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A spawner (built-in templates) on the clusters of `kubeconfig` with the profiles file
/// `profiles`.
pub async fn spawner(kubeconfig: &std::path::Path, profiles: &std::path::Path, settings: fleetspawn::service::SpawnerSettings) -> fleetspawn::service::Spawner {
    let loaded = fleetspawn::kube::fleet::load(Some(kubeconfig)).expect("load the kubeconfig");
    let profiles = fleetspawn::sources::profiles_builtin(profiles).expect("profiles");
    let renderer = fleetspawn_core::bundle::Renderer::builtin().expect("templates");
    fleetspawn::service::Spawner::start(
        fleetspawn::kube::fleet::Fleet::connect(&loaded).await,
        profiles,
        renderer,
        settings,
        fleetspawn::metrics::Metrics::new(),
    )
    .await
    .expect("spawner")
}
