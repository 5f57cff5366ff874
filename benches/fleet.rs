//! fleetspawn's benchmarks against its anchors, on the real local clusters (run on demand:
//! `./bench`, see docs/benchmarks.md; never part of `cargo test`).
//!
//! One run measures, side by side:
//! 1. spawn overhead (spawn call → every object of the bundle accepted by the API server) of
//!    fleetspawn, of a bare kube-rs loop applying the same objects one after another (the
//!    floor), and of jupyterhub-multicluster-kubespawner 0.2 (kubectl subprocesses), driven by
//!    `benches/mcks_harness.py`;
//! 2. a spawn storm: N users at once across three clusters;
//! 3. registry scale: N live instances, `Spawner::start` → synced, RSS, idle CPU;
//! 4. spawn overhead with 0, storm-size and scale-size instances live.
//!
//! The parent process prepares the clusters (bench nodes, the scale Pods) and runs each
//! measured phase in a child process of its own (this binary, `child <phase>`), so that the
//! RSS and CPU figures are those of a process that holds only the spawner. Children print one
//! `RESULT {json}` line. The parent prints the table and rewrites the table section of
//! docs/benchmarks.md.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use fleetspawn::kube::fleet::{self, Cluster, Fleet, LoadedKubeconfig};
use fleetspawn::kube::objects::ObjectRef;
use fleetspawn::metrics::Metrics;
use fleetspawn::service::{SpawnRequest, Spawner, SpawnerSettings};
use fleetspawn_core::bundle::{Bundle, Renderer, SpawnInput, Tier};
use fleetspawn_core::labels;
use fleetspawn_core::profiles::ProfileSet;
use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::KubeConfigOptions;
use kube::core::{GroupVersionKind, TypeMeta};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::Client;
use serde_json::{json, Value};

const CLUSTERS: [&str; 3] = ["cluster-a", "cluster-b", "cluster-c"];
const NS_OVERHEAD: &str = "fsbench-overhead";
const NS_STORM: &str = "fsbench-storm";
const NS_SCALE: &str = "fsbench-scale";
/// The benchmark spawner's home namespace (its records; the label on its Pods).
const BENCH_HOME: &str = "fsbench-home";
const BENCH_NODE: &str = "fsbench-node";
const IMAGE: &str = "quay.io/jupyter/base-notebook:latest";

// ---------------------------------------------------------------------------------------------
// Counting API requests: a tower layer in front of every client the bench builds.

static REQUESTS: AtomicU64 = AtomicU64::new(0);

fn requests() -> u64 {
    REQUESTS.load(Ordering::Relaxed)
}

#[derive(Clone)]
struct CountLayer;

#[derive(Clone)]
struct Counted<S>(S);

impl<S> tower::Layer<S> for CountLayer {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted(inner)
    }
}

impl<S: tower::Service<R>, R> tower::Service<R> for Counted<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }
    fn call(&mut self, req: R) -> Self::Future {
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        self.0.call(req)
    }
}

