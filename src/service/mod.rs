//! The spawner: starts, follows and stops per-user servers across clusters.
//!
//! A spawn is: pick a cluster (placement), render the bundle (pure), apply it tier by tier with
//! server-side apply, then follow the Pod and its Kubernetes Events through watches until it is
//! Ready (or fails, fast, with the cause). Every step is pushed to the spawn's [`Progress`]. At
//! most one operation runs per instance key; a stop cancels a spawn in flight; failures roll
//! back what the spawn created.
//!
//! The registry (watches over every cluster) is the source of truth for what runs; the
//! spawner only keeps the operations in flight.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures::{future::join_all, StreamExt};
use k8s_openapi::api::core::v1::{Event as KubeEvent, ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use kube::runtime::events::{Event as AuditEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::Api;
use serde_json::Value;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

mod decide;
pub mod progress;

use fleetspawn_core::bundle::{Bundle, BundleError, Renderer, SpawnInput, Tier};
use fleetspawn_core::instance::{InstanceState, InstanceView, SpawnEnd};
use fleetspawn_core::labels;
use fleetspawn_core::lifecycle::{judge_pod, progress_for_event, Failure, FailureKind, PodVerdict, ProgressEvent};
use fleetspawn_core::naming::{self, InstanceKey};
use fleetspawn_core::placement;
use fleetspawn_core::profiles::{OptionError, Profile, ProfileSet, DEFAULT_STOP_TIMEOUT};

use crate::config::Config;
use crate::kube::fleet::{Fleet, Health};
use crate::kube::objects::{ClusterApi, Listed, ObjectError, ObjectRef};
use crate::metrics::Metrics;
use crate::registry::{Registry, Vanished};
use progress::Progress;

/// Kinds fleetspawn's own templates create, swept by stop and garbage collection.
const DEFAULT_KINDS: &[(&str, &str)] = &[
    ("v1", "Pod"),
    ("v1", "Service"),
    ("networking.k8s.io/v1", "Ingress"),
    ("v1", "Secret"),
    ("v1", "ServiceAccount"),
    ("v1", "ConfigMap"),
    ("v1", "PersistentVolumeClaim"),
];

/// How long a Namespace applied by this process is trusted to still exist.
const NAMESPACE_FRESHNESS: Duration = Duration::from_secs(300);

/// How long the progress of a finished spawn stays available (late subscribers, the cause of
/// a failure).
const FINISHED_RETENTION: Duration = Duration::from_secs(3600);

/// Most entries kept of finished spawns' progress and of applied Namespaces: memory stays
/// bounded however many users come and go (the oldest entries go first).
const MAX_REMEMBERED: usize = 10_000;

/// How often cluster health is probed; a failed probe marks the cluster's instances unknown.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);

/// Limits and timings of a spawner.
#[derive(Clone, Debug)]
pub struct SpawnerSettings {
    /// Spawns in flight at once, across all users; more are refused.
    pub max_concurrent_spawns: usize,
    /// Servers one user may have (named servers included).
    pub max_servers_per_user: usize,
    /// Age after which objects of an instance that no longer exists are collected.
    pub gc_grace: Duration,
    /// How often garbage collection runs.
    pub gc_interval: Duration,
    /// The hub's base URL, under which a requested URL prefix must be the user's own.
    pub hub_base_url: String,
}

/// How often garbage collection runs.
pub const GC_INTERVAL: Duration = Duration::from_secs(30);

impl From<&Config> for SpawnerSettings {
    fn from(config: &Config) -> Self {
        SpawnerSettings {
            max_concurrent_spawns: config.max_concurrent_spawns,
            max_servers_per_user: config.max_servers_per_user,
            gc_grace: config.gc_grace,
            gc_interval: GC_INTERVAL,
            hub_base_url: config.hub_base_url.clone(),
        }
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
    /// Put into the server's Secret (e.g. a hub's API token), never into the Pod spec.
    pub env: BTreeMap<String, String>,
    /// URL path prefix to serve under (a hub's base_url); default from `naming::url_prefix`.
    pub url_prefix: Option<String>,
}

/// Why a spawn or stop was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("unknown profile {0:?}")]
    UnknownProfile(String),
    #[error(transparent)]
    BadOption(#[from] OptionError),
    #[error("too many spawns in flight (limit {limit}); try again shortly")]
    TooManySpawns { limit: usize },
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
    #[error("the operation was interrupted: {0}")]
    Interrupted(String),
    #[error("url_prefix {prefix:?} is not {user:?}'s own path (expected {expected:?})")]
    ForeignUrlPrefix { prefix: String, user: String, expected: String },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum OpKind {
    Spawn,
    Stop,
}

/// One operation in flight on one instance key.
struct Op {
    kind: OpKind,
    cancel: CancellationToken,
    progress: Progress,
    view: Mutex<InstanceView>,
    done: watch::Sender<bool>,
}

impl Op {
    fn new(kind: OpKind, view: InstanceView) -> Op {
        Op { kind, cancel: CancellationToken::new(), progress: Progress::default(), view: Mutex::new(view), done: watch::channel(false).0 }
    }

    /// What a caller asking to spawn this key is told while this operation holds it.
    fn answer(&self) -> Result<InstanceView, SpawnError> {
        match self.kind {
            OpKind::Spawn => Ok(self.view()),
            OpKind::Stop => Err(SpawnError::Busy),
        }
    }

    fn view(&self) -> InstanceView {
        self.view.lock().unwrap_or_else(PoisonError::into_inner).clone()
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
    profiles: RwLock<Arc<ProfileSet>>,
    renderer: Renderer,
    settings: SpawnerSettings,
    ops: Mutex<HashMap<String, Arc<Op>>>,
    /// Finished spawns' progress, so a late subscriber still gets the history.
    /// Kept for [`FINISHED_RETENTION`], then dropped by the garbage collection loop.
    finished: Mutex<HashMap<String, (Instant, Progress)>>,
    slots: Arc<Semaphore>,
    health: RwLock<BTreeMap<String, Health>>,
    /// Kinds seen in bundles, swept by stop and garbage collection.
    kinds: Mutex<BTreeSet<(String, String)>>,
    /// (context, namespace) → when this process last applied that Namespace.
    namespaces: Mutex<HashMap<(String, String), Instant>>,
    restart_watch: BTreeMap<String, watch::Sender<u64>>,
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
    /// Starts the registry watches, the health monitor, the drift handler and garbage
    /// collection, and returns once every cluster's initial list is in (or it is unreachable).
    pub async fn start(fleet: Fleet, profiles: ProfileSet, renderer: Renderer, settings: SpawnerSettings, metrics: Metrics) -> Spawner {
        let contexts: Vec<String> = fleet.contexts().iter().map(|c| c.to_string()).collect();
        let (registry, vanished) = Registry::new(contexts.iter().map(String::as_str), metrics.clone());
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
        let kinds = DEFAULT_KINDS.iter().map(|(a, k)| ((*a).to_string(), (*k).to_string())).collect();
        let spawner = Spawner {
            inner: Arc::new(Inner {
                clusters,
                fleet,
                registry,
                profiles: RwLock::new(Arc::new(profiles)),
                renderer,
                slots: Arc::new(Semaphore::new(settings.max_concurrent_spawns)),
                settings,
                ops: Mutex::default(),
                finished: Mutex::default(),
                health: RwLock::default(),
                kinds: Mutex::new(kinds),
                namespaces: Mutex::default(),
                restart_watch,
                shutdown: CancellationToken::new(),
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
        tokio::spawn(spawner.clone().drift_loop(vanished));
        tokio::spawn(spawner.clone().gc_loop());
        spawner.inner.registry.wait_settled(Duration::from_secs(30)).await;
        spawner
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
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

    /// Publishes instances by state and cluster, and watch restarts, to the metrics.
    fn publish_metrics(&self) {
        let mut counts: BTreeMap<(String, InstanceState), usize> = BTreeMap::new();
        for c in self.inner.fleet.contexts() {
            for state in [InstanceState::Pending, InstanceState::Running, InstanceState::Stopping, InstanceState::Failed, InstanceState::Unknown] {
                counts.insert((c.to_string(), state), 0);
            }
        }
        for i in self.inner.registry.list() {
            *counts.entry((i.cluster, i.state)).or_default() += 1;
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

    /// Every instance: the registry's, plus spawns in flight it does not show yet.
    pub fn list(&self) -> Vec<InstanceView> {
        let mut views: Vec<InstanceView> = self.inner.registry.list().into_iter().map(InstanceView::from).collect();
        let ops: Vec<Arc<Op>> = lock(&self.inner.ops).values().cloned().collect();
        for op in ops {
            let v = op.view();
            match views.iter_mut().find(|x| x.key == v.key) {
                Some(existing) if op.kind == OpKind::Stop => existing.state = InstanceState::Stopping,
                Some(_) => {}
                None if op.kind == OpKind::Spawn => views.push(v),
                None => {}
            }
        }
        views
    }

    /// The state of one server: in flight, or as the registry has it.
    pub fn status(&self, user: &str, server: &str) -> Result<InstanceView, SpawnError> {
        let key = InstanceKey::new(user, server);
        let op = lock(&self.inner.ops).get(key.key()).cloned();
        let registered = self.inner.registry.get(key.key());
        if let Some(op) = op {
            let view = match (op.kind, registered) {
                (OpKind::Stop, Ok(Some(i))) => InstanceView { state: InstanceState::Stopping, ..i.into() },
                (OpKind::Spawn, Ok(Some(i))) if i.state == InstanceState::Running => i.into(),
                (OpKind::Spawn, Ok(Some(i))) => InstanceView { started_at: i.started_at, ..op.view() },
                _ => op.view(),
            };
            return Ok(view);
        }
        match registered {
            Ok(Some(i)) if i.state == InstanceState::Stopping => {
                // A failed spawn being rolled back: the user wants the cause, not "stopping".
                let last = self.progress(user, server).and_then(|p| p.last());
                Ok(InstanceView::from(i).after(SpawnEnd::of(last.as_ref())))
            }
            Ok(Some(i)) => Ok(i.into()),
            Ok(None) => Err(SpawnError::NotFound),
            // Not on any synced cluster; the unsynced ones may have it.
            Err(unsynced) => Ok(InstanceView {
                cluster: unsynced.join(","),
                cause: Some(format!("cluster(s) not reachable or not synced: {}", unsynced.join(", "))),
                ..InstanceView::named(key.key(), user, server, InstanceState::Unknown)
            }),
        }
    }

    /// The progress of the current (or last) spawn of a server: history first, then live.
    pub fn progress(&self, user: &str, server: &str) -> Option<Progress> {
        let key = InstanceKey::new(user, server);
        if let Some(op) = lock(&self.inner.ops).get(key.key()).filter(|op| op.kind == OpKind::Spawn) {
            return Some(op.progress.clone());
        }
        lock(&self.inner.finished).get(key.key()).map(|(_, p)| p.clone())
    }

    /// Starts a spawn and returns at once with the instance (pending), or the one in flight,
    /// or the running one.
    pub async fn spawn(&self, req: SpawnRequest) -> Result<InstanceView, SpawnError> {
        let key = InstanceKey::new(&req.user, &req.server);
        let profiles = self.profiles();
        let base = profiles.get(&req.profile).ok_or_else(|| SpawnError::UnknownProfile(req.profile.clone()))?;
        // Bad options are refused before anything else happens. Placement and timeouts follow
        // the profile with the user's choices applied (a choice may pick the cluster); the
        // bundle is rendered from the base profile, which applies the same choices itself.
        let profile = base.resolve_options(&req.options)?.profile;
        if let Some(prefix) = &req.url_prefix {
            let base_url = &self.inner.settings.hub_base_url;
            if !naming::is_own_url_prefix(prefix, base_url, &req.user, &req.server) {
                let expected = format!("{}{}", base_url.trim_end_matches('/'), naming::url_prefix(&req.user, &req.server));
                return Err(SpawnError::ForeignUrlPrefix { prefix: prefix.clone(), user: req.user.clone(), expected });
            }
        }

        if let Some(op) = lock(&self.inner.ops).get(key.key()) {
            return op.answer();
        }
        let previous = match decide::spawn_start(self.inner.registry.get(key.key()), &profile.contexts)? {
            decide::SpawnStart::AlreadyThere(view) => return Ok(view),
            decide::SpawnStart::Fresh => None,
            decide::SpawnStart::AfterFailure(previous) => Some(previous),
        };
        let limit = self.inner.settings.max_servers_per_user;
        if self.servers_of(&req.user, key.key()) >= limit {
            return Err(SpawnError::TooManyServers { user: req.user.clone(), limit });
        }
        let permit =
            self.inner.slots.clone().try_acquire_owned().map_err(|_| SpawnError::TooManySpawns { limit: self.inner.settings.max_concurrent_spawns })?;
        let choice = placement::choose(&profile.contexts, &profile.placement, |c| self.health_of(c), &self.load(), key.key())?;
        let input = SpawnInput {
            user: &req.user,
            server: &req.server,
            profile: base,
            options: &req.options,
            context: &choice.context,
            secret_env: &req.env,
            url_prefix: req.url_prefix.as_deref(),
        };
        let bundle = self.inner.renderer.render(&input)?;
        let view = InstanceView {
            profile: profile.slug.clone(),
            cluster: choice.context.clone(),
            url: Some(bundle.url.clone()),
            placement: Some(choice.reason.clone()),
            ..InstanceView::named(key.key(), &req.user, &req.server, InstanceState::Pending)
        };
        let op = Arc::new(Op::new(OpKind::Spawn, view.clone()));
        if let Some(theirs) = self.claim(key.key(), &op, Some((&req.user, limit))) {
            return theirs;
        }
        tracing::info!(key = %key.key(), user = %req.user, server = %req.server, profile = %profile.slug, cluster = %choice.context, reason = %choice.reason, "spawn started");
        op.progress.push(ProgressEvent::step(5, format!("Placing on {}: {}", choice.context, choice.reason)));
        let spawner = self.clone();
        self.inner.metrics.spawns_in_flight_inc();
        // Everything after this point runs in the task: the caller may go away.
        tokio::spawn(async move {
            if let Some(i) = previous {
                // The previous attempt failed and kept its objects: clear them first.
                op.progress.push(ProgressEvent::step(7, "Removing the previous failed attempt"));
                spawner.delete_instance_objects(&i.cluster, key.key(), false).await.ok();
            }
            spawner.run_spawn(&op, &profile, bundle, &choice).await;
            spawner.inner.metrics.spawns_in_flight_dec();
            drop(permit);
            spawner.finish(key.key(), &op);
        });
        Ok(view)
    }

    /// Takes the key for `op`, unless another operation holds it: then that one's answer. With
    /// `limit` (user, most servers), the user's server count is checked in the same step, so
    /// parallel starts of one user's servers never get past the limit together.
    fn claim(&self, key: &str, op: &Arc<Op>, limit: Option<(&str, usize)>) -> Option<Result<InstanceView, SpawnError>> {
        let mut ops = lock(&self.inner.ops);
        if let Some(other) = ops.get(key) {
            // Lost a race with another caller: theirs wins.
            return Some(other.answer());
        }
        if let Some((user, limit)) = limit {
            if self.servers_among(&ops, user, key) >= limit {
                return Some(Err(SpawnError::TooManyServers { user: user.to_string(), limit }));
            }
        }
        ops.insert(key.to_string(), op.clone());
        if op.kind == OpKind::Spawn {
            lock(&self.inner.finished).remove(key);
        }
        None
    }

    /// Whether this process applied the Namespace manifest `m` on `context` within
    /// [`NAMESPACE_FRESHNESS`].
    fn namespace_is_fresh(&self, context: &str, m: &Value) -> bool {
        let name = m.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let applied = lock(&self.inner.namespaces);
        applied.get(&(context.to_string(), name.to_string())).is_some_and(|t| t.elapsed() < NAMESPACE_FRESHNESS)
    }

    fn remember_namespace(&self, context: &str, name: &str) {
        let mut namespaces = lock(&self.inner.namespaces);
        namespaces.insert((context.to_string(), name.to_string()), Instant::now());
        decide::keep_newest(&mut namespaces, MAX_REMEMBERED, |at| *at);
    }

    /// After a failed apply in a namespace: apply its Namespace again next time (it may have
    /// been deleted behind our back).
    fn forget_namespace(&self, context: &str, name: &str) {
        lock(&self.inner.namespaces).remove(&(context.to_string(), name.to_string()));
    }

    /// Instances per cluster, counting spawns in flight the registry does not show yet.
    fn load(&self) -> BTreeMap<String, usize> {
        let mut load = self.inner.registry.instances_per_cluster();
        for op in lock(&self.inner.ops).values().filter(|op| op.kind == OpKind::Spawn) {
            *load.entry(op.view().cluster).or_default() += 1;
        }
        load
    }

    /// Servers a user has (live or being spawned), other than `except`.
    fn servers_of(&self, user: &str, except: &str) -> usize {
        self.servers_among(&lock(&self.inner.ops), user, except)
    }

    /// [`Self::servers_of`] with the operations map already locked.
    fn servers_among(&self, ops: &HashMap<String, Arc<Op>>, user: &str, except: &str) -> usize {
        let live: BTreeSet<String> = self.inner.registry.keys_of_user(user).into_iter().filter(|k| k != except).collect();
        let in_flight = ops
            .values()
            .filter(|op| op.kind == OpKind::Spawn)
            .map(|op| op.view())
            .filter(|v| v.user == user && v.key != except && !live.contains(&v.key))
            .count();
        live.len() + in_flight
    }

    fn finish(&self, key: &str, op: &Arc<Op>) {
        {
            let mut ops = lock(&self.inner.ops);
            if ops.get(key).is_some_and(|o| Arc::ptr_eq(o, op)) {
                ops.remove(key);
            }
        }
        if op.kind == OpKind::Spawn {
            let mut finished = lock(&self.inner.finished);
            finished.insert(key.to_string(), (Instant::now(), op.progress.clone()));
            decide::keep_newest(&mut finished, MAX_REMEMBERED, |(at, _)| *at);
        }
        op.done.send_replace(true);
    }

    async fn run_spawn(&self, op: &Op, profile: &Profile, mut bundle: Bundle, choice: &placement::Placed) {
        let started = Instant::now();
        // Claims that exist before this spawn hold a user's data: a rollback keeps them.
        let kept_claims = self.existing_claims(&choice.context, &bundle).await;
        let outcome = tokio::select! {
            outcome = self.apply_and_wait(op, profile, &mut bundle, choice) => outcome,
            () = op.cancel.cancelled() => Err(SpawnFailure::incomplete(FailureKind::Cancelled, "the spawn was cancelled")),
        };
        let seconds = started.elapsed().as_secs_f64();
        self.inner.metrics.spawn_finished(&profile.slug, &choice.context, seconds, outcome.is_ok());
        if let Err(SpawnFailure { api_error: true, .. }) = &outcome {
            self.inner.metrics.kube_api_error(&choice.context);
        }
        match outcome {
            Ok(url) => {
                tracing::info!(key = %bundle.key.key(), seconds = started.elapsed().as_secs_f64(), "spawn ready");
                lock(&op.view).state = InstanceState::Running;
                op.progress.push(ProgressEvent::ready(&url));
            }
            Err(failure) => {
                tracing::warn!(key = %bundle.key.key(), cause = %failure.failure.message, "spawn failed");
                {
                    let mut view = lock(&op.view);
                    view.state = InstanceState::Failed;
                    view.cause = Some(failure.failure.message.clone());
                    view.failure = Some(failure.failure.kind);
                }
                if failure.leftovers == Leftovers::Remove || !profile.keep_on_failure {
                    op.progress.push(ProgressEvent::step(95, "Removing what this spawn created"));
                    if let Err(e) = self.rollback(&choice.context, &bundle, &kept_claims).await {
                        tracing::warn!(key = %bundle.key.key(), error = %e, "rollback incomplete; garbage collection will finish it");
                    }
                }
                op.progress.push(ProgressEvent::failed(failure.failure));
            }
        }
    }

    fn cluster(&self, context: &str) -> Result<&ClusterHandle, ObjectError> {
        self.inner.clusters.get(context).ok_or_else(|| ObjectError {
            object: format!("cluster {context}"),
            message: "no client for this context".into(),
            code: None,
        })
    }

    async fn apply_and_wait(&self, op: &Op, profile: &Profile, bundle: &mut Bundle, choice: &placement::Placed) -> Result<String, SpawnFailure> {
        let cluster = self.cluster(&choice.context).map_err(SpawnFailure::from)?;
        let pod_ref = self.annotate_pod(bundle, &choice.reason)?;
        let namespace = pod_ref.namespace.clone().unwrap_or_else(|| bundle.namespace.clone());

        // Watches first, so no Event of the new Pod is missed.
        let client = cluster.api.client().clone();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let events: Api<KubeEvent> = Api::namespaced(client, &namespace);
        let pod_watch = watcher::watcher(pods, watcher::Config::default().fields(&format!("metadata.name={}", pod_ref.name))).boxed();
        let event_selector = format!("involvedObject.kind=Pod,involvedObject.name={}", pod_ref.name);
        let event_watch = watcher::watcher(events, watcher::Config::default().fields(&event_selector)).boxed();

        let pod_uid = self.apply_tiers(op, cluster, &choice.context, bundle, &namespace).await?;
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod_ref.name.clone()),
            namespace: Some(namespace.clone()),
            uid: Some(pod_uid.clone()),
            ..Default::default()
        };
        let view = op.view();
        let note = format!(
            "Spawning server {:?} of user {:?} with profile {} on cluster {} ({})",
            view.server, view.user, profile.slug, choice.context, choice.reason
        );
        self.audit(&choice.context, &reference, EventType::Normal, "Spawning", "Spawn", note).await;
        op.progress.push(ProgressEvent::step(45, "Waiting for the server's pod to be scheduled"));

        let deadline = tokio::time::Instant::now() + profile.start_timeout;
        let mut follow = Follow { op, pod_uid, pod_watch, event_watch, seen_events: BTreeSet::new(), started_seen: false };
        if let Err(failure) = follow.until_ready(profile, deadline).await {
            if failure.leftovers == Leftovers::AsProfileSays {
                self.audit(&choice.context, &reference, EventType::Warning, "SpawnFailed", "Spawn", failure.failure.message.clone()).await;
            }
            return Err(failure);
        }
        follow.drain_events().await;
        op.progress.push(ProgressEvent::step(90, "The server's pod is ready"));
        if profile.ready_check_url {
            self.wait_url(op, &bundle.url, deadline).await?;
        }
        self.audit(&choice.context, &reference, EventType::Normal, "Ready", "Spawn", format!("Server ready at {}", bundle.url)).await;
        Ok(bundle.url.clone())
    }

    /// Records the bundle's kinds (swept by stop and GC) and puts the bundle's inventory and
    /// the placement decision on its Pod; returns the Pod's reference.
    fn annotate_pod(&self, bundle: &mut Bundle, placement_reason: &str) -> Result<ObjectRef, SpawnFailure> {
        let refs: Vec<ObjectRef> = bundle.objects.iter().map(|o| ObjectRef::of(&o.object)).collect::<Result<_, _>>().map_err(SpawnFailure::from)?;
        lock(&self.inner.kinds).extend(refs.iter().map(|r| (r.api_version.clone(), r.kind.clone())));
        let inventory = serde_json::to_string(&refs).unwrap_or_default();
        let mut pod_ref = None;
        for (o, r) in bundle.objects.iter_mut().zip(&refs) {
            if o.tier == Tier::Workload && r.kind == "Pod" {
                if let Some(ann) = o.object.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
                    ann.insert(labels::INVENTORY.into(), Value::String(inventory.clone()));
                    ann.insert(labels::PLACEMENT.into(), Value::String(placement_reason.to_string()));
                }
                pod_ref = Some(r.clone());
            }
        }
        pod_ref.ok_or_else(|| SpawnFailure::incomplete(FailureKind::Other, "the bundle has no Pod"))
    }

    /// Applies the bundle tier by tier, in dependency order, the objects of one tier
    /// concurrently; returns the Pod's uid. A Namespace this process applied on this cluster
    /// recently is not applied again: it is shared by many servers, and skipping it saves one
    /// round trip per spawn (docs/benchmarks.md).
    async fn apply_tiers(&self, op: &Op, cluster: &ClusterHandle, context: &str, bundle: &Bundle, namespace: &str) -> Result<String, SpawnFailure> {
        let tiers: BTreeSet<Tier> = bundle.objects.iter().map(|o| o.tier).collect();
        let total = bundle.objects.len();
        let mut applied = 0usize;
        let mut pod_obj: Option<DynamicObject> = None;
        for tier in tiers {
            let batch: Vec<&Value> = bundle
                .objects
                .iter()
                .filter(|o| o.tier == tier)
                .map(|o| &o.object)
                .filter(|m| tier != Tier::Namespace || !self.namespace_is_fresh(context, m))
                .collect();
            for result in join_all(batch.iter().map(|m| cluster.api.apply(m))).await {
                let obj = result.inspect_err(|_| self.forget_namespace(context, namespace))?;
                if tier == Tier::Namespace {
                    self.remember_namespace(context, obj.metadata.name.as_deref().unwrap_or_default());
                }
                if obj.types.as_ref().is_some_and(|t| t.kind == "Pod") {
                    pod_obj = Some(obj);
                }
            }
            applied += bundle.objects.iter().filter(|o| o.tier == tier).count();
            let pct = decide::apply_progress(applied, total);
            op.progress.push(ProgressEvent::step(pct, format!("Applied {applied}/{total} objects ({tier:?})")));
        }
        Ok(pod_obj.and_then(|p| p.metadata.uid).unwrap_or_default())
    }

    /// Waits until the user's URL answers through the ingress with the server's own answer
    /// (see [`decide::is_server_answer`]: a 404 is the ingress saying it has no route).
    async fn wait_url(&self, op: &Op, url: &str, deadline: tokio::time::Instant) -> Result<(), SpawnFailure> {
        op.progress.push(ProgressEvent::step(92, format!("Waiting for {url} to answer")));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| SpawnFailure::server(Failure::new(FailureKind::Other, e.to_string())))?;
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            match client.get(url).send().await {
                Ok(r) if decide::is_server_answer(r.status().as_u16()) => return Ok(()),
                Ok(r) => last = format!("HTTP {}", r.status()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(SpawnFailure::server(Failure::new(FailureKind::Timeout, format!("the server's URL {url} did not answer: {last}"))))
    }

    /// Records a Kubernetes Event (events.k8s.io) on an object: the audit trail `kubectl
    /// describe` shows. Failures to record are logged, never fatal.
    async fn audit(&self, context: &str, reference: &ObjectReference, type_: EventType, reason: &str, action: &str, note: String) {
        let Ok(cluster) = self.cluster(context) else { return };
        let event = AuditEvent { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        if let Err(e) = cluster.recorder.publish(&event, reference).await {
            tracing::debug!(cluster = context, error = %e, "recording an Event failed");
        }
    }

    /// Deletes a failed spawn's objects in reverse tier order; never a Namespace, and never a
    /// claim that existed before the spawn (`kept_claims`).
    async fn rollback(&self, context: &str, bundle: &Bundle, kept_claims: &[ObjectRef]) -> Result<(), ObjectError> {
        let cluster = self.cluster(context)?;
        let tiers: BTreeSet<Tier> = bundle.objects.iter().map(|o| o.tier).collect();
        for tier in tiers.into_iter().rev() {
            let refs: Vec<ObjectRef> = bundle
                .objects
                .iter()
                .filter(|o| o.tier == tier)
                .filter_map(|o| ObjectRef::of(&o.object).ok())
                .filter(|r| r.kind != "Namespace" && !kept_claims.contains(r))
                .collect();
            for result in join_all(refs.iter().map(|r| cluster.api.delete(r))).await {
                result?;
            }
        }
        Ok(())
    }

    /// The bundle's PersistentVolumeClaims that already exist on the cluster. When in doubt
    /// (the check itself fails), a claim counts as existing: data is never deleted by guess.
    async fn existing_claims(&self, context: &str, bundle: &Bundle) -> Vec<ObjectRef> {
        let claims: Vec<ObjectRef> =
            bundle.objects.iter().filter_map(|o| ObjectRef::of(&o.object).ok()).filter(|r| r.kind == "PersistentVolumeClaim").collect();
        let Ok(cluster) = self.cluster(context) else { return claims };
        let mut existing = Vec::new();
        for r in claims {
            if !matches!(cluster.api.exists(&r).await, Ok(false)) {
                existing.push(r);
            }
        }
        existing
    }

    /// Stops a server: cancels a spawn in flight, deletes its objects (its PVC too only with
    /// `remove_storage`), and waits until its Pod is gone. Already stopped is success.
    ///
    /// The stop runs to its end in a task of its own: a caller that goes away (a cancelled
    /// request, a client timeout) neither interrupts it nor leaves the key taken.
    pub async fn stop(&self, user: &str, server: &str, remove_storage: bool) -> Result<(), SpawnError> {
        let (this, user, server) = (self.clone(), user.to_string(), server.to_string());
        match tokio::spawn(async move { this.stop_to_end(&user, &server, remove_storage).await }).await {
            Ok(result) => result,
            Err(join) => Err(SpawnError::Interrupted(join.to_string())),
        }
    }

    async fn stop_to_end(&self, user: &str, server: &str, remove_storage: bool) -> Result<(), SpawnError> {
        let key = InstanceKey::new(user, server);
        let key = key.key().to_string();
        let op = Arc::new(Op::new(OpKind::Stop, InstanceView::named(&key, user, server, InstanceState::Stopping)));
        // Take the key: cancel a spawn in flight and wait for its rollback; join a stop in flight.
        let stop_timeout = loop {
            let previous = {
                let mut ops = lock(&self.inner.ops);
                match ops.get(&key).cloned() {
                    None => {
                        ops.insert(key.clone(), op.clone());
                        None
                    }
                    Some(other) => Some(other),
                }
            };
            match previous {
                None => break self.stop_timeout_for(&key),
                Some(other) if other.kind == OpKind::Stop => {
                    other.finished().await;
                    return Ok(());
                }
                Some(other) => {
                    other.cancel.cancel();
                    other.finished().await;
                }
            }
        };
        let result = tokio::time::timeout(stop_timeout, self.stop_objects(&key, remove_storage)).await;
        self.finish(&key, &op);
        match result {
            Ok(r) => r,
            Err(_) => Err(SpawnError::StopTimeout(stop_timeout)),
        }
    }

    fn stop_timeout_for(&self, key: &str) -> Duration {
        let profile = self.inner.registry.get(key).ok().flatten().map(|i| i.profile);
        profile.and_then(|slug| self.profiles().get(&slug).map(|p| p.stop_timeout)).unwrap_or(DEFAULT_STOP_TIMEOUT)
    }

    async fn stop_objects(&self, key: &str, remove_storage: bool) -> Result<(), SpawnError> {
        let reachable = self.inner.clusters.keys().filter(|c| self.health_of(c).is_ok()).cloned();
        let clusters = match decide::stop_targets(&self.inner.registry.get(key), reachable) {
            decide::StopTargets::Clusters(clusters) => clusters,
            decide::StopTargets::Unavailable(context) => return Err(SpawnError::ClusterUnavailable { context }),
        };
        for context in clusters {
            self.delete_instance_objects(&context, key, remove_storage).await?;
        }
        Ok(())
    }

    /// Deletes every object labelled with the instance key on one cluster (the Pod's
    /// inventory's kinds and every kind fleetspawn has applied), then waits for the Pod to go.
    async fn delete_instance_objects(&self, context: &str, key: &str, remove_storage: bool) -> Result<(), SpawnError> {
        let cluster = self.cluster(context)?;
        let selector = format!("{}={key}", labels::INSTANCE);
        let kinds: Vec<(String, String)> = lock(&self.inner.kinds).iter().cloned().collect();
        let mut refs = Vec::new();
        for (api_version, kind) in &kinds {
            if kind == "Namespace" || (kind == "PersistentVolumeClaim" && !remove_storage) {
                continue;
            }
            match cluster.api.list_refs(api_version, kind, &selector).await {
                Ok(found) => refs.extend(found.into_iter().map(|l| l.r)),
                Err(e) if e.code == Some(404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Extra kinds only the Pod's inventory knows (a profile changed since this spawn). The
        // inventory is an annotation anyone who may create a Pod can write: it contributes
        // kinds to look for, never names to delete; only objects labelled with this
        // instance's key are ever deleted.
        let mut extra_kinds = BTreeSet::new();
        for r in refs.iter().filter(|r| r.kind == "Pod") {
            let pods: Api<Pod> = Api::namespaced(cluster.api.client().clone(), r.namespace.as_deref().unwrap_or("default"));
            if let Ok(Some(pod)) = pods.get_opt(&r.name).await {
                let listed =
                    pod.metadata.annotations.as_ref().and_then(|a| a.get(labels::INVENTORY)).and_then(|s| serde_json::from_str::<Vec<ObjectRef>>(s).ok());
                extra_kinds.extend(listed.into_iter().flatten().map(|e| (e.api_version, e.kind)).filter(|k| !kinds.contains(k)));
            }
        }
        for (api_version, kind) in &extra_kinds {
            if kind == "Namespace" || (kind == "PersistentVolumeClaim" && !remove_storage) {
                continue;
            }
            if let Ok(found) = cluster.api.list_refs(api_version, kind, &selector).await {
                refs.extend(found.into_iter().map(|l| l.r));
            }
        }
        let (pods, others): (Vec<ObjectRef>, Vec<ObjectRef>) = refs.into_iter().partition(|r| r.kind == "Pod");
        for result in join_all(pods.iter().chain(others.iter()).map(|r| cluster.api.delete(r))).await {
            result?;
        }
        // A Pod stuck Terminating (a finalizer, a dead node) must not hold up whoever waits
        // here (a stop, the drift handler, reaping) for good: wait at most the stop timeout.
        let wait = self.stop_timeout_for(key);
        for pod in &pods {
            let api: Api<Pod> = Api::namespaced(cluster.api.client().clone(), pod.namespace.as_deref().unwrap_or("default"));
            let gone = kube::runtime::wait::await_condition(api, &pod.name, |p: Option<&Pod>| p.is_none());
            match tokio::time::timeout(wait, gone).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(ObjectError { object: pod.to_string(), message: e.to_string(), code: None }.into()),
                Err(_) => return Err(SpawnError::StopTimeout(wait)),
            }
        }
        Ok(())
    }

    /// Cleans up after Pods that vanished without a stop (deleted out of band, evicted...).
    async fn drift_loop(self, mut vanished: tokio::sync::mpsc::UnboundedReceiver<Vanished>) {
        while let Some(v) = vanished.recv().await {
            if lock(&self.inner.ops).contains_key(&v.key) {
                continue;
            }
            if matches!(self.inner.registry.get(&v.key), Ok(Some(_))) {
                continue; // a new Pod of the same instance is already live
            }
            tracing::info!(cluster = %v.cluster, key = %v.key, "pod vanished out of band; removing its leftovers");
            if let Err(e) = self.delete_instance_objects(&v.cluster, &v.key, false).await {
                tracing::warn!(cluster = %v.cluster, key = %v.key, error = %e, "drift cleanup incomplete; garbage collection will retry");
            }
        }
    }

    async fn gc_loop(self) {
        let mut tick = tokio::time::interval(self.inner.settings.gc_interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    lock(&self.inner.finished).retain(|_, (at, _)| at.elapsed() < FINISHED_RETENTION);
                    self.reap_orphaned_spawns().await;
                    self.collect_garbage().await;
                }
                () = self.inner.shutdown.cancelled() => return,
            }
        }
    }

    /// Instances no operation follows (their spawner died mid-spawn, or the daemon restarted)
    /// either complete by themselves (the registry sees them turn running) or are removed
    /// here: failed ones (unless their profile keeps failures) and pending ones older than
    /// their profile's start timeout.
    pub async fn reap_orphaned_spawns(&self) {
        let in_flight: HashSet<String> = lock(&self.inner.ops).keys().cloned().collect();
        let orphans = decide::orphans_to_reap(self.inner.registry.list(), &in_flight, &self.profiles(), Timestamp::now());
        for i in orphans {
            tracing::info!(cluster = %i.cluster, key = %i.key, state = i.state.as_str(), "removing a spawn no operation follows");
            if let Err(e) = self.delete_instance_objects(&i.cluster, &i.key, false).await {
                tracing::warn!(cluster = %i.cluster, key = %i.key, error = %e, "could not remove an orphaned spawn");
            }
        }
    }

    /// Deletes objects labelled for an instance that has no Pod and no operation in flight,
    /// once older than the grace period, recording an Event for each.
    pub async fn collect_garbage(&self) -> usize {
        let kinds: Vec<(String, String)> = lock(&self.inner.kinds).iter().cloned().collect();
        let mut collected = 0;
        for (context, cluster) in &self.inner.clusters {
            if !self.inner.registry.is_synced(context) {
                continue;
            }
            let live: BTreeSet<String> = self.inner.registry.list().into_iter().filter(|i| &i.cluster == context).map(|i| i.key).collect();
            for (api_version, kind) in &kinds {
                if matches!(kind.as_str(), "Pod" | "PersistentVolumeClaim" | "Namespace") {
                    continue;
                }
                let Ok(found) = cluster.api.list_refs(api_version, kind, labels::MANAGED_SELECTOR).await else { continue };
                for Listed { r, created, instance } in found {
                    let Some(key) = instance else { continue };
                    let in_flight: HashSet<String> = lock(&self.inner.ops).keys().cloned().collect();
                    if !decide::is_garbage(&key, created, &live, &in_flight, self.inner.settings.gc_grace, Timestamp::now()) {
                        continue;
                    }
                    if matches!(cluster.api.delete(&r).await, Ok(true)) {
                        collected += 1;
                        tracing::info!(cluster = %context, object = %r, key, "garbage-collected");
                        let reference = ObjectReference {
                            api_version: Some(r.api_version.clone()),
                            kind: Some(r.kind.clone()),
                            name: Some(r.name.clone()),
                            namespace: r.namespace.clone(),
                            ..Default::default()
                        };
                        let note = format!("Deleted {r}: its instance {key} no longer exists");
                        self.audit(context, &reference, EventType::Normal, "GarbageCollected", "Delete", note).await;
                    }
                }
            }
        }
        collected
    }

    /// Stops the background loops and waits for spawns in flight to reach a consistent point
    /// (ready, or failed and rolled back), at most `timeout`.
    pub async fn shutdown(&self, timeout: Duration) {
        self.inner.shutdown.cancel();
        let ops: Vec<Arc<Op>> = lock(&self.inner.ops).values().cloned().collect();
        let _ = tokio::time::timeout(timeout, join_all(ops.iter().map(|op| op.finished()))).await;
    }
}

/// Following one spawn's Pod and its Events until it is ready (or will not be).
struct Follow<'a, P, E> {
    op: &'a Op,
    pod_uid: String,
    pod_watch: P,
    event_watch: E,
    seen_events: BTreeSet<String>,
    started_seen: bool,
}

type WatchItem<T> = Result<watcher::Event<T>, watcher::Error>;

impl<P, E> Follow<'_, P, E>
where
    P: futures::Stream<Item = WatchItem<Pod>> + Unpin,
    E: futures::Stream<Item = WatchItem<KubeEvent>> + Unpin,
{
    /// Waits for the Pod to be Ready: fails at once on a fatal verdict, after the profile's
    /// scheduling grace while it cannot be scheduled, and at `deadline`.
    async fn until_ready(&mut self, profile: &Profile, deadline: tokio::time::Instant) -> Result<(), SpawnFailure> {
        let mut unschedulable_since: Option<tokio::time::Instant> = None;
        let mut last_unschedulable = String::new();
        loop {
            let grace_end = unschedulable_since.map(|t| t + profile.scheduling_grace);
            let wake = grace_end.map_or(deadline, |g| g.min(deadline));
            tokio::select! {
                ev = self.pod_watch.next() => {
                    let Some(pod) = self.pod_of(ev).await? else { continue };
                    match judge_pod(&pod) {
                        PodVerdict::Ready => return Ok(()),
                        PodVerdict::Failed(failure) => return Err(SpawnFailure::server(failure)),
                        PodVerdict::Unschedulable(message) => {
                            unschedulable_since.get_or_insert_with(tokio::time::Instant::now);
                            if message != last_unschedulable {
                                self.op.progress.push(ProgressEvent::step(45, format!("Cannot be scheduled yet: {message}")));
                                last_unschedulable = message;
                            }
                        }
                        PodVerdict::Starting => unschedulable_since = None,
                        PodVerdict::Terminating => return Err(SpawnFailure::incomplete(FailureKind::Cancelled, "the server's pod is being deleted")),
                    }
                }
                ev = self.event_watch.next() => {
                    if let Some(Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e))) = ev {
                        self.report(&e);
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    if grace_end.is_some_and(|g| g <= tokio::time::Instant::now()) {
                        let cause = format!("the server could not be scheduled within {}s: {last_unschedulable}", profile.scheduling_grace.as_secs());
                        return Err(SpawnFailure::server(Failure::new(FailureKind::Unschedulable, cause)));
                    }
                    let cause = format!("the server did not become ready within {}s", profile.start_timeout.as_secs());
                    return Err(SpawnFailure::server(Failure::new(FailureKind::Timeout, cause)));
                }
            }
        }
    }

    /// The spawn's Pod from a watch item; `None` for items to skip (another Pod's, list
    /// markers, a watch error being retried).
    async fn pod_of(&mut self, ev: Option<WatchItem<Pod>>) -> Result<Option<Pod>, SpawnFailure> {
        match ev {
            Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => {
                Ok(Some(p).filter(|p| p.metadata.uid.as_deref() == Some(self.pod_uid.as_str())))
            }
            Some(Ok(watcher::Event::Delete(_))) => Err(SpawnFailure::incomplete(FailureKind::Cancelled, "the server's pod was deleted while starting")),
            Some(Ok(_)) => Ok(None),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "pod watch error; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(None)
            }
            None => Err(SpawnFailure::incomplete(FailureKind::ClusterUnreachable, "lost the watch on the server's pod")),
        }
    }

    fn report(&mut self, e: &KubeEvent) {
        self.started_seen |= report_event(&self.op.progress, e, &self.pod_uid, &mut self.seen_events);
    }

    /// The kubelet's last Events may trail the Pod's status: let them in, briefly, so the
    /// progress tells the whole story in order.
    async fn drain_events(&mut self) {
        let drain_until = tokio::time::Instant::now() + Duration::from_millis(500);
        while !self.started_seen {
            match tokio::time::timeout_at(drain_until, self.event_watch.next()).await {
                Ok(Some(Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e)))) => self.report(&e),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// Pushes a Kubernetes Event of the spawn's Pod to its progress, once per Event; fleetspawn's
/// own audit Events are not progress. Returns whether it was the container's `Started`.
fn report_event(progress: &Progress, e: &KubeEvent, pod_uid: &str, seen: &mut BTreeSet<String>) -> bool {
    let ours = e.reporting_component.as_deref() == Some("fleetspawn");
    let id = e.metadata.uid.clone().unwrap_or_default();
    if e.involved_object.uid.as_deref() != Some(pod_uid) || ours || !seen.insert(id) {
        return false;
    }
    let current = progress.last().map_or(0, |l| l.progress);
    progress.push(progress_for_event(e, current));
    e.reason.as_deref() == Some("Started")
}

/// What happens to a failed spawn's objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leftovers {
    /// Removed whatever the profile says: the spawn is incomplete or was cancelled.
    Remove,
    /// Kept when the profile keeps failures (`keep_on_failure`), for debugging.
    AsProfileSays,
}

/// Why a spawn failed, and what to do with what it created; `api_error` marks failures of
/// the Kubernetes API itself (counted in metrics).
struct SpawnFailure {
    failure: Failure,
    leftovers: Leftovers,
    api_error: bool,
}

impl SpawnFailure {
    /// A spawn that could not complete: its objects go.
    fn incomplete(kind: FailureKind, cause: impl Into<String>) -> Self {
        SpawnFailure { failure: Failure::new(kind, cause), leftovers: Leftovers::Remove, api_error: false }
    }

    /// A server that will not start by itself: its objects stay if the profile keeps failures.
    fn server(failure: Failure) -> Self {
        SpawnFailure { failure, leftovers: Leftovers::AsProfileSays, api_error: false }
    }
}

impl From<ObjectError> for SpawnFailure {
    fn from(e: ObjectError) -> Self {
        let kind = decide::object_failure_kind(e.code, &e.message);
        SpawnFailure { failure: Failure::new(kind, format!("applying {}: {}", e.object, e.message)), leftovers: Leftovers::Remove, api_error: true }
    }
}
