//! The spawner: the record of every user server is a `UserServer` in the home cluster; this
//! service writes those records for its callers (the API, the web form, the CLI) and runs the
//! reconciler that makes the clusters match them.
//!
//! A start request checks its input and the limits, places the server (pure placement over
//! health and load) and writes the record with its cluster before any remote object exists; it
//! returns at once. The reconciler ([`reconcile`]) decides every next step as a function of
//! the record, the Pods seen on its cluster, what this process is doing and the time
//! ([`decide::next_step`]); it runs on every change of a record or of its Pods, and
//! periodically. Long steps (a spawn: apply the bundle tier by tier, follow the Pod and its
//! Events until Ready or a failure; a stop) run in tasks of their own ([`spawn`]), never tied
//! to an HTTP request, and pick up from the status after a restart.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use fleetspawn_core::bundle::{BundleError, Renderer, SpawnInput};
use fleetspawn_core::instance::{InstanceState, InstanceView};
use fleetspawn_core::labels;
use fleetspawn_core::lifecycle::{Failure, FailureKind, ProgressEvent};
use fleetspawn_core::naming::{self, InstanceKey};
use fleetspawn_core::placement;
use fleetspawn_core::profiles::hub_parameters::{self, HubParameterError};
use fleetspawn_core::profiles::{OptionError, ProfileSet, DEFAULT_STOP_TIMEOUT};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::ResourceExt as _;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

mod decide;
pub mod progress;
mod reconcile;
mod shards;
mod spawn;

use crate::config::Config;
use crate::kube::fleet::{Fleet, Health};
use crate::kube::home::{Home, HomeError};
use crate::kube::objects::{ClusterApi, ObjectError};
use crate::kube::userserver::{Phase, SecretRef, UserServer, UserServerStatus, FINALIZER, REMOVE_STORAGE};
use crate::metrics::Metrics;
use crate::registry::Registry;
use progress::Progress;

/// How long the progress of a finished spawn stays available (late subscribers, the cause of
/// a failure).
const FINISHED_RETENTION: Duration = Duration::from_secs(3600);

/// Most entries kept of finished spawns' progress and of applied Namespaces: memory stays
/// bounded however many users come and go (the oldest entries go first).
const MAX_REMEMBERED: usize = 10_000;

/// How often cluster health is probed; a failed probe marks the cluster's Pods unknown.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);

/// How often every record is reconciled even when nothing changed (lifespans, idleness).
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// How long a record this process wrote is answered from its own copy while the watch does
/// not show that version yet (the watch is normally milliseconds behind; after a dropped
/// connection, seconds).
const ACCEPTED_BRIDGE: Duration = Duration::from_secs(60);

/// How long [`Spawner::start`] waits for the first list of the records.
const HOME_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Limits and timings of a spawner.
#[derive(Clone, Debug)]
pub struct SpawnerSettings {
    /// Spawns in flight at once, across all users; more are refused.
    pub max_concurrent_spawns: usize,
    /// Of those, the most one user may hold, so one user's spawns that never become ready
    /// cannot take everyone's slots.
    pub max_spawns_per_user: usize,
    /// Servers one user may have (named servers included).
    pub max_servers_per_user: usize,
    /// Age after which objects no record owns are collected.
    pub gc_grace: Duration,
    /// How often garbage collection runs.
    pub gc_interval: Duration,
    /// The hub's base URL, under which a requested URL prefix must be the user's own.
    pub hub_base_url: String,
    /// The kubeconfig context of the home cluster (`None`: the first context by name).
    pub home_context: Option<String>,
    /// The namespace of the records in the home cluster.
    pub home_namespace: String,
    /// Install or upgrade the CRD at start.
    pub install_crd: bool,
    /// How often every record is reconciled when nothing changed.
    pub resync: Duration,
    /// Where users' activity comes from (`None`: no idle culling).
    pub activity: Option<ActivitySource>,
    /// A configurable-http-proxy fleetspawn routes users through itself (`None`: a hub's
    /// proxy does, or none).
    pub proxy: Option<ProxyTarget>,
    /// Counted among the replicas that share the clusters' Leases (a daemon). A guest (the
    /// CLI) takes only Leases nobody holds and never makes a replica give one up.
    pub member: bool,
}

/// How often garbage collection runs.
pub const GC_INTERVAL: Duration = Duration::from_secs(30);

impl From<&Config> for SpawnerSettings {
    fn from(config: &Config) -> Self {
        SpawnerSettings {
            max_concurrent_spawns: config.max_concurrent_spawns,
            max_spawns_per_user: config.max_spawns_per_user,
            max_servers_per_user: config.max_servers_per_user,
            gc_grace: config.gc_grace,
            gc_interval: GC_INTERVAL,
            hub_base_url: config.hub_base_url.clone(),
            home_context: config.home_context.clone(),
            home_namespace: config.home_namespace.clone(),
            install_crd: config.install_crd,
            resync: RESYNC_INTERVAL,
            activity: None,
            proxy: None,
            member: true,
        }
    }
}

/// The activity source of idle culling: JupyterHub's REST API, read every `interval`.
#[derive(Clone)]
pub struct ActivitySource {
    pub hub: crate::hub::HubApi,
    pub interval: Duration,
}

impl std::fmt::Debug for ActivitySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivitySource").field("hub", &self.hub.url()).field("interval", &self.interval).finish()
    }
}

/// A configurable-http-proxy fleetspawn drives: the routes of running servers are added to
/// it (before their spawn says ready) and stale ones of this installation removed, every
/// `interval`; users are given URLs under `public_url`; its routes' activity feeds idle
/// culling.
#[derive(Clone)]
pub struct ProxyTarget {
    pub api: crate::proxy::ProxyApi,
    pub public_url: String,
    pub interval: Duration,
}

impl std::fmt::Debug for ProxyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyTarget").field("api", &self.api.url()).field("public_url", &self.public_url).field("interval", &self.interval).finish()
    }
}

/// The settings' defaults ([`Config::default`] is the one place they are written).
impl Default for SpawnerSettings {
    fn default() -> Self {
        SpawnerSettings::from(&Config::default())
    }
}

