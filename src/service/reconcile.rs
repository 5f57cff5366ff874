//! The reconcile loop: kube-runtime's controller over the records (`UserServer`s of the home
//! namespace), triggered by every change of a record, by every change of a Pod of its (what
//! the registry reports) and periodically. Each run decides one step with
//! [`decide::next_step`] and carries it out; long steps start a task ([`super::spawn`]) and
//! return, so the loop never waits on a spawn. A failed run is retried with a short backoff.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Resource as _, ResourceExt as _};
use tokio::sync::mpsc;

use super::decide::{self, Busy, Facts, Seen, Step};
use super::{lock, OpKind, SpawnError, Spawner};
use crate::kube::home::{Home, HomeError};
use crate::kube::userserver::{
    set_condition, ConditionStatus, FailureStatus, Phase, UserServer, UserServerStatus, CONDITION_PROGRESSING, CONDITION_READY, CONDITION_STALLED, FINALIZER,
};
use fleetspawn_core::bundle::SpawnInput;

/// Backoff of a failed reconcile.
const RETRY: Duration = Duration::from_secs(2);

/// Why one reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// The controller over the home namespace's records (its store is the records' cache, ready
/// once the first list is in it).
pub fn controller(home: &Home) -> Controller<UserServer> {
    let (reader, writer) = reflector::store();
    let events = watcher::watcher(home.servers().clone(), watcher::Config::default()).default_backoff();
    Controller::for_stream(reflector::reflector(writer, events).applied_objects(), reader)
}

/// Runs the controller until shutdown. `touched` are instance keys whose Pods changed (from
/// the registry), `triggered` record names to look at now (from the service).
pub async fn run(controller: Controller<UserServer>, spawner: Spawner, touched: mpsc::UnboundedReceiver<String>, triggered: mpsc::UnboundedReceiver<String>) {
    let namespace = spawner.inner.home.namespace().to_string();
    let names = futures::stream::select(receiver_stream(touched), receiver_stream(triggered));
    let refs = names.map(move |name| ObjectRef::new(&name).within(&namespace));
    let shutdown = spawner.inner.shutdown.clone();
    let context = Arc::new(spawner);
    controller
        .with_config(kube::runtime::controller::Config::default().concurrency(64))
        .reconcile_on(refs)
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile");
            }
        })
        .await;
}

/// A channel's receiver as a stream.
fn receiver_stream<T: Send + 'static>(mut rx: mpsc::UnboundedReceiver<T>) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn error_policy(us: Arc<UserServer>, error: &ReconcileError, _: Arc<Spawner>) -> Action {
    match error {
        ReconcileError::Home(e) if e.is_conflict() => {}
        _ => tracing::warn!(record = %us.name_any(), error = %error, "reconcile failed; retrying"),
    }
    Action::requeue(RETRY)
}

async fn reconcile(us: Arc<UserServer>, spawner: Arc<Spawner>) -> Result<Action, ReconcileError> {
    // The newest copy this process knows (its own write may be ahead of the watch).
    let us = spawner.record(&us.name_any()).unwrap_or(us);
    let step = spawner.next_step(&us);
    tracing::debug!(record = %us.name_any(), ?step, "reconcile");
    spawner.carry_out(&us, step).await?;
    Ok(Action::requeue(spawner.inner.settings.resync))
}

impl Spawner {
    /// What the reconciler knows of a record now, and its decision.
    fn next_step(&self, us: &UserServer) -> Step {
        let name = us.name_any();
        let status = us.status.as_ref();
        if self.is_accepting(&name) {
            return Step::Nothing;
        }
        // Only the holder of a cluster's Lease acts on the records placed there.
        if let Some(cluster) = status.and_then(|s| s.cluster.as_deref()) {
            if !self.inner.shards.holds(cluster) {
                return Step::Nothing;
            }
        }
        let seen = status.and_then(|s| s.cluster.as_deref()).map(|c| match self.cluster_cause(c) {
            Some(cause) => Seen::Unknown(cause),
            None => match self.inner.registry.pods_of(c, &us.uid().unwrap_or_default()) {
                Ok(pods) => Seen::Pods(pods),
                Err(not) => Seen::Unknown(format!("{:?}", not.0)),
            },
        });
        let busy = lock(&self.inner.ops).get(&name).map(|op| match op.kind {
            OpKind::Spawn => Busy::Spawning,
            OpKind::Stop => Busy::Stopping,
        });
        let profile = self.profiles().get(&us.spec.profile).cloned();
        let bound = |asked: Result<Option<Duration>, String>, limit: Option<Duration>| match (asked.ok().flatten(), limit) {
            (Some(a), Some(l)) => Some(a.min(l)),
            (a, l) => a.or(l),
        };
        let lifespan = bound(us.spec.lifespan_duration(), profile.as_ref().and_then(|p| p.max_age));
        // Idleness is known only from an activity source, and only once it has been read.
        let activity_known = self.inner.activity_read.load(std::sync::atomic::Ordering::Acquire);
        let idle_timeout = bound(us.spec.idle_timeout_duration(), profile.as_ref().and_then(|p| p.idle_timeout)).filter(|_| activity_known);
        decide::next_step(&Facts { us, seen, busy, lifespan, idle_timeout, now: Timestamp::now() })
    }

