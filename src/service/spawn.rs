//! The long steps of the reconciler, each in a task of its own: a spawn (render the bundle
//! with the record's UID on every object, apply it tier by tier, follow the Pod and its
//! Events until it is Ready or fails, fast, with the cause; roll back a failure) and a stop
//! (delete what the record owns on its cluster, wait for its Pod to go). Both go on from the
//! record's status after a restart: applying is idempotent (server-side apply) and the start
//! timeout runs from when the spawn was accepted. Every step is pushed to the spawn's
//! [`Progress`] and the milestones are written to the status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetspawn_core::bundle::{Bundle, Owner, SpawnInput, Tier};
use fleetspawn_core::labels;
use fleetspawn_core::lifecycle::{judge_pod, progress_for_event, Failure, FailureKind, PodVerdict, ProgressEvent};
use fleetspawn_core::profiles::{Profile, DEFAULT_STOP_TIMEOUT};
use futures::{future::join_all, StreamExt};
use k8s_openapi::api::core::v1::{Event as KubeEvent, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use kube::runtime::events::{Event as AuditEvent, EventType};
use kube::runtime::watcher;
use kube::{Api, ResourceExt as _};
use serde_json::Value;

use super::progress::Progress;
use super::reconcile::ReconcileError;
use super::{decide, lock, ClusterHandle, Op, OpKind, SpawnError, Spawner, MAX_REMEMBERED};
use crate::kube::objects::{ObjectError, ObjectRef};
use crate::kube::userserver::{
    set_condition, ConditionStatus, FailureReason, FailureStatus, InventoryEntry, Phase, UserServer, UserServerStatus, CONDITION_READY, CONDITION_STALLED,
    FINALIZER, REMOVE_STORAGE,
};

/// How long a Namespace applied by this process is trusted to still exist.
const NAMESPACE_FRESHNESS: Duration = Duration::from_secs(300);

/// How long a spawn waits for its record's env Secret (written just after the record).
const ENV_SECRET_WAIT: Duration = Duration::from_secs(10);

/// A reconcile is asked for this long after a stop that did not finish.
const STOP_RETRY: Duration = Duration::from_secs(2);

/// The Event reference of a remote object.
pub(super) fn reference_of(r: &ObjectRef) -> ObjectReference {
    ObjectReference {
        api_version: Some(r.api_version.clone()),
        kind: Some(r.kind.clone()),
        name: Some(r.name.clone()),
        namespace: r.namespace.clone(),
        ..Default::default()
    }
}

impl Spawner {
    /// Registers a task of `kind` for record `name`, unless one runs.
    fn claim(&self, name: &str, kind: OpKind) -> Option<Arc<Op>> {
        let mut ops = lock(&self.inner.ops);
        if ops.contains_key(name) {
            return None;
        }
        let op = Arc::new(Op::new(kind));
        ops.insert(name.to_string(), op.clone());
        if kind == OpKind::Spawn {
            lock(&self.inner.finished).remove(name);
        }
        Some(op)
    }

    fn finish(&self, name: &str, op: &Arc<Op>) {
        {
            let mut ops = lock(&self.inner.ops);
            if ops.get(name).is_some_and(|o| Arc::ptr_eq(o, op)) {
                ops.remove(name);
            }
        }
        if op.kind == OpKind::Spawn {
            let mut finished = lock(&self.inner.finished);
            finished.insert(name.to_string(), (Instant::now(), op.progress.clone()));
            decide::keep_newest(&mut finished, MAX_REMEMBERED, |(at, _)| *at);
        }
        op.done.send_replace(true);
        // Look again now that it is done.
        let _ = self.inner.trigger.send(name.to_string());
    }

    /// Starts (or resumes) the spawn of a record in a task.
    pub(super) fn start_spawn(&self, us: &UserServer) {
        let name = us.name_any();
        let Some(op) = self.claim(&name, OpKind::Spawn) else { return };
        let (spawner, us) = (self.clone(), us.clone());
        self.inner.metrics.spawns_in_flight_inc();
        tokio::spawn(async move {
            spawner.run_spawn(&us, &op).await;
            spawner.inner.metrics.spawns_in_flight_dec();
            spawner.finish(&name, &op);
        });
    }

    /// Starts the stop of a record in a task. With `lost`, the record's Pod went away by
    /// itself: what is left goes, and the record ends `Failed` with that cause.
    pub(super) fn start_stop(&self, us: &UserServer, lost: Option<FailureStatus>) {
        let name = us.name_any();
        let Some(op) = self.claim(&name, OpKind::Stop) else { return };
        let (spawner, us) = (self.clone(), us.clone());
        tokio::spawn(async move {
            let done = spawner.run_stop(&us, lost).await;
            spawner.finish(&name, &op);
            if !done {
                tokio::time::sleep(STOP_RETRY).await;
                let _ = spawner.inner.trigger.send(name);
            }
        });
    }

    /// Writes a milestone of a spawn to the status; failures are logged (the next milestone,
    /// or the reconcile after a restart, writes it again).
    async fn milestone(&self, us: &UserServer, status: UserServerStatus) {
        if let Err(e) = self.write_status(us, status, false).await {
            tracing::warn!(record = %us.name_any(), error = %e, "could not write a spawn's status");
        }
    }

    async fn run_spawn(&self, us: &UserServer, op: &Op) {
        let started = Instant::now();
        let status = us.status.clone().unwrap_or_default();
        let context = status.cluster.clone().unwrap_or_default();
        let profiles = self.profiles();
        let Some(base) = profiles.get(&us.spec.profile) else {
            let failure = Failure::new(FailureKind::Other, format!("unknown profile {:?}", us.spec.profile));
            return self.spawn_failed(us, op, &status, failure).await;
        };
        let profile = match base.resolve_options(&us.spec.options) {
            Ok(r) => r.profile,
            Err(e) => return self.spawn_failed(us, op, &status, Failure::new(FailureKind::Other, e.to_string())).await,
        };
        if let Some(p) = &status.progress {
            op.progress.push(ProgressEvent::step(p.percent, p.message.clone()));
        }
        let env = match &us.spec.env_secret_ref {
            None => BTreeMap::new(),
            Some(secret) => match self.env_of(&secret.name).await {
                Ok(env) => env,
                Err(e) => return self.spawn_failed(us, op, &status, Failure::new(FailureKind::Other, format!("the env Secret {}: {e}", secret.name))).await,
            },
        };
        let owner = Owner { uid: us.uid().unwrap_or_default(), home: self.inner.home.namespace().to_string() };
        // Checked again: the profile may have changed since the record was written.
        let hub_parameters = match fleetspawn_core::profiles::hub_parameters::resolve_text(&base.hub_parameters, &us.spec.hub_parameters) {
            Ok(values) => values,
            Err(e) => return self.spawn_failed(us, op, &status, Failure::new(FailureKind::Other, e.to_string())).await,
        };
        let input = SpawnInput {
            user: &us.spec.user,
            server: &us.spec.server,
            profile: base,
            options: &us.spec.options,
            context: &context,
            secret_env: &env,
            url_prefix: us.spec.url_prefix.as_deref(),
            hub_parameters: &hub_parameters,
            owner: Some(&owner),
        };
        let mut bundle = match self.inner.renderer.render(&input) {
            Ok(b) => b,
            Err(e) => return self.spawn_failed(us, op, &status, Failure::new(FailureKind::Other, e.to_string())).await,
        };
        // The start timeout runs from when the spawn was accepted, across restarts.
        let accepted = status.accepted_at.as_ref().map_or_else(Timestamp::now, |t| t.0);
        let elapsed = Duration::from_secs(u64::try_from(Timestamp::now().as_second().saturating_sub(accepted.as_second())).unwrap_or(0));
        let deadline = tokio::time::Instant::now() + profile.start_timeout.saturating_sub(elapsed);
        // Claims that exist before this spawn hold a user's data: a rollback keeps them.
        let kept_claims = self.existing_claims(&context, &bundle).await;
        let outcome = tokio::select! {
            outcome = self.apply_and_wait(op, us, &profile, &mut bundle, &context, deadline) => outcome,
            () = op.cancel.cancelled() => Err(SpawnFailure::incomplete(FailureKind::Cancelled, "the spawn was cancelled")),
        };
        if op.handed_over.load(std::sync::atomic::Ordering::Acquire) {
            tracing::info!(key = %us.name_any(), cluster = %context, "spawn handed over to the cluster's new Lease holder");
            return;
        }
        let seconds = started.elapsed().as_secs_f64();
        self.inner.metrics.spawn_finished(&profile.slug, &context, seconds, outcome.is_ok());
        if let Err(SpawnFailure { api_error: true, .. }) = &outcome {
            self.inner.metrics.kube_api_error(&context);
        }
        match outcome {
            Ok((url, pod_uid)) => {
                tracing::info!(key = %us.name_any(), seconds, "spawn ready");
                let mut next = UserServerStatus {
                    phase: Some(Phase::Running),
                    pod_uid: Some(pod_uid),
                    url: Some(url.clone()),
                    started_at: Some(Time(Timestamp::now())),
                    progress: Some(crate::kube::userserver::Progress { percent: 100, message: "Ready".into() }),
                    failure: None,
                    ..self.latest_status(us)
                };
                let now = Time(Timestamp::now());
                set_condition(&mut next.conditions, CONDITION_READY, ConditionStatus::True, "PodReady", "", us.metadata.generation, now.clone());
                set_condition(&mut next.conditions, CONDITION_STALLED, ConditionStatus::False, "Ready", "", us.metadata.generation, now);
                self.milestone(us, next).await;
                self.record_event(us, EventType::Normal, "Ready", "Spawn", format!("Server ready at {url} on cluster {context}")).await;
                self.route_now(us, &url).await;
                op.progress.push(ProgressEvent::ready(&self.users_url(&url, us)));
            }
            Err(failure) => {
                tracing::warn!(key = %us.name_any(), cause = %failure.failure.message, "spawn failed");
                if failure.leftovers == Leftovers::Remove || !profile.keep_on_failure {
                    op.progress.push(ProgressEvent::step(95, "Removing what this spawn created"));
                    if let Err(e) = self.rollback(&context, &bundle, &kept_claims).await {
                        tracing::warn!(key = %us.name_any(), error = %e, "rollback incomplete; the stop or garbage collection will finish it");
                    }
                }
                if op.cancel.is_cancelled() {
                    // A stop (or a delete) took over: it records the end.
                    op.progress.push(ProgressEvent::failed(failure.failure));
                } else {
                    let latest = self.latest_status(us);
                    self.spawn_failed(us, op, &latest, failure.failure).await;
                }
            }
        }
    }

    /// The newest status this process knows of a record.
    fn latest_status(&self, us: &UserServer) -> UserServerStatus {
        self.record(&us.name_any()).and_then(|r| r.status.clone()).or_else(|| us.status.clone()).unwrap_or_default()
    }

    async fn spawn_failed(&self, us: &UserServer, op: &Op, status: &UserServerStatus, failure: Failure) {
        let mut next = UserServerStatus {
            phase: Some(Phase::Failed),
            failure: Some(FailureStatus { reason: FailureReason::from(failure.kind), message: failure.message.clone() }),
            progress: None,
            ..status.clone()
        };
        let now = Time(Timestamp::now());
        set_condition(&mut next.conditions, CONDITION_READY, ConditionStatus::False, "SpawnFailed", &failure.message, us.metadata.generation, now.clone());
        set_condition(
            &mut next.conditions,
            CONDITION_STALLED,
            ConditionStatus::True,
            &format!("{:?}", failure.kind),
            &failure.message,
            us.metadata.generation,
            now,
        );
        self.milestone(us, next).await;
        self.record_event(us, EventType::Warning, "Failed", "Spawn", failure.message.clone()).await;
        op.progress.push(ProgressEvent::failed(failure));
    }

    /// The env of a record's Secret, waiting briefly for it (it is written just after the
    /// record).
    async fn env_of(&self, secret: &str) -> Result<BTreeMap<String, String>, crate::kube::home::HomeError> {
        let until = Instant::now() + ENV_SECRET_WAIT;
        loop {
            match self.inner.home.read_env_secret(secret).await {
                Err(e) if e.is_not_found() && Instant::now() < until => tokio::time::sleep(Duration::from_millis(200)).await,
                other => return other,
            }
        }
    }

    async fn apply_and_wait(
        &self,
        op: &Op,
        us: &UserServer,
        profile: &Profile,
        bundle: &mut Bundle,
        context: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(String, String), SpawnFailure> {
        let cluster = self.cluster(context).map_err(SpawnFailure::from)?;
        let refs: Vec<ObjectRef> = bundle.objects.iter().map(|o| ObjectRef::of(&o.object)).collect::<Result<_, _>>().map_err(SpawnFailure::from)?;
        lock(&self.inner.kinds).extend(refs.iter().map(|r| (r.api_version.clone(), r.kind.clone())));
        let placement = us.status.as_ref().and_then(|s| s.placement.clone()).unwrap_or_default();
        let pod_ref = self.annotate_pod(bundle, &refs, &placement)?;
        let namespace = pod_ref.namespace.clone().unwrap_or_else(|| bundle.namespace.clone());

        // Watches first, so no Event of the new Pod is missed.
        let client = cluster.api.client().clone();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let events: Api<KubeEvent> = Api::namespaced(client, &namespace);
        let pod_watch = watcher::watcher(pods, watcher::Config::default().fields(&format!("metadata.name={}", pod_ref.name))).boxed();
        let event_selector = format!("involvedObject.kind=Pod,involvedObject.name={}", pod_ref.name);
        let event_watch = watcher::watcher(events, watcher::Config::default().fields(&event_selector)).boxed();

        let pod_uid = self.apply_tiers(op, cluster, context, bundle, &namespace).await?;
        let inventory = refs
            .iter()
            .map(|r| InventoryEntry { api_version: r.api_version.clone(), kind: r.kind.clone(), namespace: r.namespace.clone(), name: r.name.clone() })
            .collect();
        let starting = UserServerStatus {
            phase: Some(Phase::Starting),
            pod_uid: Some(pod_uid.clone()),
            inventory,
            url: Some(bundle.url.clone()),
            namespace: Some(namespace.clone()),
            progress: Some(crate::kube::userserver::Progress { percent: 45, message: "Waiting for the server's pod to be scheduled".into() }),
            ..us.status.clone().unwrap_or_default()
        };
        self.milestone(us, starting).await;
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod_ref.name.clone()),
            namespace: Some(namespace.clone()),
            uid: Some(pod_uid.clone()),
            ..Default::default()
        };
        let note = format!(
            "Spawning server {:?} of user {:?} with profile {} on cluster {context} ({placement}), for UserServer {}/{}",
            us.spec.server,
            us.spec.user,
            profile.slug,
            self.inner.home.namespace(),
            us.name_any()
        );
        self.audit(context, &reference, EventType::Normal, "Spawning", "Spawn", note).await;
        op.progress.push(ProgressEvent::step(45, "Waiting for the server's pod to be scheduled"));

        let mut follow = Follow { op, pod_uid: pod_uid.clone(), pod_watch, event_watch, seen_events: BTreeSet::new(), started_seen: false };
        if let Err(failure) = follow.until_ready(profile, deadline).await {
            if failure.leftovers == Leftovers::AsProfileSays {
                self.audit(context, &reference, EventType::Warning, "SpawnFailed", "Spawn", failure.failure.message.clone()).await;
            }
            return Err(failure);
        }
        follow.drain_events().await;
        op.progress.push(ProgressEvent::step(90, "The server's pod is ready"));
        if profile.ready_check_url {
            self.wait_url(op, &bundle.url, deadline).await?;
        }
        self.audit(context, &reference, EventType::Normal, "Ready", "Spawn", format!("Server ready at {}", bundle.url)).await;
        Ok((bundle.url.clone(), pod_uid))
    }

    /// Puts the placement decision on the bundle's Pod; returns the Pod's reference.
    fn annotate_pod(&self, bundle: &mut Bundle, refs: &[ObjectRef], placement_reason: &str) -> Result<ObjectRef, SpawnFailure> {
        let mut pod_ref = None;
        for (o, r) in bundle.objects.iter_mut().zip(refs) {
            if o.tier == Tier::Workload && r.kind == "Pod" {
                if let Some(ann) = o.object.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
                    ann.insert(labels::PLACEMENT.into(), Value::String(placement_reason.to_string()));
                }
                pod_ref = Some(r.clone());
            }
        }
        pod_ref.ok_or_else(|| SpawnFailure::incomplete(FailureKind::Other, "the bundle has no Pod"))
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
    /// Redirects are that answer, never followed: a single-user server sends an anonymous
    /// caller to its hub's login, which need not be reachable from here.
    async fn wait_url(&self, op: &Op, url: &str, deadline: tokio::time::Instant) -> Result<(), SpawnFailure> {
        op.progress.push(ProgressEvent::step(92, format!("Waiting for {url} to answer")));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
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
    pub(super) async fn audit(&self, context: &str, reference: &ObjectReference, type_: EventType, reason: &str, action: &str, note: String) {
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
            for result in join_all(refs.iter().map(|r| cluster.api.delete(r, None))).await {
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

    /// Deletes what a record owns on its cluster and waits for its Pod to go, at most its
    /// profile's stop timeout; then records the end. Returns whether it finished.
    async fn run_stop(&self, us: &UserServer, lost: Option<FailureStatus>) -> bool {
        let name = us.name_any();
        let status = us.status.clone().unwrap_or_default();
        let Some(context) = status.cluster.clone() else { return self.recorded_stop(us, lost).await };
        if lost.is_none() && status.phase != Some(Phase::Stopping) {
            self.milestone(us, UserServerStatus { phase: Some(Phase::Stopping), progress: None, ..status.clone() }).await;
        }
        let remove_storage = us.annotations().get(REMOVE_STORAGE).is_some_and(|v| v == "true");
        let timeout = self.profiles().get(&us.spec.profile).map_or(DEFAULT_STOP_TIMEOUT, |p| p.stop_timeout);
        let extra: Vec<(String, String)> = status.inventory.iter().map(|e| (e.api_version.clone(), e.kind.clone())).collect();
        let owner = us.uid().unwrap_or_default();
        match tokio::time::timeout(timeout, self.delete_owned(&context, &owner, remove_storage, &extra)).await {
            Ok(Ok(())) => self.recorded_stop(us, lost).await,
            Ok(Err(e)) => {
                tracing::warn!(record = %name, cluster = %context, error = %e, "stop incomplete; retrying");
                false
            }
            Err(_) => {
                tracing::warn!(record = %name, cluster = %context, "stop did not finish within {}s (a Pod stuck terminating?); retrying", timeout.as_secs());
                false
            }
        }
    }

    /// [`Self::stopped`], logging a failure to record it (the next reconcile records it); whether it did.
    async fn recorded_stop(&self, us: &UserServer, lost: Option<FailureStatus>) -> bool {
        match self.stopped(us, lost).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(record = %us.name_any(), error = %e, "could not record a stop");
                false
            }
        }
    }

    /// Records that nothing runs for a record any more: `Stopped` (or `Failed` with the cause
    /// when its Pod was lost); a deleted record loses its finalizer and goes.
    pub(super) async fn stopped(&self, us: &UserServer, lost: Option<FailureStatus>) -> Result<(), ReconcileError> {
        let name = us.name_any();
        let latest = self.record(&name).map_or_else(|| us.clone(), |r| (*r).clone());
        if latest.metadata.deletion_timestamp.is_some() {
            let finalizers: Vec<String> = latest.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
            lock(&self.inner.accepted).remove(&name);
            return match self.inner.home.patch(&name, &serde_json::json!({ "metadata": { "finalizers": finalizers } })).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_not_found() => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        let status = latest.status.clone().unwrap_or_default();
        let next = match lost {
            Some(failure) => UserServerStatus { phase: Some(Phase::Failed), failure: Some(failure), pod_uid: None, progress: None, ..status },
            // Where it ran stays known: its storage is there, and it goes back there.
            None => UserServerStatus {
                phase: Some(Phase::Stopped),
                failure: status.failure,
                cluster: status.cluster,
                namespace: status.namespace,
                ..Default::default()
            },
        };
        self.write_status(&latest, next, false).await?;
        self.record_event(&latest, EventType::Normal, "Stopped", "Stop", "Nothing runs any more".into()).await;
        Ok(())
    }

    /// Deletes every object on `context` labelled with `owner` (of the kinds fleetspawn has
    /// applied and those of the record's inventory; its claims only with `remove_storage`,
    /// never a Namespace), then waits for its Pods to go.
    async fn delete_owned(&self, context: &str, owner: &str, remove_storage: bool, extra: &[(String, String)]) -> Result<(), SpawnError> {
        let cluster = self.cluster(context)?;
        let selector = format!("{}={owner}", labels::OWNER);
        let mut kinds: BTreeSet<(String, String)> = lock(&self.inner.kinds).clone();
        kinds.extend(extra.iter().cloned());
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
        let (pods, others): (Vec<ObjectRef>, Vec<ObjectRef>) = refs.into_iter().partition(|r| r.kind == "Pod");
        for result in join_all(pods.iter().chain(others.iter()).map(|r| cluster.api.delete(r, None))).await {
            result?;
        }
        for pod in &pods {
            let api: Api<Pod> = Api::namespaced(cluster.api.client().clone(), pod.namespace.as_deref().unwrap_or("default"));
            kube::runtime::wait::await_condition(api, &pod.name, |p: Option<&Pod>| p.is_none()).await.map_err(|e| ObjectError {
                object: pod.to_string(),
                message: e.to_string(),
                code: None,
            })?;
        }
        Ok(())
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