fn kubeconfig_path() -> PathBuf {
    if let Ok(p) = std::env::var("FSBENCH_KUBECONFIG") {
        return PathBuf::from(p);
    }
    let out = Command::new(repo().join("deploy/local/clusters")).arg("kubeconfig").output().expect("deploy/local/clusters kubeconfig");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One counted client per context, like `Fleet::connect` builds them.
async fn counted_fleet(loaded: &LoadedKubeconfig) -> Fleet {
    let mut clusters = Vec::new();
    for context in loaded.contexts() {
        let options = KubeConfigOptions { context: Some(context.clone()), ..Default::default() };
        let client = match kube::Config::from_custom_kubeconfig(loaded.config.clone(), &options).await {
            Ok(config) => kube::client::ClientBuilder::try_from(config).map(|b| b.with_layer(&CountLayer).build()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        clusters.push(Cluster { server: loaded.server_of(&context), context, client });
    }
    Fleet::from_clusters(clusters)
}

fn client_of(fleet: &Fleet, context: &str) -> Client {
    fleet.get(context).and_then(|c| c.client.clone().ok()).unwrap_or_else(|| panic!("no client for {context}"))
}

// ---------------------------------------------------------------------------------------------
// Profiles: the same objects and the same two patches for every spawner measured.

fn patches() -> Vec<(&'static str, Value)> {
    vec![
        (
            "Pod",
            json!({
                "metadata": {"annotations": {"bench.fleetspawn.io/patched": "pod"}},
                "spec": {"containers": [{"name": "notebook", "env": [{"name": "BENCH_PATCHED", "value": "1"}]}]}
            }),
        ),
        ("Service", json!({"metadata": {"annotations": {"bench.fleetspawn.io/patched": "service"}}})),
    ]
}

fn profiles_toml() -> String {
    let mut patches_toml = String::new();
    for (i, (kind, patch)) in patches().iter().enumerate() {
        // JSON is YAML; no `{{` in it, so the template renders it verbatim.
        patches_toml.push_str(&format!("\n[profiles.patches.p{i}]\ntarget = {{ kind = \"{kind}\" }}\npatch = '''\n{patch}\n'''\n"));
    }
    let urls = "{ cluster-a = \"http://cluster-a.127.0.0.1.nip.io:8080\", cluster-b = \"http://cluster-b.127.0.0.1.nip.io:8080\", cluster-c = \"http://cluster-c.127.0.0.1.nip.io:8080\" }";
    format!(
        r#"[defaults]
image = "{IMAGE}"
create_namespace = true
cpu_guarantee = 0.001
mem_guarantee = "1Mi"
# Only on the bench node (tainted, so other tests' pods never land there).
node_selector = {{ "fleetspawn.io/bench" = "true" }}
tolerations = [{{ key = "fleetspawn.io/bench", operator = "Exists", effect = "NoSchedule" }}]
start_timeout = "600s"
scheduling_grace = "120s"
stop_timeout = 120

[[profiles]]
slug = "bench"
display_name = "Overhead runs"
default = true
context = "cluster-a"
namespace = "{NS_OVERHEAD}"
ingress_public_url = "http://cluster-a.127.0.0.1.nip.io:8080"
{patches_toml}
[[profiles]]
slug = "bench-base"
display_name = "Overhead runs, objects before patches (for the kubectl-driven spawner)"
context = "cluster-a"
namespace = "{NS_OVERHEAD}"
ingress_public_url = "http://cluster-a.127.0.0.1.nip.io:8080"

[[profiles]]
slug = "storm"
display_name = "Storm"
context = ["cluster-a", "cluster-b", "cluster-c"]
placement = "least-loaded"
namespace = "{NS_STORM}"
ingress_public_url = {urls}
{patches_toml}"#
    )
}

fn load_profiles(dir: &Path) -> ProfileSet {
    let path = dir.join("profiles.toml");
    std::fs::write(&path, profiles_toml()).expect("write bench profiles");
    fleetspawn::sources::profiles_builtin(&path).unwrap_or_else(|e| panic!("bench profiles: {e}"))
}

/// The bundle of `user` on `profile` as the spawner applies it (the placement annotation on the
/// Pod included).
fn bundle_like_spawner(renderer: &Renderer, set: &ProfileSet, profile: &str, user: &str, context: &str) -> Bundle {
    let profile = set.get(profile).expect("bench profile");
    let options = BTreeMap::new();
    let env = BTreeMap::new();
    let input = SpawnInput { user, server: "", profile, options: &options, context, secret_env: &env, url_prefix: None, owner: None };
    let mut bundle = renderer.render(&input).expect("render");
    for o in &mut bundle.objects {
        if o.tier == Tier::Workload {
            if let Some(ann) = o.object.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
                ann.insert(labels::PLACEMENT.into(), Value::String("the profile's only context".into()));
            }
        }
    }
    bundle
}

// ---------------------------------------------------------------------------------------------
// Statistics and /proc.

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, Default)]
struct Stats {
    n: usize,
    median_ms: f64,
    p99_ms: f64,
    min_ms: f64,
    max_ms: f64,
}

fn stats(samples: &[f64]) -> Stats {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return Stats::default();
    }
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    // Nearest rank.
    let rank = ((0.99 * n as f64).ceil() as usize).clamp(1, n);
    Stats { n, median_ms: median, p99_ms: v[rank - 1], min_ms: v[0], max_ms: v[n - 1] }
}

fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// utime + stime of this process, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after "comm": state is index 0, so utime (14th field) is index 11, stime 12.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn clock_ticks_per_second() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0)
}

// ---------------------------------------------------------------------------------------------
// Spawn overhead: fleetspawn and the bare loop, interleaved.

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, Default)]
struct Overhead {
    live: usize,
    objects: usize,
    fleetspawn: Stats,
    bare: Stats,
    /// API requests in the timed window, per run (median).
    fleetspawn_requests: f64,
    bare_requests: f64,
    errors: usize,
}

/// The floor: a prebuilt client, kinds resolved beforehand, each object server-side applied
/// one after another.
struct Bare {
    client: Client,
    kinds: HashMap<(String, String), (ApiResource, ApiCapabilities)>,
}

impl Bare {
    async fn new(client: Client, bundle: &Bundle) -> Bare {
        let mut kinds = HashMap::new();
        for o in &bundle.objects {
            let r = ObjectRef::of(&o.object).expect("ref");
            let gvk = GroupVersionKind::try_from(&TypeMeta { api_version: r.api_version.clone(), kind: r.kind.clone() }).expect("gvk");
            let found = kube::discovery::pinned_kind(&client, &gvk).await.expect("discovery");
            kinds.insert((r.api_version, r.kind), found);
        }
        Bare { client, kinds }
    }