/// What a caller asks for.
#[derive(Clone, Debug, Default)]
pub struct SpawnRequest {
    pub user: String,
    /// Empty for the default server.
    pub server: String,
    pub profile: String,
    pub options: BTreeMap<String, String>,
    /// Put into the server's Secret (e.g. a hub's API token), never into a spec or a status.
    pub env: BTreeMap<String, String>,
    /// URL path prefix to serve under (a hub's base_url); default from `naming::url_prefix`.
    pub url_prefix: Option<String>,
    /// The hub's per-spawn parameters, checked against the profile's declarations.
    pub hub_parameters: BTreeMap<String, serde_json::Value>,
}

/// Why a spawn or stop was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("unknown profile {0:?}")]
    UnknownProfile(String),
    #[error(transparent)]
    BadOption(#[from] OptionError),
    #[error(transparent)]
    BadHubParameter(#[from] HubParameterError),
    #[error("too many spawns in flight (limit {limit}); try again shortly")]
    TooManySpawns { limit: usize },
    #[error("{user} already has {limit} spawns in flight (the limit per user); wait for one to finish")]
    TooManySpawnsForUser { user: String, limit: usize },
    #[error("{user} already has {limit} servers (the limit); stop one first")]
    TooManyServers { user: String, limit: usize },
    #[error(transparent)]
    NoHealthyCluster(#[from] placement::NoHealthyCluster),
    #[error("cluster {context} is not synced or unreachable: the state of this server cannot be known yet")]
    ClusterUnavailable { context: String },
    #[error("a stop of this server is in progress")]
    Busy,
    #[error("no such server")]
    NotFound,
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("{0}")]
    Kubernetes(#[from] ObjectError),
    #[error("stopping did not finish within {0:?}")]
    StopTimeout(Duration),
    #[error("url_prefix {prefix:?} is not {user:?}'s own path (expected {expected:?})")]
    ForeignUrlPrefix { prefix: String, user: String, expected: String },
    /// The home cluster (the records) cannot be written: nothing was changed.
    #[error("the home cluster cannot be reached, so nothing was changed; try again shortly")]
    Home(#[source] HomeError),
    #[error("no home cluster: {0}")]
    NoHome(String),
}

impl From<HomeError> for SpawnError {
    fn from(e: HomeError) -> Self {
        SpawnError::Home(e)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum OpKind {
    Spawn,
    Stop,
}

/// One task in flight in this process for one record.
struct Op {
    kind: OpKind,
    cancel: CancellationToken,
    /// Cancelled because another replica took the cluster over: it carries on from the
    /// status, so nothing is rolled back or recorded here.
    handed_over: AtomicBool,
    progress: Progress,
    done: watch::Sender<bool>,
}

impl Op {
    fn new(kind: OpKind) -> Op {
        Op { kind, cancel: CancellationToken::new(), handed_over: AtomicBool::new(false), progress: Progress::default(), done: watch::channel(false).0 }
    }

    async fn finished(&self) {
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }
}

struct ClusterHandle {
    api: ClusterApi,
    recorder: Recorder,
}

struct Inner {
    clusters: BTreeMap<String, ClusterHandle>,
    fleet: Fleet,
    registry: Registry,
    home: Home,
    home_context: String,
    /// The records, as the home cluster's watch has them.
    store: Store<UserServer>,
    home_recorder: Recorder,
    profiles: RwLock<Arc<ProfileSet>>,
    renderer: Renderer,
    settings: SpawnerSettings,
    /// Tasks in flight in this process, by record name.
    ops: Mutex<HashMap<String, Arc<Op>>>,
    /// Finished spawns' progress, so a late subscriber still gets the history.
    finished: Mutex<HashMap<String, (Instant, Progress)>>,
    /// Records this process wrote that its watch may not show yet: (when, the record).
    accepted: Mutex<HashMap<String, (Instant, UserServer)>>,
    /// Spawns being accepted right now (placed, record not written yet), per cluster: counted
    /// in the load and the limit, so concurrent starts spread and never overshoot.
    placing: Mutex<BTreeMap<String, usize>>,
    /// Records a start request of this process is writing (create, env Secret, placement).
    accepting: Mutex<HashSet<String>>,
    /// One start at a time per user, so the per-user limit is checked and the record written
    /// in one step.
    user_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    health: RwLock<BTreeMap<String, Health>>,
    /// Kinds seen in bundles, swept by stop and garbage collection.
    kinds: Mutex<BTreeSet<(String, String)>>,
    /// (context, namespace) → when this process last applied that Namespace.
    namespaces: Mutex<HashMap<(String, String), Instant>>,
    restart_watch: BTreeMap<String, watch::Sender<u64>>,
    /// Record names to reconcile now.
    trigger: mpsc::UnboundedSender<String>,
    /// Whether activity has been read since start: no idle culling before that.
    activity_read: AtomicBool,
    /// The cluster Leases this replica holds: only those clusters are written to from here.
    shards: Arc<shards::Shards>,
    shutdown: CancellationToken,
    metrics: Metrics,
}

/// The spawner service. Cheap to clone.
#[derive(Clone)]
pub struct Spawner {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Spawner {
    /// Connects to the home cluster (its namespace, the CRD when allowed), starts the watches
    /// of every cluster, the reconciler, the health monitor and garbage collection, and returns
    /// once the records and every cluster's initial list are in (or unreachable).
    pub async fn start(fleet: Fleet, profiles: ProfileSet, renderer: Renderer, settings: SpawnerSettings, metrics: Metrics) -> Result<Spawner, SpawnError> {
        let contexts: Vec<String> = fleet.contexts().iter().map(|c| c.to_string()).collect();
        let home_context = match &settings.home_context {
            Some(c) => c.clone(),
            None => contexts.first().cloned().ok_or_else(|| SpawnError::NoHome("the kubeconfig has no context".into()))?,
        };
        let home_client = match fleet.get(&home_context).map(|c| &c.client) {
            Some(Ok(client)) => client.clone(),
            Some(Err(cause)) => return Err(SpawnError::NoHome(format!("context {home_context}: {cause}"))),
            None => return Err(SpawnError::NoHome(format!("home_context {home_context:?} is not a context of the kubeconfig"))),
        };
        let home = Home::new(home_client.clone(), &settings.home_namespace);
        home.ensure_namespace().await?;
        if settings.install_crd {
            home.install_crd().await?;
        }
        for context in &contexts {
            metrics.cluster_known(context);
        }
        for why in decide::Cull::ALL {
            metrics.cull_reason_known(&why.name());
        }
        let selector = format!("{}={}", labels::HOME, settings.home_namespace);
        let (registry, touched) = Registry::new(contexts.iter().map(String::as_str), selector, metrics.clone());
        let reporter = Reporter { controller: "fleetspawn".into(), instance: std::env::var("HOSTNAME").ok() };
        let mut clusters = BTreeMap::new();
        let mut restart_watch = BTreeMap::new();
        for c in fleet.clusters() {
            match &c.client {
                Ok(client) => {
                    clusters.insert(
                        c.context.clone(),
                        ClusterHandle { api: ClusterApi::new(client.clone()), recorder: Recorder::new(client.clone(), reporter.clone()) },
                    );
                    restart_watch.insert(c.context.clone(), watch::channel(0).0);
                }
                Err(cause) => registry.mark_unreachable(&c.context, cause),
            }
        }
        let kinds = fleetspawn_core::bundle::BUILTIN_KINDS.iter().map(|(a, k)| ((*a).to_string(), (*k).to_string())).collect();
        let (trigger, triggered) = mpsc::unbounded_channel();
        let controller = reconcile::controller(&home);
        let shutdown = CancellationToken::new();
        let (shard_changes, mut shard_changed) = mpsc::unbounded_channel();
        let shards = shards::Shards::start(home_client.clone(), home.namespace(), contexts.clone(), settings.member, shutdown.clone(), shard_changes);
        let spawner = Spawner {
            inner: Arc::new(Inner {
                clusters,
                fleet,
                registry,
                store: controller.store(),
                home_recorder: Recorder::new(home_client, reporter),
                home,
                home_context,
                profiles: RwLock::new(Arc::new(profiles)),
                renderer,
                settings,
                ops: Mutex::default(),
                finished: Mutex::default(),
                accepted: Mutex::default(),
                placing: Mutex::default(),
                accepting: Mutex::default(),
                user_locks: Mutex::default(),
                health: RwLock::default(),
                kinds: Mutex::new(kinds),
                namespaces: Mutex::default(),
                restart_watch,
                trigger,
                activity_read: AtomicBool::new(false),
                shards,
                shutdown,
                metrics,
            }),
        };
        for (context, handle) in &spawner.inner.clusters {
            let rx = spawner.inner.restart_watch.get(context).map(watch::Sender::subscribe);
            if let Some(rx) = rx {
                tokio::spawn(spawner.inner.registry.clone().watch_cluster(context.clone(), handle.api.client().clone(), rx));
            }
        }
        spawner.probe_health().await;
        tokio::spawn(spawner.clone().health_loop());
        let on_shard = spawner.clone();
        tokio::spawn(async move {
            while let Some(context) = shard_changed.recv().await {
                on_shard.shard_changed(&context);
            }
        });
        tokio::spawn(reconcile::run(controller, spawner.clone(), touched, triggered));
        // A single replica takes every cluster's Lease in a moment; with others, this one
        // takes its share as they rebalance.
        let leases_by = tokio::time::Instant::now() + Duration::from_secs(3);
        while spawner.inner.shards.held().len() < spawner.inner.clusters.len() && tokio::time::Instant::now() < leases_by {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The store is ready once the first list is in it (not merely seen by the watcher).
        if tokio::time::timeout(HOME_SYNC_TIMEOUT, spawner.inner.store.wait_until_ready()).await.is_err() {
            tracing::warn!(context = %spawner.inner.home_context, "the records (UserServers) are not listed yet; serving what comes");
        }
        tokio::spawn(spawner.clone().gc_loop());
        if let Some(proxy) = spawner.inner.settings.proxy.clone() {
            tokio::spawn(spawner.clone().every(proxy.interval, move |s| {
                let proxy = proxy.clone();
                async move { s.sync_proxy(&proxy).await }
            }));
        }
        match spawner.inner.settings.activity.clone() {
            Some(source) => {
                tokio::spawn(spawner.clone().every(source.interval, move |s| {
                    let hub = source.hub.clone();
                    async move { s.read_activity(&hub).await }
                }));
            }
            // The proxy's routes are the activity source then (see `sync_proxy`).
            None if spawner.inner.settings.proxy.is_some() => {}
            None => {
                let idle: Vec<String> = spawner.profiles().iter().filter(|p| p.idle_timeout.is_some()).map(|p| p.slug.clone()).collect();
                if !idle.is_empty() {
                    tracing::warn!(profiles = %idle.join(", "), "no activity source ([activity] hub_api_url): idle_timeout is not applied (lifespans are)");
                }
            }
        }
        spawner.inner.registry.wait_settled(Duration::from_secs(30)).await;
        Ok(spawner)
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The home namespace (where the records are).
    pub fn home_namespace(&self) -> &str {
        self.inner.home.namespace()
    }

    /// The templates every spawn renders with (also what profile reloads are checked against).
    pub fn renderer(&self) -> &Renderer {
        &self.inner.renderer
    }

    pub fn profiles(&self) -> Arc<ProfileSet> {
        self.inner.profiles.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Swaps the profile set (hot reload); spawns in flight keep the profile they started with.
    pub fn set_profiles(&self, profiles: Arc<ProfileSet>) {
        *self.inner.profiles.write().unwrap_or_else(PoisonError::into_inner) = profiles;
    }

    /// The last health probe of every cluster.
    pub fn cluster_health(&self) -> Vec<Health> {
        self.inner.health.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    /// Clusters whose registry is not synced (for readiness).
    pub fn unsynced_clusters(&self) -> Vec<String> {
        self.inner.registry.unsynced()
    }

    fn health_of(&self, context: &str) -> Result<(), String> {
        let health = self.inner.health.read().unwrap_or_else(PoisonError::into_inner);
        match health.get(context) {
            Some(h) if h.healthy => Ok(()),
            Some(h) => Err(h.cause.clone().unwrap_or_else(|| "unhealthy".into())),
            None => Err("not in the kubeconfig".into()),
        }
    }

    /// Why a cluster's Pods cannot be known right now (`None`: they can).
    fn cluster_cause(&self, context: &str) -> Option<String> {
        if let Err(cause) = self.health_of(context) {
            return Some(cause);
        }
        (!self.inner.registry.is_synced(context)).then(|| "its watch is not synced yet".to_string())
    }

    async fn probe_health(&self) {
        let results = self.inner.fleet.health().await;
        let mut came_back = Vec::new();
        {
            let mut health = self.inner.health.write().unwrap_or_else(PoisonError::into_inner);
            for h in results {
                let was_healthy = health.get(&h.context).map(|old| old.healthy);
                if !h.healthy {
                    self.inner.registry.mark_unreachable(&h.context, h.cause.as_deref().unwrap_or("unhealthy"));
                } else if was_healthy == Some(false) {
                    came_back.push(h.context.clone());
                }
                if was_healthy != Some(h.healthy) {
                    // Its servers are looked at again: Unknown, or back.
                    for name in self.records_on(&h.context) {
                        let _ = self.inner.trigger.send(name);
                    }
                }
                health.insert(h.context.clone(), h);
            }
        }
        for context in came_back {
            tracing::info!(cluster = %context, "cluster reachable again; re-listing");
            if let Some(tx) = self.inner.restart_watch.get(&context) {
                tx.send_modify(|n| *n += 1);
            }
        }
    }

    /// This replica took or lost a cluster's Lease: a lost cluster's tasks here are handed
    /// over (the new holder carries them on from the status); its records are looked at again.
    fn shard_changed(&self, context: &str) {
        self.inner.metrics.lease_held(context, self.inner.shards.holds(context));
        let names = self.records_on(context);
        if !self.inner.shards.holds(context) {
            let ops = lock(&self.inner.ops);
            for name in &names {
                if let Some(op) = ops.get(name).filter(|op| op.kind == OpKind::Spawn) {
                    op.handed_over.store(true, Ordering::Release);
                    op.cancel.cancel();
                }
            }
        }
        for name in names {
            let _ = self.inner.trigger.send(name);
        }
    }

    /// The clusters whose Lease this replica holds.
    pub fn held_clusters(&self) -> BTreeSet<String> {
        self.inner.shards.held()
    }

    /// The names of the records placed on a cluster.
    fn records_on(&self, context: &str) -> Vec<String> {
        self.records().into_iter().filter(|us| us.status.as_ref().and_then(|s| s.cluster.as_deref()) == Some(context)).map(|us| us.name_any()).collect()
    }

    /// Publishes servers by state and cluster to the metrics.
    fn publish_metrics(&self) {
        let mut counts: BTreeMap<(String, InstanceState), usize> = BTreeMap::new();
        for c in self.inner.fleet.contexts() {
            for state in InstanceState::ALL {
                counts.insert((c.to_string(), state), 0);
            }
        }
        for v in self.list() {
            *counts.entry((v.cluster, v.state)).or_default() += 1;
        }
        for ((cluster, state), n) in counts {
            self.inner.metrics.set_instances(state.as_str(), &cluster, n);
        }
    }

    async fn health_loop(self) {
        let mut tick = tokio::time::interval(HEALTH_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.probe_health().await;
                    self.publish_metrics();
                }
                () = self.inner.shutdown.cancelled() => return,
            }
        }
    }

    /// Every record: the watch's, plus those this process wrote that it does not show yet.
    fn records(&self) -> Vec<Arc<UserServer>> {
        let mut records: HashMap<String, Arc<UserServer>> = self.inner.store.state().into_iter().map(|us| (us.name_any(), us)).collect();
        let mut accepted = lock(&self.inner.accepted);
        // Kept until the watch shows the same version or a newer one (or for a while).
        accepted.retain(|name, (at, us)| at.elapsed() < ACCEPTED_BRIDGE && records.get(name).is_none_or(|w| resource_version(w) < resource_version(us)));
        for (name, (_, us)) in accepted.iter() {
            records.insert(name.clone(), Arc::new(us.clone()));
        }
        records.into_values().collect()
    }

    /// One record: the newer of the watch's copy and the one this process last wrote.
    fn record(&self, name: &str) -> Option<Arc<UserServer>> {
        let watched = self.inner.store.get(&kube::runtime::reflector::ObjectRef::new(name).within(self.inner.home.namespace()));
        let accepted = lock(&self.inner.accepted).get(name).filter(|(at, _)| at.elapsed() < ACCEPTED_BRIDGE).map(|(_, us)| us.clone());
        match (watched, accepted) {
            (Some(w), Some(a)) if resource_version(&a) > resource_version(&w) => Some(Arc::new(a)),
            (Some(w), _) => Some(w),
            (None, a) => a.map(Arc::new),
        }
    }

    /// Remembers a record this process just wrote, until its watch shows it.
    fn remember(&self, us: &UserServer) {
        lock(&self.inner.accepted).insert(us.name_any(), (Instant::now(), us.clone()));
        let _ = self.inner.trigger.send(us.name_any());
    }

    /// What a user sees of a record right now.
    fn view(&self, us: &UserServer) -> Option<InstanceView> {
        let status = us.status.as_ref();
        let cluster = status.and_then(|s| s.cluster.as_deref());
        let cause = cluster.and_then(|c| self.cluster_cause(c));
        let pod = match (cluster, status.and_then(|s| s.pod_uid.as_deref()), us.uid()) {
            (Some(c), Some(pod_uid), Some(owner)) => self.inner.registry.pods_of(c, &owner).ok().and_then(|pods| pods.into_iter().find(|p| p.uid == pod_uid)),
            _ => None,
        };
        let mut view = decide::view_of(us, cause.as_deref(), pod.as_ref())?;
        view.url = view.url.map(|url| self.users_url(&url, us));
        Some(view)
    }

    /// Every server that is starting, running, stopping, failed or unknown.
    pub fn list(&self) -> Vec<InstanceView> {
        let mut views: Vec<InstanceView> = self.records().iter().filter_map(|us| self.view(us)).collect();
        views.sort_by(|a, b| (&a.user, &a.server).cmp(&(&b.user, &b.server)));
        views
    }

    /// The state of one server.
    pub fn status(&self, user: &str, server: &str) -> Result<InstanceView, SpawnError> {
        let name = InstanceKey::new(user, server).key().to_string();
        self.record(&name).and_then(|us| self.view(&us)).ok_or(SpawnError::NotFound)
    }

    /// The progress of the current (or last) spawn of a server: history first, then live.
    /// A spawn this process does not run (another replica's, or before a restart) is told
    /// from its record's status.
    pub fn progress(&self, user: &str, server: &str) -> Option<Progress> {
        let name = InstanceKey::new(user, server).key().to_string();
        if let Some(op) = lock(&self.inner.ops).get(&name).filter(|op| op.kind == OpKind::Spawn) {
            return Some(op.progress.clone());
        }
        if let Some((_, p)) = lock(&self.inner.finished).get(&name) {
            return Some(p.clone());
        }
        let us = self.record(&name)?;
        let view = self.view(&us)?;
        let progress = Progress::default();
        let status = us.status.clone().unwrap_or_default();
        match view.state {
            InstanceState::Running => progress.push(ProgressEvent::ready(view.url.as_deref().unwrap_or_default())),
            InstanceState::Failed => {
                progress.push(ProgressEvent::failed(Failure::new(view.failure.unwrap_or(FailureKind::Other), view.cause.unwrap_or_default())))
            }
            _ => {
                let (percent, message) = status.progress.map(|p| (p.percent, p.message)).unwrap_or((0, "Waiting".into()));
                progress.push(ProgressEvent::step(percent, message));
                tokio::spawn(self.clone().follow_status(name, progress.clone()));
            }
        }
        Some(progress)
    }

    /// Feeds a progress log from a record's status until the spawn ends (or the record goes).
    async fn follow_status(self, name: String, progress: Progress) {
        let deadline = Instant::now() + Duration::from_secs(3600);
        // Events of a spawn that runs here, forwarded so far (`attached`: one was seen).
        let (mut forwarded, mut attached) = (0, false);
        while !progress.is_finished() && Instant::now() < deadline {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
                () = self.inner.shutdown.cancelled() => return,
            }
            // A spawn that runs (or just ran) here: forward its log, every event.
            let here = lock(&self.inner.ops).get(&name).filter(|op| op.kind == OpKind::Spawn).map(|op| op.progress.clone());
            let here = here.or_else(|| attached.then(|| lock(&self.inner.finished).get(&name).map(|(_, p)| p.clone())).flatten());
            if let Some(p) = here {
                let history = p.history();
                for e in history.iter().skip(forwarded) {
                    // The step it starts from is the one this log started with.
                    if !attached && progress.last().is_some_and(|l| l.message == e.message) {
                        continue;
                    }
                    progress.push(e.clone());
                }
                (forwarded, attached) = (history.len(), true);
                continue;
            }
            let Some(us) = self.record(&name) else { return };
            let Some(view) = self.view(&us) else { return };
            match view.state {
                InstanceState::Running => progress.push(ProgressEvent::ready(view.url.as_deref().unwrap_or_default())),
                InstanceState::Failed => {
                    progress.push(ProgressEvent::failed(Failure::new(view.failure.unwrap_or(FailureKind::Other), view.cause.unwrap_or_default())))
                }
                _ => {
                    if let Some(p) = us.status.as_ref().and_then(|s| s.progress.clone()) {
                        if progress.last().is_none_or(|l| l.message != p.message) {
                            progress.push(ProgressEvent::step(p.percent, p.message));
                        }
                    }
                }
            }
        }
    }

    fn user_lock(&self, user: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = lock(&self.inner.user_locks);
        if locks.len() > MAX_REMEMBERED {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(user.to_string()).or_default().clone()
    }

    /// Starts a spawn and returns at once with the server (pending), or the one starting or
    /// running.
    pub async fn spawn(&self, req: SpawnRequest) -> Result<InstanceView, SpawnError> {
        let key = InstanceKey::new(&req.user, &req.server);
        let name = key.key().to_string();
        let profiles = self.profiles();
        let base = profiles.get(&req.profile).ok_or_else(|| SpawnError::UnknownProfile(req.profile.clone()))?;
        // Bad options are refused before anything else happens. Placement follows the profile
        // with the user's choices applied (a choice may pick the cluster).
        let profile = base.resolve_options(&req.options)?.profile;
        let parameters = hub_parameters::resolve(&base.hub_parameters, &req.hub_parameters)?;
        if let Some(prefix) = &req.url_prefix {
            let base_url = &self.inner.settings.hub_base_url;
            if !naming::is_own_url_prefix(prefix, base_url, &req.user, &req.server) {
                let expected = format!("{}{}", base_url.trim_end_matches('/'), naming::url_prefix(&req.user, &req.server));
                return Err(SpawnError::ForeignUrlPrefix { prefix: prefix.clone(), user: req.user.clone(), expected });
            }
        }
        let user_lock = self.user_lock(&req.user);
        let _one_start_per_user = user_lock.lock().await;
        let mut existing = self.record(&name);
        if let decide::Accept::AlreadyThere(view) = decide::accept(existing.as_deref(), existing.as_deref().and_then(|us| self.view(us)))? {
            if !self.env_changed(existing.as_deref(), &req.env).await? {
                return Ok(*view);
            }
            // A hub sends a new API token with every spawn of its own (after a hub restart, a
            // failed stop): the server holding the old one would fail its OAuth exchange, so
            // it is replaced, as kubespawner does.
            tracing::info!(key = %name, "the hub sent a new env for a server it already has: replacing it");
            self.stop(&req.user, &req.server, false).await?;
            existing = self.record(&name);
        }
        let records = self.records();
        let views: Vec<InstanceView> = records.iter().filter(|us| us.name_any() != name).filter_map(|us| self.view(us)).collect();
        let limit = self.inner.settings.max_servers_per_user;
        if views.iter().filter(|v| v.user == req.user && v.state != InstanceState::Failed).count() >= limit {
            return Err(SpawnError::TooManyServers { user: req.user.clone(), limit });
        }
        // Limit, load and placement in one step under the lock of the spawns being placed.
        let choice = {
            let mut placing = lock(&self.inner.placing);
            let max = self.inner.settings.max_concurrent_spawns;
            let pending = views.iter().filter(|v| v.state == InstanceState::Pending).count() + placing.values().sum::<usize>();
            if pending >= max {
                return Err(SpawnError::TooManySpawns { limit: max });
            }
            // The user's own spawns being placed are none: starts of one user take turns.
            let per_user = self.inner.settings.max_spawns_per_user;
            if views.iter().filter(|v| v.user == req.user && v.state == InstanceState::Pending).count() >= per_user {
                return Err(SpawnError::TooManySpawnsForUser { user: req.user.clone(), limit: per_user });
            }
            let mut load = self.inner.registry.pods_per_cluster();
            for v in views.iter().filter(|v| v.state == InstanceState::Pending) {
                *load.entry(v.cluster.clone()).or_default() += 1;
            }
            for (c, n) in placing.iter() {
                *load.entry(c.clone()).or_default() += n;
            }
            // A stopped server goes back where its storage is, while that cluster is healthy.
            let previous = existing.as_ref().and_then(|us| us.status.as_ref()).and_then(|s| s.cluster.clone());
            let choice = match previous.filter(|c| profile.contexts.contains(c) && self.health_of(c).is_ok()) {
                Some(context) => placement::Placed { context, reason: "where its storage is".into() },
                None => placement::choose(&profile.contexts, &profile.placement, |c| self.health_of(c), &load, key.key())?,
            };
            *placing.entry(choice.context.clone()).or_default() += 1;
            choice
        };
        let _placed = Placing { spawner: self, context: &choice.context };
        // Rendered now so bad input is refused before anything is written (the reconciler
        // renders again, with the record's UID, when it applies).
        let no_env = BTreeMap::new();
        let preview = SpawnInput {
            user: &req.user,
            server: &req.server,
            profile: base,
            options: &req.options,
            context: &choice.context,
            secret_env: &no_env,
            url_prefix: req.url_prefix.as_deref(),
            hub_parameters: &parameters,
            owner: None,
        };
        let status = self.pending_status(&preview, &choice)?;
        let _accepting = Accepting::new(self, &name);

        // The record, then its env Secret, then its placement: before any remote object.
        let env_secret = (!req.env.is_empty()).then(|| format!("{name}-env"));
        let written = match existing {
            None => {
                let mut us = UserServer::for_server(self.inner.home.namespace(), &req.user, &req.server, &profile.slug, req.options.clone());
                us.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
                us.spec.profile = req.profile.clone();
                us.spec.url_prefix = req.url_prefix.clone();
                us.spec.hub_parameters = hub_parameters::as_text(&parameters);
                us.spec.env_secret_ref = env_secret.clone().map(|name| SecretRef { name });
                self.inner.home.create(&us).await?
            }
            Some(old) => {
                let mut us = (*old).clone();
                us.spec.profile = req.profile.clone();
                us.spec.options = req.options.clone();
                us.spec.started = true;
                us.spec.url_prefix = req.url_prefix.clone();
                us.spec.hub_parameters = hub_parameters::as_text(&parameters);
                us.spec.env_secret_ref = env_secret.clone().map(|name| SecretRef { name });
                if let Some(a) = us.metadata.annotations.as_mut() {
                    a.remove(REMOVE_STORAGE);
                }
                us.status = None;
                self.inner.home.replace(&us).await?
            }
        };
        if let Some(secret) = &env_secret {
            self.inner.home.write_env_secret(&written, secret, &req.env).await?;
        }
        let placed = match self.inner.home.write_status(&name, &status, written.metadata.resource_version.as_deref()).await {
            Ok(placed) => placed,
            // The reconciler placed it first (a record applied with kubectl, or a race): that
            // placement stands.
            Err(e) if e.is_conflict() => {
                self.inner.home.servers().get(&name).await.map_err(|e| SpawnError::Home(HomeError::from_kube("reading the record", e)))?
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(key = %name, user = %req.user, server = %req.server, profile = %profile.slug, cluster = %choice.context, reason = %choice.reason, "spawn accepted");
        self.remember(&placed);
        // The last spawn's progress is history now: a stream opened from here on follows this
        // one (from the record until its spawn runs), never the old one's "ready".
        lock(&self.inner.finished).remove(&name);
        // Started here at once if this replica holds the cluster (the reconciler would start
        // it a moment later; only one runs); else its holder starts it.
        if self.inner.shards.holds(&choice.context) {
            self.start_spawn(&placed);
        }
        Ok(self.view(&placed).unwrap_or_else(|| InstanceView::named(&name, &req.user, &req.server, InstanceState::Pending)))
    }

    /// Whether a start request's env differs from what the record's server was given (an
    /// empty env, as every caller but a hub sends, changes nothing).
    async fn env_changed(&self, us: Option<&UserServer>, env: &BTreeMap<String, String>) -> Result<bool, SpawnError> {
        if env.is_empty() {
            return Ok(false);
        }
        let Some(secret) = us.and_then(|us| us.spec.env_secret_ref.as_ref()) else { return Ok(true) };
        match self.inner.home.read_env_secret(&secret.name).await {
            Ok(given) => Ok(&given != env),
            Err(e) if e.is_not_found() => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// The status of a record just placed on `choice` (`input` renders its server there,
    /// without secrets or owner): `Pending`, with its cluster, namespace, URL, why that
    /// cluster, and when (its start timeout runs from then).
    fn pending_status(&self, input: &SpawnInput<'_>, choice: &placement::Placed) -> Result<UserServerStatus, BundleError> {
        let bundle = self.inner.renderer.render(input)?;
        Ok(UserServerStatus {
            phase: Some(Phase::Pending),
            cluster: Some(choice.context.clone()),
            namespace: Some(bundle.namespace.clone()),
            url: Some(bundle.url.clone()),
            placement: Some(choice.reason.clone()),
            accepted_at: Some(Time(Timestamp::now())),
            progress: Some(crate::kube::userserver::Progress { percent: 5, message: format!("Placing on {}: {}", choice.context, choice.reason) }),
            ..Default::default()
        })
    }

    /// Whether this process is writing the record right now (the reconciler leaves it alone
    /// until then).
    fn is_accepting(&self, name: &str) -> bool {
        lock(&self.inner.accepting).contains(name)
    }

    /// Stops a server: its record says `started: false` (and, with `remove_storage`, that its
    /// storage goes too: then the record itself is deleted, "delete forever"); the reconciler
    /// deletes what runs. Waits until nothing runs, at most the profile's stop timeout; a
    /// caller that goes away changes nothing. Already stopped is success.
    pub async fn stop(&self, user: &str, server: &str, remove_storage: bool) -> Result<(), SpawnError> {
        let name = InstanceKey::new(user, server).key().to_string();
        let Some(us) = self.record(&name) else { return Ok(()) };
        let timeout = self.profiles().get(&us.spec.profile).map_or(DEFAULT_STOP_TIMEOUT, |p| p.stop_timeout);
        let mut patch = serde_json::json!({ "spec": { "started": false } });
        if remove_storage {
            patch["metadata"] = serde_json::json!({ "annotations": { REMOVE_STORAGE: "true" } });
        }
        if us.spec.started || remove_storage {
            let written = match self.inner.home.patch(&name, &patch).await {
                Ok(w) => w,
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            self.remember(&written);
        }
        if remove_storage {
            self.inner.home.delete(&name).await?;
            lock(&self.inner.accepted).remove(&name);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let gone = match self.record(&name) {
                None => true,
                Some(us) => !remove_storage && us.status.as_ref().and_then(|s| s.phase) == Some(Phase::Stopped),
            };
            if gone {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SpawnError::StopTimeout(timeout));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn cluster(&self, context: &str) -> Result<&ClusterHandle, ObjectError> {
        self.inner.clusters.get(context).ok_or_else(|| ObjectError {
            object: format!("cluster {context}"),
            message: "no client for this context".into(),
            code: None,
        })
    }

    /// Runs `work` every `interval` until shutdown.
    async fn every<F, Fut>(self, interval: Duration, work: F)
    where
        F: Fn(Spawner) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = tick.tick() => work(self.clone()).await,
                () = self.inner.shutdown.cancelled() => return,
            }
        }
    }

    /// Reads users' activity from the hub (see [`Spawner::write_activity`]).
    async fn read_activity(&self, hub: &crate::hub::HubApi) {
        match hub.last_activity().await {
            Ok(activity) => self.write_activity(&activity).await,
            Err(e) => {
                let cause = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
                tracing::warn!(error = %e, "reading activity from the hub failed{cause}; idle culling waits");
            }
        }
    }

    /// The URL a user is given for a server at `url` (its ingress URL): under the proxy's
    /// public URL when fleetspawn drives one.
    fn users_url(&self, url: &str, us: &UserServer) -> String {
        match &self.inner.settings.proxy {
            Some(proxy) => decide::public_url(&proxy.public_url, &self.url_prefix_of(us)),
            None => url.to_string(),
        }
    }

    fn url_prefix_of(&self, us: &UserServer) -> String {
        us.spec.url_prefix.clone().unwrap_or_else(|| naming::url_prefix(&us.spec.user, &us.spec.server))
    }

    /// Routes the proxy as the records say: a route for every running server (its path prefix
    /// to its ingress), none of this installation's for anything else; routes others added
    /// are left alone. Then the routes' activity goes into the records.
    async fn sync_proxy(&self, proxy: &ProxyTarget) {
        let owner = self.inner.home.namespace().to_string();
        let mut desired = BTreeMap::new();
        let mut servers = HashMap::new();
        for us in self.records() {
            let Some(status) = us.status.as_ref().filter(|s| s.phase == Some(Phase::Running)) else { continue };
            let Some((path, target)) = status.url.as_deref().and_then(|url| decide::proxy_route(url, &self.url_prefix_of(&us))) else { continue };
            servers.insert(path.clone(), (us.spec.user.clone(), us.spec.server.clone()));
            desired.insert(path, target);
        }
        let current = match proxy.api.routes().await {
            Ok(routes) => routes,
            Err(e) => {
                let cause = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
                tracing::warn!(error = %e, "reading the proxy's routes failed{cause}; routing waits");
                return;
            }
        };
        let (add, remove) = decide::route_changes(&desired, &current, &owner);
        for (path, target) in &add {
            match proxy.api.add(path, target, &owner).await {
                Ok(()) => tracing::info!(path = %path, target = %target, "proxy route added"),
                Err(e) => tracing::warn!(path = %path, error = %e, "adding a proxy route failed"),
            }
        }
        for path in &remove {
            match proxy.api.remove(path).await {
                Ok(()) => tracing::info!(path = %path, "stale proxy route removed"),
                Err(e) => tracing::warn!(path = %path, error = %e, "removing a proxy route failed"),
            }
        }
        let activity: crate::hub::Activity = current
            .iter()
            .filter(|(_, r)| r.owner.as_deref() == Some(owner.as_str()))
            .filter_map(|(path, r)| Some((servers.get(path)?.clone(), r.last_activity?)))
            .collect();
        self.write_activity(&activity).await;
    }

    /// Adds the route of a server that just became ready at `url`, so the user's first
    /// request finds it (the periodic sync would a moment later).
    async fn route_now(&self, us: &UserServer, url: &str) {
        let Some(proxy) = &self.inner.settings.proxy else { return };
        let Some((path, target)) = decide::proxy_route(url, &self.url_prefix_of(us)) else { return };
        if let Err(e) = proxy.api.add(&path, &target, self.inner.home.namespace()).await {
            tracing::warn!(path = %path, error = %e, "adding a proxy route failed; the next sync retries");
        }
    }

    /// Writes users' activity into the records of running servers on the clusters this
    /// replica holds (`status.lastActivity`, written only when it moved on).
    async fn write_activity(&self, activity: &crate::hub::Activity) {
        for us in self.records() {
            let Some(status) = &us.status else { continue };
            let held = status.cluster.as_deref().is_some_and(|c| self.inner.shards.holds(c));
            if !held || status.phase != Some(Phase::Running) {
                continue;
            }
            let Some(at) = activity.get(&(us.spec.user.clone(), us.spec.server.clone())) else { continue };
            if status.last_activity.as_ref().is_some_and(|known| known.0 >= *at) {
                continue;
            }
            match self.inner.home.patch_status(&us.name_any(), &serde_json::json!({ "lastActivity": Time(*at) })).await {
                Ok(written) => self.remember(&written),
                Err(e) => tracing::debug!(record = %us.name_any(), error = %e, "writing activity"),
            }
        }
        self.inner.activity_read.store(true, Ordering::Release);
    }

    async fn gc_loop(self) {
        let mut tick = tokio::time::interval(self.inner.settings.gc_interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    lock(&self.inner.finished).retain(|_, (at, _)| at.elapsed() < FINISHED_RETENTION);
                    self.collect_garbage().await;
                }
                () = self.inner.shutdown.cancelled() => return,
            }
        }
    }

    /// Deletes objects of this installation that no record owns (or that claim no owner),
    /// once older than the grace period, recording an Event for each. Claims (user data) and
    /// Namespaces are never collected, nor anything on a cluster whose watch is not synced or
    /// whose Lease this replica does not hold. The owners come from a fresh list of the records
    /// (never the cache, which may lag behind a spawn), taken after the objects were listed: a
    /// spawn writes its record (with its cluster) before it creates objects, so every object
    /// seen has its owner in that list, however long the pass took. Without that list, nothing
    /// is collected.
    pub async fn collect_garbage(&self) -> usize {
        let kinds: Vec<(String, String)> = lock(&self.inner.kinds).iter().cloned().collect();
        let home = self.inner.home.namespace().to_string();
        // This installation's objects, and objects that say fleetspawn manages them but
        // claim no installation (decoys, leftovers of old versions).
        let selectors = [format!("{}={home}", labels::HOME), format!("{},!{}", labels::MANAGED_SELECTOR, labels::HOME)];
        let mut candidates = Vec::new();
        for (context, cluster) in &self.inner.clusters {
            if !self.inner.registry.is_synced(context) || !self.inner.shards.holds(context) {
                continue;
            }
            for (api_version, kind) in &kinds {
                if matches!(kind.as_str(), "PersistentVolumeClaim" | "Namespace") {
                    continue;
                }
                for selector in &selectors {
                    match cluster.api.list_refs(api_version, kind, selector).await {
                        Ok(found) => candidates.extend(found.into_iter().map(|listed| (context, cluster, listed))),
                        Err(e) => tracing::debug!(cluster = %context, kind = %kind, error = %e, "garbage collection could not list"),
                    }
                }
            }
        }
        if candidates.is_empty() {
            return 0;
        }
        let records = match self.inner.home.servers().list(&kube::api::ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) => {
                tracing::debug!(error = %e, "garbage collection needs the records; skipped");
                return 0;
            }
        };
        let mut owners: HashMap<&str, HashSet<String>> = HashMap::new();
        for us in &records {
            if let (Some(context), Some(uid)) = (us.status.as_ref().and_then(|s| s.cluster.as_deref()), us.uid()) {
                owners.entry(context).or_default().insert(uid);
            }
        }
        let none = HashSet::new();
        let mut collected = 0;
        for (context, cluster, listed) in candidates {
            let owners_here = owners.get(context.as_str()).unwrap_or(&none);
            if !decide::is_garbage(listed.owner.as_deref(), listed.created, owners_here, self.inner.settings.gc_grace, Timestamp::now()) {
                continue;
            }
            if matches!(cluster.api.delete(&listed.r, listed.uid.as_deref()).await, Ok(true)) {
                collected += 1;
                let r = &listed.r;
                tracing::info!(cluster = %context, object = %r, owner = ?listed.owner, "garbage-collected");
                let note = format!("Deleted {r}: no UserServer of {home} owns it");
                self.audit(context, &spawn::reference_of(r), kube::runtime::events::EventType::Normal, "GarbageCollected", "Delete", note).await;
            }
        }
        collected
    }

    /// Stops the background loops and waits for tasks in flight to reach a consistent point
    /// (the reconciler picks up the rest after a restart), at most `timeout`.
    /// The cluster Leases are released (briefly waited for), so another replica takes over at
    /// once rather than after they expire.
    pub async fn shutdown(&self, timeout: Duration) {
        self.inner.shutdown.cancel();
        let ops: Vec<Arc<Op>> = lock(&self.inner.ops).values().cloned().collect();
        let _ = tokio::time::timeout(timeout, futures::future::join_all(ops.iter().map(|op| op.finished()))).await;
        let released_by = tokio::time::Instant::now() + Duration::from_secs(2);
        while !self.inner.shards.held().is_empty() && tokio::time::Instant::now() < released_by {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A record being written by a start request: the reconciler leaves it alone until dropped,
/// then looks at it.
struct Accepting<'a> {
    spawner: &'a Spawner,
    name: String,
}

impl<'a> Accepting<'a> {
    fn new(spawner: &'a Spawner, name: &str) -> Self {
        lock(&spawner.inner.accepting).insert(name.to_string());
        Accepting { spawner, name: name.to_string() }
    }
}

impl Drop for Accepting<'_> {
    fn drop(&mut self) {
        lock(&self.spawner.inner.accepting).remove(&self.name);
        let _ = self.spawner.inner.trigger.send(self.name.clone());
    }
}

/// A spawn being placed: counted in [`Inner::placing`] until dropped.
struct Placing<'a> {
    spawner: &'a Spawner,
    context: &'a str,
}

impl Drop for Placing<'_> {
    fn drop(&mut self) {
        let mut placing = lock(&self.spawner.inner.placing);
        if let Some(n) = placing.get_mut(self.context) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                placing.remove(self.context);
            }
        }
    }
}

/// A record's resourceVersion as a number, to tell the newer of two copies (0 if not numeric).
fn resource_version(us: &UserServer) -> u64 {
    us.metadata.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}