    async fn carry_out(&self, us: &UserServer, step: Step) -> Result<(), ReconcileError> {
        let name = us.name_any();
        let home = &self.inner.home;
        let status = us.status.clone().unwrap_or_default();
        match step {
            Step::Nothing => {}
            Step::AddFinalizer => {
                let mut finalizers = us.finalizers().to_vec();
                finalizers.push(FINALIZER.to_string());
                let patch = serde_json::json!({ "metadata": { "finalizers": finalizers, "resourceVersion": us.resource_version() } });
                self.remember(&home.patch(&name, &patch).await?);
            }
            Step::Place => self.place(us).await?,
            Step::Spawn => self.start_spawn(us),
            Step::CancelSpawn => {
                if let Some(op) = lock(&self.inner.ops).get(&name).filter(|op| op.kind == OpKind::Spawn) {
                    op.cancel.cancel();
                }
            }
            Step::Stop => self.start_stop(us, None),
            Step::Stopped => self.stopped(us, None).await?,
            Step::Restart => {
                // Back where it ran (its storage is there) while that cluster is healthy.
                let cluster = status.cluster.clone().filter(|c| self.cluster_cause(c).is_none());
                let placement = cluster.as_ref().map(|_| "where its storage is".to_string());
                let accepted_at = Some(Time(Timestamp::now()));
                let restarted = UserServerStatus {
                    phase: Some(Phase::Pending),
                    namespace: status.namespace.clone().filter(|_| cluster.is_some()),
                    cluster,
                    placement,
                    accepted_at,
                    ..Default::default()
                };
                self.write_status(us, restarted, true).await?;
            }
            Step::Running { ready, cause } => {
                let mut next = UserServerStatus { phase: Some(Phase::Running), ..status.clone() };
                let (reason, message) = if ready { ("PodReady", String::new()) } else { ("PodNotReady", cause.unwrap_or_default()) };
                set_condition(
                    &mut next.conditions,
                    CONDITION_READY,
                    ConditionStatus::from(ready),
                    reason,
                    &message,
                    us.metadata.generation,
                    Time(Timestamp::now()),
                );
                if next != status {
                    self.write_status(us, next, false).await?;
                }
            }
            Step::Lost => {
                let message = "the server's pod was deleted or evicted".to_string();
                tracing::info!(record = %name, "{message}; removing its leftovers");
                self.record_event(us, EventType::Warning, "Lost", "Observe", message.clone()).await;
                self.start_stop(us, Some(FailureStatus { reason: crate::kube::userserver::FailureReason::Other, message }));
            }
            Step::Unknown(cause) => {
                let mut next = UserServerStatus { phase: Some(Phase::Unknown), ..status.clone() };
                let message = format!("cluster {} cannot be reached: {cause}", status.cluster.clone().unwrap_or_default());
                set_condition(
                    &mut next.conditions,
                    CONDITION_READY,
                    ConditionStatus::Unknown,
                    "ClusterUnreachable",
                    &message,
                    us.metadata.generation,
                    Time(Timestamp::now()),
                );
                if next != status {
                    self.write_status(us, next, false).await?;
                }
            }
            Step::Cull(why) => {
                let reason = crate::kube::userserver::FailureReason::from(why);
                let message = match why {
                    decide::Cull::MaxAge => "the server reached its lifespan".to_string(),
                    decide::Cull::Idle => "the server was idle for longer than its idle timeout".to_string(),
                };
                tracing::info!(record = %name, ?reason, "culling: {message}");
                self.inner.metrics.culled(&why.name());
                let next = UserServerStatus { failure: Some(FailureStatus { reason, message: message.clone() }), ..status.clone() };
                self.write_status(us, next, false).await?;
                self.remember(&home.patch(&name, &serde_json::json!({ "spec": { "started": false } })).await?);
                self.record_event(us, EventType::Normal, "Culled", "Stop", message).await;
            }
        }
        Ok(())
    }