    fn api(&self, r: &ObjectRef) -> Api<DynamicObject> {
        let (ar, caps) = &self.kinds[&(r.api_version.clone(), r.kind.clone())];
        match (&caps.scope, &r.namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, ar),
            _ => Api::all_with(self.client.clone(), ar),
        }
    }

    async fn apply_all(&self, bundle: &Bundle) -> Result<(), kube::Error> {
        let params = PatchParams::apply("fsbench-bare").force();
        for o in &bundle.objects {
            let r = ObjectRef::of(&o.object).expect("ref");
            self.api(&r).patch(&r.name, &params, &Patch::Apply(&o.object)).await?;
        }
        Ok(())
    }

    async fn delete_all(&self, bundle: &Bundle) {
        for o in &bundle.objects {
            let r = ObjectRef::of(&o.object).expect("ref");
            if r.kind != "Namespace" {
                let _ = self.api(&r).delete(&r.name, &DeleteParams::background()).await;
            }
        }
        for o in bundle.objects.iter().filter(|o| o.kind() == "Pod") {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &bundle.namespace);
            wait_gone(&pods, o.name()).await;
        }
    }
}

async fn wait_gone(pods: &Api<Pod>, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if matches!(pods.get_opt(name).await, Ok(None)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One fleetspawn spawn: spawn call → "Applied N/N objects"; then follows it to ready and stops
/// it (not timed). Returns (ms, requests in the window, ok).
async fn fleetspawn_once(s: &Spawner, user: &str, profile: &str) -> (f64, u64, bool) {
    let req = SpawnRequest { user: user.into(), profile: profile.into(), ..Default::default() };
    let r0 = requests();
    let t0 = Instant::now();
    let accepted = s.spawn(req).await;
    if let Err(e) = accepted {
        eprintln!("fsbench: spawn of {user} refused: {e}");
        return (f64::NAN, 0, false);
    }
    let mut applied = None;
    let mut ok = false;
    let mut events = s.progress(user, "").expect("progress").subscribe();
    while let Some(e) = events.next().await {
        if applied.is_none() && is_all_applied(&e.message) {
            applied = Some((t0.elapsed().as_secs_f64() * 1000.0, requests() - r0));
        }
        if e.ready == Some(true) {
            ok = true;
        }
        if e.failed == Some(true) {
            eprintln!("fsbench: spawn of {user} failed: {}", e.message);
        }
    }
    if let Err(e) = s.stop(user, "", false).await {
        eprintln!("fsbench: stop of {user}: {e}");
    }
    let (ms, reqs) = applied.unwrap_or((f64::NAN, 0));
    (ms, reqs, ok && applied.is_some())
}

/// "Applied 6/6 objects (Exposure)": the progress event after the last tier is applied.
fn is_all_applied(message: &str) -> bool {
    let Some(rest) = message.strip_prefix("Applied ") else { return false };
    let counts = rest.split_whitespace().next().unwrap_or_default();
    matches!(counts.split_once('/'), Some((a, b)) if a == b)
}

#[allow(clippy::too_many_arguments)] // one figure of the table: every knob is a column
async fn overhead(s: &Spawner, fleet: &Fleet, renderer: &Renderer, set: &ProfileSet, runs: usize, warmup: usize, live: usize, tag: &str) -> Overhead {
    let client = client_of(fleet, "cluster-a");
    let probe = bundle_like_spawner(renderer, set, "bench", &format!("{tag}-probe"), "cluster-a");
    let bare = Bare::new(client, &probe).await;
    let mut fs_ms = Vec::new();
    let mut bare_ms = Vec::new();
    let mut fs_req = Vec::new();
    let mut bare_req = Vec::new();
    let mut errors = 0;
    for i in 0..runs + warmup {
        // fleetspawn
        let (ms, reqs, ok) = fleetspawn_once(s, &format!("{tag}-fs-{i}"), "bench").await;
        if !ok {
            errors += 1;
        } else if i >= warmup {
            fs_ms.push(ms);
            fs_req.push(reqs as f64);
        }
        // the bare loop, same objects (rendering is not timed: it is in-process and pure)
        let bundle = bundle_like_spawner(renderer, set, "bench", &format!("{tag}-bare-{i}"), "cluster-a");
        let r0 = requests();
        let t0 = Instant::now();
        let result = bare.apply_all(&bundle).await;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let reqs = requests() - r0;
        match result {
            Ok(()) if i >= warmup => {
                bare_ms.push(ms);
                bare_req.push(reqs as f64);
            }
            Ok(()) => {}
            Err(e) => {
                eprintln!("fsbench: bare apply: {e}");
                errors += 1;
            }
        }
        bare.delete_all(&bundle).await;
    }
    Overhead {
        live,
        objects: probe.objects.len(),
        fleetspawn: stats(&fs_ms),
        bare: stats(&bare_ms),
        fleetspawn_requests: stats(&fs_req).median_ms,
        bare_requests: stats(&bare_req).median_ms,
        errors,
    }
}

// ---------------------------------------------------------------------------------------------
// Children: each measured phase in a process of its own.

struct Env {
    fleet: Fleet,
    spawner: Spawner,
    renderer: Renderer,
    profiles: ProfileSet,
    start_ms: f64,
}

async fn start_env(dir: &Path) -> Env {
    let t0 = Instant::now();
    let loaded = fleet::load(Some(&kubeconfig_path())).expect("kubeconfig");
    let fleet = counted_fleet(&loaded).await;
    let profiles = load_profiles(dir);
    let renderer = Renderer::builtin().expect("templates");
    let settings = SpawnerSettings { max_concurrent_spawns: 4096, max_servers_per_user: 3, home_namespace: BENCH_HOME.into(), ..Default::default() };
    let spawner = Spawner::start(fleet.clone(), profiles.clone(), renderer, settings, Metrics::new()).await.expect("spawner");
    let start_ms = t0.elapsed().as_secs_f64() * 1000.0;
    Env { fleet, spawner, renderer: Renderer::builtin().expect("templates"), profiles, start_ms }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn runs() -> usize {
    env_usize("FSBENCH_RUNS", 30)
}

fn result<T: serde::Serialize>(value: &T) {
    println!("RESULT {}", serde_json::to_string(value).expect("json"));
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, Default)]
struct StormResult {
    users: usize,
    per_cluster: BTreeMap<String, usize>,
    wall_s: f64,
    accept_s: f64,
    errors: usize,
    requests_per_spawn: f64,
    peak_rss_mib: f64,
    overhead: Overhead,
}

async fn child_storm(dir: &Path, users: usize) {
    let env = start_env(dir).await;
    let s = &env.spawner;
    let names: Vec<String> = (0..users).map(|i| format!("storm-{i}")).collect();
    let r0 = requests();
    let t0 = Instant::now();
    let accepted =
        futures::future::join_all(names.iter().map(|u| s.spawn(SpawnRequest { user: u.clone(), profile: "storm".into(), ..Default::default() }))).await;
    let accept_s = t0.elapsed().as_secs_f64();
    let mut errors = 0;
    let mut per_cluster = BTreeMap::new();
    for (u, a) in names.iter().zip(&accepted) {
        match a {
            Ok(v) => *per_cluster.entry(v.cluster.clone()).or_insert(0) += 1,
            Err(e) => {
                errors += 1;
                eprintln!("fsbench: storm spawn {u} refused: {e}");
            }
        }
    }
    let ends = futures::future::join_all(names.iter().zip(&accepted).filter(|(_, a)| a.is_ok()).map(|(u, _)| async move {
        let events: Vec<_> = s.progress(u, "").expect("progress").subscribe().collect().await;
        events.last().is_some_and(|e| e.ready == Some(true))
    }))
    .await;
    let wall_s = t0.elapsed().as_secs_f64();
    let reqs = requests() - r0;
    errors += ends.iter().filter(|ok| !**ok).count();
    let peak_rss_mib = proc_status_kib("VmHWM:") as f64 / 1024.0;
    eprintln!("fsbench: storm of {users}: all ready in {wall_s:.1}s, {errors} errors, peak RSS {peak_rss_mib:.1} MiB");
    let overhead = overhead(s, &env.fleet, &env.renderer, &env.profiles, runs(), 2, users, "o1k").await;
    result(&StormResult { users, per_cluster, wall_s, accept_s, errors, requests_per_spawn: reqs as f64 / users as f64, peak_rss_mib, overhead });
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, Default)]
struct RegistryResult {
    instances_expected: usize,
    instances_synced: usize,
    sync_ms: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
    idle_cpu_percent: f64,
    idle_seconds: f64,
    idle_requests: u64,
    overhead: Overhead,
}

async fn child_registry(dir: &Path, expected: usize) {
    let env = start_env(dir).await;
    let s = &env.spawner;
    let synced: usize = s.registry().pods_per_cluster().values().sum();
    let unsynced = s.unsynced_clusters();
    assert!(unsynced.is_empty(), "not synced: {unsynced:?}");
    let rss_mib = proc_status_kib("VmRSS:") as f64 / 1024.0;
    let peak_rss_mib = proc_status_kib("VmHWM:") as f64 / 1024.0;
    eprintln!("fsbench: registry synced in {:.0} ms with {synced} scale instances, RSS {rss_mib:.1} MiB", env.start_ms);
    let idle = Duration::from_secs(env_usize("FSBENCH_IDLE_SECONDS", 10) as u64);
    let (c0, r0, t0) = (cpu_ticks(), requests(), Instant::now());
    tokio::time::sleep(idle).await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu_s = (cpu_ticks() - c0) as f64 / clock_ticks_per_second();
    let idle_requests = requests() - r0;
    let overhead = overhead(s, &env.fleet, &env.renderer, &env.profiles, runs(), 2, expected, "o10k").await;
    result(&RegistryResult {
        instances_expected: expected,
        instances_synced: synced,
        sync_ms: env.start_ms,
        rss_mib,
        peak_rss_mib,
        idle_cpu_percent: cpu_s / secs * 100.0,
        idle_seconds: secs,
        idle_requests,
        overhead,
    });
}

async fn child_overhead(dir: &Path) {
    let env = start_env(dir).await;
    let o = overhead(&env.spawner, &env.fleet, &env.renderer, &env.profiles, runs(), 2, 0, "o0").await;
    result(&o);
}

fn run_child(args: &[&str], dir: &Path) -> Value {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe).arg("child").args(args).env("FSBENCH_DIR", dir).stderr(std::process::Stdio::inherit()).output().expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find_map(|l| l.strip_prefix("RESULT "));
    match (out.status.success(), line) {
        (true, Some(line)) => serde_json::from_str(line).expect("child result"),
        _ => panic!("child {args:?} failed ({}):\n{stdout}", out.status),
    }
}

// ---------------------------------------------------------------------------------------------
// The kubectl-driven spawner (jupyterhub-multicluster-kubespawner 0.2), through its harness.

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, Default)]
struct Mcks {
    version: String,
    applied: Stats,
    kubectl_calls_per_spawn: f64,
    errors: usize,
}

fn run_mcks(dir: &Path, renderer: &Renderer, set: &ProfileSet, kubeconfig: &Path, runs: usize) -> Option<Mcks> {
    let python = std::env::var("FSBENCH_PYTHON").ok()?;
    // multicluster-kubespawner uses the context's namespace: give it a kubeconfig copy whose
    // cluster-a context defaults to the bench namespace.
    let kc = dir.join("mcks-kubeconfig");
    std::fs::copy(kubeconfig, &kc).expect("copy kubeconfig");
    let st = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["config", "set-context", "cluster-a", &format!("--namespace={NS_OVERHEAD}")])
        .output()
        .expect("kubectl");
    assert!(st.status.success(), "kubectl config set-context: {}", String::from_utf8_lossy(&st.stderr));
    let warmup = 2;
    let specs: Vec<Value> = (0..runs + warmup)
        .map(|i| {
            let user = format!("o0-mcks-{i}");
            let bundle = bundle_like_spawner(renderer, set, "bench-base", &user, "cluster-a");
            let pod = bundle.objects.iter().find(|o| o.kind() == "Pod").expect("pod").name().to_string();
            let by_kind = |k: &str| bundle.objects.iter().find(|o| o.kind() == k).map(|o| o.name().to_string());
            let patches: Vec<Value> = patches()
                .into_iter()
                .map(|(kind, mut p)| {
                    let name = by_kind(kind).expect("patched object");
                    p["kind"] = json!(kind);
                    p["metadata"]["name"] = json!(name);
                    p
                })
                .collect();
            json!({
                "user": user,
                "key": pod,
                "namespace": bundle.namespace,
                "resources": bundle.objects.iter().map(|o| o.object.clone()).collect::<Vec<_>>(),
                "patches": patches,
            })
        })
        .collect();
    let input = dir.join("mcks-runs.json");
    std::fs::write(&input, serde_json::to_string(&json!({"context": "cluster-a", "kubeconfig": kc, "warmup": warmup, "runs": specs})).unwrap()).unwrap();
    let out = Command::new(python)
        .arg(repo().join("benches/mcks_harness.py"))
        .arg(&input)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run the multicluster-kubespawner harness");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find_map(|l| l.strip_prefix("RESULT "))?;
    let v: Value = serde_json::from_str(line).ok()?;
    let applied: Vec<f64> = v["applied_ms"].as_array()?.iter().filter_map(Value::as_f64).collect();
    Some(Mcks {
        version: v["version"].as_str().unwrap_or("?").to_string(),
        applied: stats(&applied),
        kubectl_calls_per_spawn: v["kubectl_calls_per_spawn"].as_f64().unwrap_or(0.0),
        errors: v["errors"].as_u64().unwrap_or(0) as usize,
    })
}