    /// Places a record nobody placed (one applied with kubectl): the same pure placement a
    /// start request uses, written only if the record did not change since it was read.
    async fn place(&self, us: &UserServer) -> Result<(), ReconcileError> {
        let name = us.name_any();
        let profiles = self.profiles();
        let Some(profile) = profiles.get(&us.spec.profile) else {
            let failure = FailureStatus { reason: crate::kube::userserver::FailureReason::Other, message: format!("unknown profile {:?}", us.spec.profile) };
            return self.fail(us, failure).await;
        };
        let resolved = match profile.resolve_options(&us.spec.options) {
            Ok(r) => r.profile,
            Err(e) => return self.fail(us, FailureStatus { reason: crate::kube::userserver::FailureReason::Other, message: e.to_string() }).await,
        };
        let load = self.inner.registry.pods_per_cluster();
        let choice = match fleetspawn_core::placement::choose(&resolved.contexts, &resolved.placement, |c| self.health_of(c), &load, &name) {
            Ok(c) => c,
            Err(e) => return Err(SpawnError::from(e).into()),
        };
        let spec = &us.spec;
        let parameters = match fleetspawn_core::profiles::hub_parameters::resolve_text(&profile.hub_parameters, &spec.hub_parameters) {
            Ok(values) => values,
            Err(e) => return self.fail(us, FailureStatus { reason: crate::kube::userserver::FailureReason::Other, message: e.to_string() }).await,
        };
        let no_env = BTreeMap::new();
        let preview = SpawnInput {
            user: &spec.user,
            server: &spec.server,
            profile,
            options: &spec.options,
            context: &choice.context,
            secret_env: &no_env,
            url_prefix: spec.url_prefix.as_deref(),
            hub_parameters: &parameters,
            owner: None,
        };
        let status = match self.pending_status(&preview, &choice) {
            Ok(status) => status,
            Err(e) => return self.fail(us, FailureStatus { reason: crate::kube::userserver::FailureReason::Other, message: e.to_string() }).await,
        };
        self.write_status(us, status, true).await
    }

    /// The record failed before anything was applied.
    async fn fail(&self, us: &UserServer, failure: FailureStatus) -> Result<(), ReconcileError> {
        let mut status = UserServerStatus { phase: Some(Phase::Failed), failure: Some(failure.clone()), ..us.status.clone().unwrap_or_default() };
        set_condition(
            &mut status.conditions,
            CONDITION_STALLED,
            ConditionStatus::True,
            "Failed",
            &failure.message,
            us.metadata.generation,
            Time(Timestamp::now()),
        );
        self.write_status(us, status, false).await?;
        self.record_event(us, EventType::Warning, "Failed", "Spawn", failure.message).await;
        Ok(())
    }

    /// Writes a record's status (`guarded`: only if the record is still as read) and
    /// remembers the result. The Progressing condition follows the phase.
    pub(super) async fn write_status(&self, us: &UserServer, mut status: UserServerStatus, guarded: bool) -> Result<(), ReconcileError> {
        let progressing = matches!(status.phase, Some(Phase::Pending | Phase::Starting | Phase::Stopping));
        let reason = status.phase.map_or("Unknown".to_string(), |p| format!("{p:?}"));
        set_condition(
            &mut status.conditions,
            CONDITION_PROGRESSING,
            ConditionStatus::from(progressing),
            &reason,
            "",
            us.metadata.generation,
            Time(Timestamp::now()),
        );
        status.observed_generation = us.metadata.generation;
        let rv = if guarded { us.metadata.resource_version.as_deref() } else { None };
        let written = self.inner.home.write_status(&us.name_any(), &status, rv).await?;
        self.remember(&written);
        Ok(())
    }

    /// Records a Kubernetes Event on a record (the audit trail `kubectl describe userserver`
    /// shows). Failures to record are logged, never fatal.
    pub(super) async fn record_event(&self, us: &UserServer, type_: EventType, reason: &str, action: &str, note: String) {
        let event = kube::runtime::events::Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        if let Err(e) = self.inner.home_recorder.publish(&event, &us.object_ref(&())).await {
            tracing::debug!(error = %e, "recording an Event on a UserServer failed");
        }
    }
}