// ---------------------------------------------------------------------------------------------
// Cluster preparation and cleanup (parent).

async fn ensure_bench_node(client: &Client, cluster: &str) {
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": BENCH_NODE, "annotations": {"kwok.x-k8s.io/node": "fake"},
                     "labels": {"type": "kwok", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "fleetspawn.io/bench": "true",
                                "topology.kubernetes.io/zone": format!("{cluster}-zone-bench")}},
        "spec": {"taints": [{"key": "fleetspawn.io/bench", "value": "true", "effect": "NoSchedule"}]},
        "status": {"allocatable": {"cpu": "1000", "memory": "4Ti", "pods": "20000", "ephemeral-storage": "10Ti"},
                   "capacity": {"cpu": "1000", "memory": "4Ti", "pods": "20000", "ephemeral-storage": "10Ti"},
                   "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "fake", "kubeProxyVersion": "fake"}}
    }))
    .unwrap();
    let api: Api<Node> = Api::all(client.clone());
    if api.get_opt(BENCH_NODE).await.ok().flatten().is_none() {
        api.create(&PostParams::default(), &node).await.unwrap_or_else(|e| panic!("{cluster}: create bench node: {e}"));
    }
    // Wait until kwok reports it Ready.
    for _ in 0..100 {
        let ready = api
            .get_opt(BENCH_NODE)
            .await
            .ok()
            .flatten()
            .and_then(|n| n.status?.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("fsbench: {cluster}: bench node not Ready after 20s; continuing");
}

/// The local clusters allocate ClusterIPs from a /24 (kwokctl's default): fewer than a storm
/// puts on one cluster. A second ServiceCIDR (Kubernetes ≥ 1.33) widens it for the bench only.
fn service_cidr_api(client: &Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("networking.k8s.io", "v1", "ServiceCIDR"));
    Api::all_with(client.clone(), &ar)
}

async fn ensure_service_cidr(client: &Client, cluster: &str) {
    let cidr = json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR", "metadata": {"name": "fsbench"}, "spec": {"cidrs": ["10.96.0.0/20"]}});
    if let Err(e) = service_cidr_api(client).patch("fsbench", &PatchParams::apply("fsbench").force(), &Patch::Apply(&cidr)).await {
        eprintln!("fsbench: {cluster}: extra ServiceCIDR: {e}");
    }
}

async fn delete_namespace(client: &Client, ns: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(ns, &DeleteParams::background()).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if matches!(api.get_opt(ns).await, Ok(None)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("fsbench: namespace {ns} still there after 10 min");
}

/// Creates `n` labelled instance Pods directly, spread over the clusters, bound to the bench
/// node; waits (bounded) until kwok reports them Running. Returns how many run.
async fn create_scale_pods(clients: &[(String, Client)], n: usize) -> usize {
    for (_, c) in clients {
        let ns: Namespace = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS_SCALE}})).unwrap();
        let _ = Api::<Namespace>::all(c.clone()).create(&PostParams::default(), &ns).await;
    }
    let t0 = Instant::now();
    let made = stream::iter(0..n)
        .map(|i| {
            let (cluster, client) = &clients[i % clients.len()];
            let key = format!("fsbench-scale-{i}");
            let pod: Pod = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("fs-{key}"), "namespace": NS_SCALE,
                    "labels": {labels::MANAGED_BY: labels::MANAGED_BY_VALUE, labels::INSTANCE: key, labels::USER: key, labels::SERVER: "", labels::PROFILE: "scale",
                               labels::OWNER: format!("scale-owner-{i}"), labels::HOME: BENCH_HOME},
                    "annotations": {labels::USERNAME: key, labels::SERVERNAME: "", labels::CONTEXT: cluster,
                                    labels::URL: format!("http://{cluster}.127.0.0.1.nip.io:8080/user/{key}/")}},
                "spec": {"nodeName": BENCH_NODE, "automountServiceAccountToken": false,
                         "containers": [{"name": "notebook", "image": IMAGE, "ports": [{"name": "notebook", "containerPort": 8888}],
                                         "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}]}
            }))
            .unwrap();
            let api: Api<Pod> = Api::namespaced(client.clone(), NS_SCALE);
            async move {
                for attempt in 0..5 {
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(_) => return true,
                        Err(kube::Error::Api(s)) if s.code == 409 => return true,
                        Err(e) if attempt == 4 => {
                            eprintln!("fsbench: create scale pod: {e}");
                            return false;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                    }
                }
                false
            }
        })
        .buffer_unordered(48)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    eprintln!("fsbench: created {made}/{n} scale pods in {:.1}s; waiting for kwok to run them", t0.elapsed().as_secs_f64());
    // Until kwok runs them all, or the count has not moved for 30 s (kwok may drop a stage).
    let deadline = Instant::now() + Duration::from_secs(env_usize("FSBENCH_SCALE_WAIT", 600) as u64);
    let (mut last, mut last_change) = (usize::MAX, Instant::now());
    loop {
        let mut running = 0;
        for (_, c) in clients {
            let api: Api<Pod> = Api::namespaced(c.clone(), NS_SCALE);
            let lp = ListParams::default().fields("status.phase=Running").labels(labels::MANAGED_SELECTOR);
            running += api.list_metadata(&lp).await.map(|l| l.items.len()).unwrap_or(0);
        }
        if running != last {
            (last, last_change) = (running, Instant::now());
        }
        if running >= made || Instant::now() > deadline || last_change.elapsed() > Duration::from_secs(30) {
            eprintln!("fsbench: {running}/{made} scale pods Running after {:.1}s", t0.elapsed().as_secs_f64());
            return running;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Managed Pods already on the clusters outside the bench (other users of the clusters).
async fn foreign_instances(clients: &[(String, Client)]) -> usize {
    let mut n = 0;
    for (_, c) in clients {
        let api: Api<Pod> = Api::all(c.clone());
        let items = api.list_metadata(&ListParams::default().labels(labels::MANAGED_SELECTOR)).await.map(|l| l.items).unwrap_or_default();
        n += items.iter().filter(|p| !p.metadata.namespace.as_deref().unwrap_or_default().starts_with("fsbench-")).count();
    }
    n
}

// ---------------------------------------------------------------------------------------------
// The report.

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, m)| m.trim().to_string()).unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo.lines().find(|l| l.starts_with("MemTotal")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({model}), {:.1} GiB memory, Linux {}", mem_kib as f64 / 1024.0 / 1024.0, kernel.trim())
}

fn ms(s: &Stats) -> String {
    format!("{:.1} / {:.1}", s.median_ms, s.p99_ms)
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

fn table(r: &Value) -> String {
    let o0: Overhead = serde_json::from_value(r["overhead0"].clone()).unwrap_or_default();
    let storm: Option<StormResult> = serde_json::from_value(r["storm"].clone()).ok();
    let reg: Option<RegistryResult> = serde_json::from_value(r["registry"].clone()).ok();
    let mcks: Option<Mcks> = serde_json::from_value(r["mcks"].clone()).ok();
    let mut t = String::new();
    t.push_str(&format!("Run {} on {}.\n", r["date"].as_str().unwrap_or("?"), r["machine"].as_str().unwrap_or("?")));
    t.push_str(&format!(
        "Runs per overhead figure: {} (after 2 warm-up runs); bundle: {} objects; managed instances of other users on the clusters at the start: {}.\n\n",
        o0.fleetspawn.n,
        o0.objects,
        r["foreign"].as_u64().unwrap_or(0)
    ));
    t.push_str("**1. Spawn overhead** (spawn call → every object accepted by the API server; ms, median / p99)\n\n");
    t.push_str("| spawner | median / p99 (ms) | API requests in the window | vs bare loop (median) | target |\n|---|---|---|---|---|\n");
    let ratio_bare = o0.fleetspawn.median_ms / o0.bare.median_ms;
    t.push_str(&format!(
        "| (a) fleetspawn | {} | {:.0} | {:.2}× (p99 {:.2}×) | ≤ 1.25× bare: {} |\n",
        ms(&o0.fleetspawn),
        o0.fleetspawn_requests,
        ratio_bare,
        o0.fleetspawn.p99_ms / o0.bare.p99_ms,
        mark(ratio_bare <= 1.25)
    ));
    t.push_str(&format!("| (b) bare kube-rs loop (floor) | {} | {:.0} | 1.00× | |\n", ms(&o0.bare), o0.bare_requests));
    match &mcks {
        Some(m) => {
            let speedup = m.applied.median_ms / o0.fleetspawn.median_ms;
            t.push_str(&format!(
                "| (c) multicluster-kubespawner {} (kubectl, {:.0} subprocesses until applied) | {} | n/a (kubectl) | {:.2}× | fleetspawn ≥ 20× faster: **{:.1}×** (p99 {:.1}×) {} |\n",
                m.version,
                m.kubectl_calls_per_spawn,
                ms(&m.applied),
                m.applied.median_ms / o0.bare.median_ms,
                speedup,
                m.applied.p99_ms / o0.fleetspawn.p99_ms,
                mark(speedup >= 20.0)
            ));
        }
        None => t.push_str("| (c) multicluster-kubespawner | not run (FSBENCH_PYTHON unset or harness failed) | | | |\n"),
    }
    if let Some(s) = &storm {
        t.push_str(&format!(
            "\n**2. Spawn storm**: {} users at once across three clusters ({})\n\n",
            s.users,
            s.per_cluster.iter().map(|(c, n)| format!("{c}: {n}")).collect::<Vec<_>>().join(", ")
        ));
        t.push_str("| figure | value | target |\n|---|---|---|\n");
        t.push_str(&format!("| wall time until all Ready | {:.1} s (all accepted in {:.2} s) | |\n", s.wall_s, s.accept_s));
        t.push_str(&format!("| errors | {} | 0: {} |\n", s.errors, mark(s.errors == 0)));
        t.push_str(&format!("| API requests per spawn (spawn → Ready, whole process) | {:.1} | |\n", s.requests_per_spawn));
        t.push_str(&format!("| peak RSS of fleetspawn (VmHWM) | {:.1} MiB | |\n", s.peak_rss_mib));
    }
    if let Some(g) = &reg {
        t.push_str(&format!("\n**3. Registry scale**: {} live instances across three clusters\n\n", g.instances_expected));
        t.push_str("| figure | value | target |\n|---|---|---|\n");
        t.push_str(&format!(
            "| start → registry fully synced ({} instances in the index) | {:.0} ms | ≤ 5 s: {} |\n",
            g.instances_synced,
            g.sync_ms,
            mark(g.sync_ms <= 5000.0)
        ));
        t.push_str(&format!(
            "| RSS when synced (VmRSS; peak VmHWM {:.1} MiB) | {:.1} MiB | ≤ 100 MiB: {} |\n",
            g.peak_rss_mib,
            g.rss_mib,
            mark(g.rss_mib <= 100.0)
        ));
        t.push_str(&format!(
            "| CPU while idle ({:.0} s, utime+stime; {} API requests) | {:.2} % of one core | |\n",
            g.idle_seconds, g.idle_requests, g.idle_cpu_percent
        ));
    }
    t.push_str("\n**4. Spawn overhead as work grows** (ms, median / p99)\n\n");
    t.push_str("| instances live | fleetspawn | bare loop | ratio (median) |\n|---|---|---|---|\n");
    let mut rows = vec![o0.clone()];
    if let Some(s) = &storm {
        rows.push(s.overhead.clone());
    }
    if let Some(g) = &reg {
        rows.push(g.overhead.clone());
    }
    for o in rows {
        t.push_str(&format!("| {} | {} | {} | {:.2}× |\n", o.live, ms(&o.fleetspawn), ms(&o.bare), o.fleetspawn.median_ms / o.bare.median_ms));
    }
    t
}

fn rewrite_doc(table: &str) {
    let path = std::env::var("FSBENCH_DOC").map(PathBuf::from).unwrap_or_else(|_| repo().join("docs/benchmarks.md"));
    let Ok(doc) = std::fs::read_to_string(&path) else { return };
    let (begin, end) = ("<!-- bench:begin -->", "<!-- bench:end -->");
    if let (Some(b), Some(e)) = (doc.find(begin), doc.find(end)) {
        let new = format!("{}{begin}\n{table}{}", &doc[..b], &doc[e..]);
        std::fs::write(&path, new).expect("rewrite docs/benchmarks.md");
        eprintln!("fsbench: table written to {}", path.display());
    }
}

async fn parent() {
    let kubeconfig = kubeconfig_path();
    let dir = tempfile::tempdir().expect("tempdir");
    let loaded = fleet::load(Some(&kubeconfig)).expect("kubeconfig");
    let fleet = counted_fleet(&loaded).await;
    let clients: Vec<(String, Client)> = CLUSTERS.iter().map(|c| (c.to_string(), client_of(&fleet, c))).collect();
    let storm_users = env_usize("FSBENCH_STORM", 1000);
    let scale = env_usize("FSBENCH_SCALE", 10_000);
    let mut report = serde_json::Map::new();
    report.insert("machine".into(), json!(machine()));
    let date =
        Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    report.insert("date".into(), json!(date));
    report.insert("foreign".into(), json!(foreign_instances(&clients).await));

    for (cluster, c) in &clients {
        ensure_bench_node(c, cluster).await;
        ensure_service_cidr(c, cluster).await;
    }
    let renderer = Renderer::builtin().expect("templates");
    let set = load_profiles(dir.path());

    eprintln!("==> 1. spawn overhead, 0 instances live: fleetspawn and the bare loop");
    report.insert("overhead0".into(), run_child(&["overhead"], dir.path()));
    eprintln!("==> 1c. spawn overhead: jupyterhub-multicluster-kubespawner (kubectl)");
    match run_mcks(dir.path(), &renderer, &set, &kubeconfig, runs()) {
        Some(m) => {
            report.insert("mcks".into(), serde_json::to_value(m).unwrap());
        }
        None => eprintln!("fsbench: multicluster-kubespawner not measured (set FSBENCH_PYTHON; see ./bench)"),
    }
    let a = &clients[0].1;
    delete_namespace(a, NS_OVERHEAD).await;

    if storm_users > 0 {
        eprintln!("==> 2. spawn storm: {storm_users} users (then overhead with them live)");
        report.insert("storm".into(), run_child(&["storm", &storm_users.to_string()], dir.path()));
        for (_, c) in &clients {
            delete_namespace(c, NS_STORM).await;
        }
        delete_namespace(a, NS_OVERHEAD).await;
    }
    if scale > 0 {
        eprintln!("==> 3. registry scale: creating {scale} instance pods");
        let running = create_scale_pods(&clients, scale).await;
        eprintln!("==> 3. registry scale: measuring ({running} running)");
        report.insert("registry".into(), run_child(&["registry", &scale.to_string()], dir.path()));
        eprintln!("==> cleaning up the scale pods");
        for (_, c) in &clients {
            delete_namespace(c, NS_SCALE).await;
        }
        delete_namespace(a, NS_OVERHEAD).await;
    }
    for (_, c) in &clients {
        let _ = Api::<Node>::all(c.clone()).delete(BENCH_NODE, &DeleteParams::default()).await;
        let _ = service_cidr_api(c).delete("fsbench", &DeleteParams::default()).await;
    }
    let report = Value::Object(report);
    let out = repo().join("target/fsbench-latest.json");
    let _ = std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap());
    let t = table(&report);
    println!("\n{t}");
    rewrite_doc(&t);
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FSBENCH_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    // `cargo bench` passes --bench; ignore flags.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = std::env::var("FSBENCH_DIR").map(PathBuf::from).unwrap_or_else(|_| std::env::temp_dir());
    let fut: Pin<Box<dyn Future<Output = ()>>> = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["child", "overhead"] => Box::pin(child_overhead(&dir)),
        ["child", "storm", n] => Box::pin(child_storm(&dir, n.parse().expect("users"))),
        ["child", "registry", n] => Box::pin(child_registry(&dir, n.parse().expect("instances"))),
        ["table", file] => {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(file).expect("report")).expect("json");
            let t = table(&v);
            println!("{t}");
            rewrite_doc(&t);
            return;
        }
        _ => Box::pin(parent()),
    };
    rt.block_on(fut);
}
