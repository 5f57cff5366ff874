//! The spawner's decisions as functions of state: what the reconciler does next with one
//! `UserServer` (from its spec and status, the Pods seen on its cluster, what this process is
//! already doing for it, and the time), what a start request finds, what a user sees, which
//! labelled objects are garbage, how far an apply is. No I/O and no clock: the caller passes
//! what it observed and the time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use fleetspawn_core::instance::{Instance, InstanceState, InstanceView};
use fleetspawn_core::lifecycle::FailureKind;
use k8s_openapi::jiff::Timestamp;

use super::SpawnError;
use crate::kube::userserver::{FailureReason, Phase, UserServer, REMOVE_STORAGE};
use crate::proxy::ProxyRoute;
use kube::ResourceExt as _;

/// What the server's cluster shows of it now.
#[derive(Clone, Debug, PartialEq)]
pub enum Seen {
    /// The cluster cannot be known (unreachable, or its watch is not synced): the cause.
    Unknown(String),
    /// The Pods on the server's cluster labelled with the record's UID.
    Pods(Vec<Instance>),
}

/// What this process is doing for a record right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Busy {
    Spawning,
    Stopping,
}

/// Why the reconciler stops a server by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cull {
    /// It reached its lifespan.
    MaxAge,
    /// No activity for longer than its idle timeout.
    Idle,
}

impl Cull {
    /// Every reason (the metrics' series start at zero for each).
    pub const ALL: [Cull; 2] = [Cull::MaxAge, Cull::Idle];

    /// The reason as statuses, Events and metrics name it (`MaxAge`, `Idle`).
    pub fn name(self) -> String {
        format!("{:?}", FailureReason::from(self))
    }
}

impl From<Cull> for FailureReason {
    fn from(c: Cull) -> Self {
        match c {
            Cull::MaxAge => FailureReason::MaxAge,
            Cull::Idle => FailureReason::Idle,
        }
    }
}

/// The reconciler's next step for one record.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Nothing to do until something changes.
    Nothing,
    /// Put the finalizer on, so a delete removes the remote objects first.
    AddFinalizer,
    /// Choose a cluster and write it into the status (before any remote object exists).
    Place,
    /// Apply the bundle and follow the spawn (again, after a restart: from the status).
    Spawn,
    /// A stop (or a delete) came while this process spawns: cancel the spawn first.
    CancelSpawn,
    /// Delete what runs for it on its cluster.
    Stop,
    /// Nothing runs any more: record it (`Stopped`, or the finalizer goes when deleting).
    Stopped,
    /// Started again after it stopped or failed: a new spawn from a clean status.
    Restart,
    /// It has been ready: write what its Pod says now (`ready`, and the cause when not).
    Running { ready: bool, cause: Option<String> },
    /// It had been ready and its Pod is gone (deleted out of band, evicted): failed, and
    /// its leftovers go.
    Lost,
    /// Its cluster cannot be known: `Unknown`, nothing deleted, nothing culled.
    Unknown(String),
    /// Stop it: it reached its lifespan or was idle too long.
    Cull(Cull),
}

/// What the reconciler knows of one record when it decides.
pub struct Facts<'a> {
    pub us: &'a UserServer,
    /// The Pods of its cluster (`None` while it has no cluster).
    pub seen: Option<Seen>,
    pub busy: Option<Busy>,
    /// The lifespan and idle timeout that apply (the record's, within the profile's bounds).
    pub lifespan: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub now: Timestamp,
}

/// Whether `then + age <= now`.
fn older_than(then: Timestamp, age: Duration, now: Timestamp) -> bool {
    let age = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
    now.as_second().saturating_sub(then.as_second()) >= age
}

/// The record's Pod among those seen: the one its status names, else (a spawn that has not
/// written it yet) none.
fn its_pod<'a>(us: &UserServer, pods: &'a [Instance]) -> Option<&'a Instance> {
    let uid = us.status.as_ref()?.pod_uid.as_deref()?;
    pods.iter().find(|p| p.uid == uid)
}

/// The reconciler's decision. See [`Step`].
pub fn next_step(f: &Facts<'_>) -> Step {
    let us = f.us;
    let status = us.status.clone().unwrap_or_default();
    let phase = status.phase;
    let deleting = us.metadata.deletion_timestamp.is_some();
    let has_finalizer = us.metadata.finalizers.iter().flatten().any(|x| x == crate::kube::userserver::FINALIZER);
    let wants_stop = deleting || !us.spec.started;
    if wants_stop {
        if f.busy == Some(Busy::Spawning) {
            return Step::CancelSpawn;
        }
        if deleting && !has_finalizer {
            return Step::Nothing;
        }
        let stopping_here = f.busy == Some(Busy::Stopping);
        if phase == Some(Phase::Stopped) || status.cluster.is_none() {
            if !deleting {
                return Step::Nothing;
            }
            // Deleted after it stopped: its storage goes only when asked ("delete forever").
            let remove_storage = us.annotations().get(REMOVE_STORAGE).is_some_and(|v| v == "true");
            return match &f.seen {
                Some(Seen::Pods(_)) if remove_storage && stopping_here => Step::Nothing,
                Some(Seen::Pods(_)) if remove_storage => Step::Stop,
                Some(Seen::Unknown(cause)) if remove_storage => Step::Unknown(cause.clone()),
                _ => Step::Stopped,
            };
        }
        return match &f.seen {
            None => Step::Stopped,
            Some(Seen::Unknown(_)) if phase == Some(Phase::Unknown) => Step::Nothing,
            // A cluster that cannot be reached: its objects may be there; wait for it.
            Some(Seen::Unknown(cause)) => Step::Unknown(cause.clone()),
            Some(Seen::Pods(_)) if stopping_here => Step::Nothing,
            Some(Seen::Pods(_)) => Step::Stop,
        };
    }
    if !has_finalizer {
        return Step::AddFinalizer;
    }
    if matches!(phase, Some(Phase::Stopped)) {
        return Step::Restart;
    }
    if f.busy == Some(Busy::Stopping) {
        return Step::Nothing;
    }
    let Some(seen) = &f.seen else {
        return if matches!(phase, None | Some(Phase::Pending)) { Step::Place } else { Step::Restart };
    };
    let pods = match seen {
        Seen::Unknown(cause) => {
            // A spawn in flight here runs on (it fails by itself if the cluster stays away).
            if f.busy == Some(Busy::Spawning) || phase == Some(Phase::Unknown) {
                return Step::Nothing;
            }
            return Step::Unknown(cause.clone());
        }
        Seen::Pods(pods) => pods,
    };
    if f.busy == Some(Busy::Spawning) {
        return Step::Nothing;
    }
    let was_ready = status.started_at.is_some();
    match phase {
        Some(Phase::Failed) => Step::Nothing,
        Some(Phase::Stopping) => Step::Stop,
        Some(Phase::Running | Phase::Unknown) if was_ready => match its_pod(us, pods) {
            None => Step::Lost,
            Some(pod) => {
                let started = status.started_at.as_ref().map(|t| t.0);
                if let (Some(lifespan), Some(started)) = (f.lifespan, started) {
                    if older_than(started, lifespan, f.now) {
                        return Step::Cull(Cull::MaxAge);
                    }
                }
                let active = status.last_activity.as_ref().map(|t| t.0).or(started);
                if let (Some(idle), Some(active)) = (f.idle_timeout, active) {
                    if older_than(active, idle, f.now) {
                        return Step::Cull(Cull::Idle);
                    }
                }
                let ready = pod.state == InstanceState::Running;
                let cause = if ready { None } else { Some(pod.cause.clone().unwrap_or_else(|| "the server's pod is not ready".into())) };
                Step::Running { ready, cause }
            }
        },
        // Accepted or starting, and nobody here follows it (a restart, another replica
        // died): the spawn goes on from the status.
        _ => Step::Spawn,
    }
}

/// What a start request finds in the record of that server.
#[derive(Debug, PartialEq)]
pub enum Accept {
    /// No record, or one that is stopped or failed: create or restart it.
    Start,
    /// It is starting or running: answer it as it is.
    AlreadyThere(Box<InstanceView>),
}

/// The decision for a start request over the existing record (if any) and what its cluster
/// shows.
pub fn accept(existing: Option<&UserServer>, view: Option<InstanceView>) -> Result<Accept, SpawnError> {
    let Some(us) = existing else { return Ok(Accept::Start) };
    if us.metadata.deletion_timestamp.is_some() {
        return Err(SpawnError::Busy);
    }
    match view {
        None => Ok(Accept::Start),
        Some(v) => match v.state {
            InstanceState::Failed => Ok(Accept::Start),
            InstanceState::Stopping => Err(SpawnError::Busy),
            InstanceState::Unknown => Err(SpawnError::ClusterUnavailable { context: v.cluster }),
            InstanceState::Pending | InstanceState::Running => Ok(Accept::AlreadyThere(Box::new(v))),
        },
    }
}

/// What a user sees of a record: `None` when no server is (stopped, or never started).
/// `cluster_cause` is why the record's cluster cannot be known right now (it then reads as
/// `Unknown`, never as stopped); `pod` is its Pod as the registry has it.
pub fn view_of(us: &UserServer, cluster_cause: Option<&str>, pod: Option<&Instance>) -> Option<InstanceView> {
    let status = us.status.clone().unwrap_or_default();
    let key = us.metadata.name.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or(Phase::Pending);
    let stopping = !us.spec.started || us.metadata.deletion_timestamp.is_some();
    let state = match phase {
        Phase::Stopped => return None,
        Phase::Failed if !stopping => InstanceState::Failed,
        // A record stopped before it was placed: nothing runs.
        _ if stopping && status.cluster.is_none() => return None,
        _ if stopping => InstanceState::Stopping,
        Phase::Pending | Phase::Starting => InstanceState::Pending,
        Phase::Running => InstanceState::Running,
        Phase::Stopping => InstanceState::Stopping,
        Phase::Failed => InstanceState::Failed,
        Phase::Unknown => InstanceState::Unknown,
    };
    let (state, cause) = match (cluster_cause, state) {
        (Some(cause), InstanceState::Running | InstanceState::Pending | InstanceState::Stopping) => {
            (InstanceState::Unknown, Some(format!("cluster {} is not reachable or not synced: {cause}", status.cluster.clone().unwrap_or_default())))
        }
        (_, InstanceState::Failed) => (state, status.failure.as_ref().map(|f| f.message.clone())),
        (_, InstanceState::Running) => {
            (state, pod.filter(|p| p.state != InstanceState::Running).map(|p| p.cause.clone().unwrap_or_else(|| "the server's pod is not ready".into())))
        }
        _ => (state, None),
    };
    Some(InstanceView {
        key,
        user: us.spec.user.clone(),
        server: us.spec.server.clone(),
        profile: us.spec.profile.clone(),
        cluster: status.cluster.clone().unwrap_or_default(),
        state,
        url: status.url.clone(),
        started_at: status.started_at.as_ref().map(|t| t.0.to_string()).or_else(|| pod.and_then(|p| p.started_at.clone())),
        last_seen: pod.and_then(|p| p.last_seen.clone()),
        cause,
        placement: status.placement.clone(),
        failure: status.failure.as_ref().and_then(|f| failure_kind(f.reason)),
    })
}

/// The failure kind of a reason (culling reasons are not failures of the server).
pub fn failure_kind(reason: FailureReason) -> Option<FailureKind> {
    Some(match reason {
        FailureReason::ImagePull => FailureKind::ImagePull,
        FailureReason::Unschedulable => FailureKind::Unschedulable,
        FailureReason::OutOfMemory => FailureKind::OutOfMemory,
        FailureReason::Quota => FailureKind::Quota,
        FailureReason::CrashLoop => FailureKind::CrashLoop,
        FailureReason::Timeout => FailureKind::Timeout,
        FailureReason::ClusterUnreachable => FailureKind::ClusterUnreachable,
        FailureReason::Cancelled => FailureKind::Cancelled,
        FailureReason::Other => FailureKind::Other,
        FailureReason::MaxAge | FailureReason::Idle => return None,
    })
}

/// How many cluster Leases one of `members` replicas may hold: an even split, rounded up
/// (one replica holds them all; two split three as two and one).
pub fn fair_share(clusters: usize, members: usize) -> usize {
    clusters.div_ceil(members.max(1))
}

/// Whether a remote object labelled as this installation's is garbage: it claims no owner, or
/// an owner that no record has (or whose record is placed on another cluster), and it is
/// older than the grace period (objects of a spawn being accepted are younger than that).
pub fn is_garbage(owner: Option<&str>, created: Option<Timestamp>, owners_here: &HashSet<String>, grace: Duration, now: Timestamp) -> bool {
    let owned = owner.is_some_and(|o| owners_here.contains(o));
    !owned && created.is_some_and(|c| older_than(c, grace, now))
}

/// The kind of a failure to apply an object: no answer means the cluster is unreachable; a
/// 403 naming a quota (the API server's `exceeded quota: ...`) is a used-up quota.
pub fn object_failure_kind(code: Option<u16>, message: &str) -> FailureKind {
    match code {
        None => FailureKind::ClusterUnreachable,
        Some(403) if message.contains("exceeded quota") => FailureKind::Quota,
        Some(_) => FailureKind::Other,
    }
}

/// The proxy route of a server reached at `url` under the path prefix `prefix`: the prefix
/// without its trailing slash (configurable-http-proxy's key) → the URL without the prefix
/// (the proxy appends the request's whole path). `None` for a URL that does not end so.
/// A path with a dot segment (a user named `..`) is none: the proxy's API URL would resolve
/// it to another route (`/user/..` is `/`, everyone's).
pub fn proxy_route(url: &str, prefix: &str) -> Option<(String, String)> {
    let target = url.strip_suffix(prefix)?;
    let path = prefix.trim_end_matches('/');
    let dot_segment = |seg: &str| matches!(seg.to_ascii_lowercase().as_str(), "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e.");
    (!path.is_empty() && target.contains("://") && !path.split('/').any(dot_segment)).then(|| (path.to_string(), target.to_string()))
}

/// What to change on the proxy: `desired` routes (path → target) missing or pointing
/// elsewhere are added, unless another owner holds the path; `owner`'s routes not desired
/// are removed. Routes of others are never touched.
pub fn route_changes(desired: &BTreeMap<String, String>, current: &BTreeMap<String, ProxyRoute>, owner: &str) -> (Vec<(String, String)>, Vec<String>) {
    let add = desired
        .iter()
        .filter(|(path, target)| match current.get(*path) {
            None => true,
            Some(r) => r.owner.as_deref() == Some(owner) && &r.target != *target,
        })
        .map(|(p, t)| (p.clone(), t.clone()))
        .collect();
    let remove = current.iter().filter(|(path, r)| r.owner.as_deref() == Some(owner) && !desired.contains_key(*path)).map(|(p, _)| p.clone()).collect();
    (add, remove)
}

/// A user's URL under the proxy's public URL.
pub fn public_url(public: &str, prefix: &str) -> String {
    format!("{}{prefix}", public.trim_end_matches('/'))
}

/// Whether an HTTP status from a server's URL is the server answering: a success, a
/// redirect (to its login or its UI) or a refusal to an anonymous caller. A 404 is what an
/// ingress says for a path it does not route (or a host rule that does not match), and 5xx
/// is a proxy with no ready backend: neither means the server is up.
pub fn is_server_answer(status: u16) -> bool {
    matches!(status, 200..=399 | 401 | 403)
}

/// Keeps at most `cap` entries of `map`: beyond it, the oldest (by `at`) go, down to nine
/// tenths of `cap`, so that a full map is not sorted again on every insert.
pub fn keep_newest<K: Clone + Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>, cap: usize, at: impl Fn(&V) -> std::time::Instant) {
    if map.len() <= cap {
        return;
    }
    let keep = cap - cap / 10;
    let mut by_age: Vec<(std::time::Instant, K)> = map.iter().map(|(k, v)| (at(v), k.clone())).collect();
    by_age.sort_by_key(|(t, _)| *t);
    for (_, k) in by_age.into_iter().take(map.len() - keep) {
        map.remove(&k);
    }
}

/// The progress shown once `applied` of `total` objects are applied: 10 % to 40 %.
pub fn apply_progress(applied: usize, total: usize) -> u8 {
    10 + u8::try_from(applied.min(total) * 30 / total.max(1)).unwrap_or(30)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::userserver::{FailureStatus, UserServerStatus, FINALIZER};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn pod(uid: &str, state: InstanceState) -> Instance {
        Instance {
            key: "alice".into(),
            owner: "o".into(),
            user: "alice".into(),
            server: String::new(),
            profile: "quick".into(),
            cluster: "east".into(),
            namespace: "jh".into(),
            pod: "fs-alice".into(),
            uid: uid.into(),
            state,
            url: None,
            started_at: None,
            last_seen: None,
            cause: None,
            failure: None,
            runs: true,
        }
    }

    /// A record with the finalizer, in `phase`, placed on east, ready once at 00:00 if `ready_once`.
    fn record(phase: Option<Phase>, ready_once: bool) -> UserServer {
        let mut us = UserServer::for_server("home", "alice", "", "quick", BTreeMap::new());
        us.metadata.finalizers = Some(vec![FINALIZER.into()]);
        us.status = Some(UserServerStatus {
            phase,
            cluster: phase.map(|_| "east".into()),
            pod_uid: Some("p1".into()),
            started_at: ready_once.then(|| Time(ts("2026-01-01T00:00:00Z"))),
            ..Default::default()
        });
        us
    }

    fn facts(us: &UserServer, seen: Option<Seen>) -> Facts<'_> {
        Facts { us, seen, busy: None, lifespan: None, idle_timeout: None, now: ts("2026-01-01T01:00:00Z") }
    }

    #[test]
    fn a_new_record_gets_its_finalizer_then_a_cluster_then_a_spawn() {
        let mut us = UserServer::for_server("home", "alice", "", "quick", BTreeMap::new());
        assert_eq!(next_step(&facts(&us, None)), Step::AddFinalizer);
        us.metadata.finalizers = Some(vec![FINALIZER.into()]);
        assert_eq!(next_step(&facts(&us, None)), Step::Place);
        let us = record(Some(Phase::Pending), false);
        assert_eq!(next_step(&facts(&us, Some(Seen::Pods(vec![])))), Step::Spawn);
        let us = record(Some(Phase::Starting), false);
        assert_eq!(next_step(&facts(&us, Some(Seen::Pods(vec![])))), Step::Spawn, "a spawn nobody follows goes on from the status");
        let f = Facts { busy: Some(Busy::Spawning), ..facts(&us, Some(Seen::Pods(vec![]))) };
        assert_eq!(next_step(&f), Step::Nothing, "one spawn at a time");
    }

    #[test]
    fn ready_once_stays_running_whatever_its_readiness() {
        let us = record(Some(Phase::Running), true);
        let not_ready = Instance { cause: Some("probe failed".into()), ..pod("p1", InstanceState::Pending) };
        assert_eq!(next_step(&facts(&us, Some(Seen::Pods(vec![not_ready])))), Step::Running { ready: false, cause: Some("probe failed".into()) });
        assert_eq!(next_step(&facts(&us, Some(Seen::Pods(vec![pod("p1", InstanceState::Running)])))), Step::Running { ready: true, cause: None });
        assert_eq!(next_step(&facts(&us, Some(Seen::Pods(vec![])))), Step::Lost, "its Pod is gone");
        assert_eq!(next_step(&facts(&us, Some(Seen::Pods(vec![pod("decoy", InstanceState::Running)])))), Step::Lost, "another Pod is not its Pod");
    }

    #[test]
    fn an_unreachable_cluster_makes_it_unknown_never_stopped_or_culled() {
        let us = record(Some(Phase::Running), true);
        let f = Facts { lifespan: Some(Duration::from_secs(1)), ..facts(&us, Some(Seen::Unknown("refused".into()))) };
        assert_eq!(next_step(&f), Step::Unknown("refused".into()));
        let unknown = record(Some(Phase::Unknown), true);
        assert_eq!(next_step(&facts(&unknown, Some(Seen::Unknown("refused".into())))), Step::Nothing, "written once");
        // Back: it had been ready, so it is running again (or lost), not spawned again.
        assert_eq!(next_step(&facts(&unknown, Some(Seen::Pods(vec![pod("p1", InstanceState::Running)])))), Step::Running { ready: true, cause: None });
        let starting = record(Some(Phase::Unknown), false);
        assert_eq!(next_step(&facts(&starting, Some(Seen::Pods(vec![])))), Step::Spawn, "a spawn cut off by the outage goes on");
    }

    #[test]
    fn lifespans_and_idleness_cull_only_what_runs() {
        let us = record(Some(Phase::Running), true);
        let seen = || Some(Seen::Pods(vec![pod("p1", InstanceState::Running)]));
        let f = Facts { lifespan: Some(Duration::from_secs(3600)), ..facts(&us, seen()) };
        assert_eq!(next_step(&f), Step::Cull(Cull::MaxAge), "exactly its lifespan old");
        let f = Facts { lifespan: Some(Duration::from_secs(3601)), ..facts(&us, seen()) };
        assert_eq!(next_step(&f), Step::Running { ready: true, cause: None });
        let mut active = record(Some(Phase::Running), true);
        active.status.as_mut().expect("status").last_activity = Some(Time(ts("2026-01-01T00:59:00Z")));
        let f = Facts { idle_timeout: Some(Duration::from_secs(1800)), ..facts(&active, seen()) };
        assert_eq!(next_step(&f), Step::Running { ready: true, cause: None }, "active a minute ago");
        let f = Facts { idle_timeout: Some(Duration::from_secs(1800)), ..facts(&us, seen()) };
        assert_eq!(next_step(&f), Step::Cull(Cull::Idle), "no activity since it started an hour ago");
        let starting = record(Some(Phase::Starting), false);
        let f = Facts { lifespan: Some(Duration::from_secs(1)), ..facts(&starting, Some(Seen::Pods(vec![]))) };
        assert_eq!(next_step(&f), Step::Spawn, "a spawn is not culled; its start timeout applies");
    }

    #[test]
    fn a_stop_cancels_a_spawn_then_deletes_then_records_it() {
        let mut us = record(Some(Phase::Running), true);
        us.spec.started = false;
        let pods = || Some(Seen::Pods(vec![pod("p1", InstanceState::Running)]));
        assert_eq!(next_step(&Facts { busy: Some(Busy::Spawning), ..facts(&us, pods()) }), Step::CancelSpawn);
        assert_eq!(next_step(&facts(&us, pods())), Step::Stop);
        assert_eq!(next_step(&Facts { busy: Some(Busy::Stopping), ..facts(&us, pods()) }), Step::Nothing, "one stop at a time");
        assert_eq!(next_step(&facts(&us, Some(Seen::Unknown("refused".into())))), Step::Unknown("refused".into()), "nothing is known deleted");
        let mut stopped = record(Some(Phase::Stopped), false);
        stopped.spec.started = false;
        stopped.status.as_mut().expect("status").cluster = None;
        assert_eq!(next_step(&facts(&stopped, None)), Step::Nothing);
        stopped.spec.started = true;
        assert_eq!(next_step(&facts(&stopped, None)), Step::Restart, "started again");
    }

    #[test]
    fn a_deleted_record_is_stopped_then_released() {
        let mut us = record(Some(Phase::Running), true);
        us.metadata.deletion_timestamp = Some(Time(ts("2026-01-01T00:30:00Z")));
        assert_eq!(next_step(&facts(&us, Some(Seen::Pods(vec![])))), Step::Stop, "whatever else it made goes too");
        let mut gone = us.clone();
        gone.status.as_mut().expect("status").cluster = None;
        assert_eq!(next_step(&facts(&gone, None)), Step::Stopped, "the finalizer goes");
        gone.metadata.finalizers = None;
        assert_eq!(next_step(&facts(&gone, None)), Step::Nothing);
    }

    #[test]
    fn a_deleted_stopped_record_keeps_its_storage_unless_deleted_forever() {
        let mut us = record(Some(Phase::Stopped), false);
        us.spec.started = false;
        let pods = || Some(Seen::Pods(vec![]));
        assert_eq!(next_step(&facts(&us, pods())), Step::Nothing, "stopped: nothing to do, its storage stays where it is");
        us.metadata.deletion_timestamp = Some(Time(ts("2026-01-01T00:30:00Z")));
        assert_eq!(next_step(&facts(&us, pods())), Step::Stopped, "deleted: released, its claim kept");
        us.metadata.annotations = Some(BTreeMap::from([(REMOVE_STORAGE.to_string(), "true".to_string())]));
        assert_eq!(next_step(&facts(&us, pods())), Step::Stop, "deleted forever: its claim goes first");
        assert_eq!(next_step(&facts(&us, Some(Seen::Unknown("refused".into())))), Step::Unknown("refused".into()), "not released blind");
    }

    #[test]
    fn a_start_request_restarts_what_failed_and_answers_what_runs() {
        let view = |state| Some(InstanceView { cluster: "east".into(), ..InstanceView::named("alice", "alice", "", state) });
        assert_eq!(accept(None, None).expect("start"), Accept::Start);
        let us = record(Some(Phase::Running), true);
        assert!(matches!(accept(Some(&us), view(InstanceState::Running)), Ok(Accept::AlreadyThere(v)) if v.state == InstanceState::Running));
        assert!(matches!(accept(Some(&us), view(InstanceState::Pending)), Ok(Accept::AlreadyThere(_))));
        assert_eq!(accept(Some(&us), view(InstanceState::Failed)).expect("restart"), Accept::Start);
        assert_eq!(accept(Some(&us), None).expect("stopped: start again"), Accept::Start);
        assert!(matches!(accept(Some(&us), view(InstanceState::Stopping)), Err(SpawnError::Busy)));
        assert!(matches!(accept(Some(&us), view(InstanceState::Unknown)), Err(SpawnError::ClusterUnavailable { context }) if context == "east"));
    }

    #[test]
    fn users_see_running_with_the_cause_unknown_when_unreachable_and_nothing_once_stopped() {
        let us = record(Some(Phase::Running), true);
        let blip = Instance { cause: Some("probe failed".into()), ..pod("p1", InstanceState::Pending) };
        let v = view_of(&us, None, Some(&blip)).expect("shown");
        assert_eq!((v.state, v.cause.as_deref()), (InstanceState::Running, Some("probe failed")));
        let v = view_of(&us, Some("connection refused"), None).expect("shown");
        assert_eq!(v.state, InstanceState::Unknown);
        assert!(v.cause.as_deref().is_some_and(|c| c.contains("east") && c.contains("connection refused")), "{v:?}");
        let mut stopping = us.clone();
        stopping.spec.started = false;
        assert_eq!(view_of(&stopping, None, None).map(|v| v.state), Some(InstanceState::Stopping));
        assert_eq!(view_of(&record(Some(Phase::Stopped), false), None, None), None);
        let mut failed = record(Some(Phase::Failed), false);
        failed.status.as_mut().expect("status").failure = Some(FailureStatus { reason: FailureReason::ImagePull, message: "no such image".into() });
        let v = view_of(&failed, None, None).expect("shown");
        assert_eq!((v.state, v.cause.as_deref(), v.failure), (InstanceState::Failed, Some("no such image"), Some(FailureKind::ImagePull)));
    }

    #[test]
    fn replicas_split_the_clusters_evenly() {
        assert_eq!(fair_share(3, 1), 3);
        assert_eq!(fair_share(3, 2), 2);
        assert_eq!(fair_share(3, 3), 1);
        assert_eq!(fair_share(3, 5), 1, "more replicas than clusters: one each at most");
        assert_eq!(fair_share(3, 0), 3, "no member seen yet (the list failed): itself");
    }

    #[test]
    fn a_proxy_route_is_the_prefix_to_the_ingress() {
        let route = |url, prefix| proxy_route(url, prefix);
        assert_eq!(route("http://127.0.0.1:18082/user/alice/", "/user/alice/"), Some(("/user/alice".into(), "http://127.0.0.1:18082".into())));
        assert_eq!(
            route("https://b.example/base/user/j%C3%BCrgen/lab/", "/user/j%C3%BCrgen/lab/"),
            Some(("/user/j%C3%BCrgen/lab".into(), "https://b.example/base".into()))
        );
        assert_eq!(route("http://x/user/bob/", "/user/alice/"), None, "not this server's URL");
        assert_eq!(route("/user/alice/", "/user/alice/"), None, "no origin");
        assert_eq!(route("http://x/", "/"), None, "never the root");
        for hostile in ["/user/../", "/user/./", "/user/%2E%2E/", "/user/alice/.%2e/", "/user/%2e/"] {
            let url = format!("http://x{hostile}");
            assert_eq!(proxy_route(&url, hostile), None, "{hostile} would name another route");
        }
        assert!(route("http://x/user/..alice/", "/user/..alice/").is_some(), "dots inside a name are fine");
        assert_eq!(public_url("https://hub.example/", "/user/alice/"), "https://hub.example/user/alice/");
    }

    #[test]
    fn route_changes_touch_only_this_installations_routes() {
        let route = |target: &str, owner: Option<&str>| ProxyRoute { target: target.into(), owner: owner.map(Into::into), last_activity: None };
        let current = BTreeMap::from([
            ("/".to_string(), route("http://hub", None)),
            ("/user/kept".to_string(), route("http://a", Some("fs"))),
            ("/user/moved".to_string(), route("http://a", Some("fs"))),
            ("/user/stale".to_string(), route("http://a", Some("fs"))),
            ("/user/others-stale".to_string(), route("http://a", Some("other-install"))),
            ("/user/taken".to_string(), route("http://elsewhere", None)),
        ]);
        let desired = BTreeMap::from([
            ("/user/kept".to_string(), "http://a".to_string()),
            ("/user/moved".to_string(), "http://b".to_string()),
            ("/user/new".to_string(), "http://c".to_string()),
            ("/user/taken".to_string(), "http://a".to_string()),
        ]);
        let (add, remove) = route_changes(&desired, &current, "fs");
        assert_eq!(add, [("/user/moved".to_string(), "http://b".to_string()), ("/user/new".to_string(), "http://c".to_string())]);
        assert_eq!(remove, ["/user/stale"]);
        // A restarted proxy has nothing: everything comes back.
        let (add, remove) = route_changes(&desired, &BTreeMap::new(), "fs");
        assert_eq!((add.len(), remove.len()), (4, 0));
    }

    #[test]
    fn garbage_is_what_no_record_here_owns_after_the_grace() {
        let now = ts("2026-01-01T00:02:00Z");
        let owners = HashSet::from(["o-alice".to_string()]);
        let grace = Duration::from_secs(60);
        let old = Some(ts("2026-01-01T00:01:00Z"));
        assert!(is_garbage(Some("o-gone"), old, &owners, grace, now), "exactly the grace old");
        assert!(is_garbage(None, old, &owners, grace, now), "claims no owner (a decoy)");
        assert!(!is_garbage(Some("o-alice"), old, &owners, grace, now), "owned");
        assert!(!is_garbage(Some("o-gone"), Some(ts("2026-01-01T00:01:30Z")), &owners, grace, now), "too young");
        assert!(!is_garbage(Some("o-gone"), None, &owners, grace, now), "age unknown");
    }

    #[test]
    fn failures_to_apply_are_told_apart_by_the_api_servers_answer() {
        assert_eq!(object_failure_kind(None, "connection refused"), FailureKind::ClusterUnreachable);
        let quota = "pods \"fs-a\" is forbidden: exceeded quota: compute, requested: cpu=4, used: cpu=8, limited: cpu=10";
        assert_eq!(object_failure_kind(Some(403), quota), FailureKind::Quota);
        assert_eq!(object_failure_kind(Some(403), "forbidden: User cannot create pods"), FailureKind::Other);
        assert_eq!(object_failure_kind(Some(422), "Pod is invalid"), FailureKind::Other);
    }

    #[test]
    fn only_the_servers_own_answer_counts_as_up() {
        for up in [200, 302, 401, 403] {
            assert!(is_server_answer(up), "{up}");
        }
        for down in [404, 421, 502, 503, 504] {
            assert!(!is_server_answer(down), "{down}");
        }
    }

    #[test]
    fn remembered_entries_stay_bounded_and_the_oldest_go() {
        let t0 = std::time::Instant::now();
        let mut map: HashMap<u32, std::time::Instant> = (0..10).map(|i| (i, t0 + Duration::from_secs(u64::from(i)))).collect();
        keep_newest(&mut map, 10, |t| *t);
        assert_eq!(map.len(), 10, "at the cap nothing goes");
        map.insert(10, t0 + Duration::from_secs(10));
        map.insert(11, t0 + Duration::from_secs(11));
        keep_newest(&mut map, 10, |t| *t);
        let mut kept: Vec<u32> = map.into_keys().collect();
        kept.sort();
        assert_eq!(kept, (3..12).collect::<Vec<_>>(), "the oldest go, down to nine tenths");
    }

    #[test]
    fn apply_progress_runs_from_10_to_40_percent() {
        assert_eq!(apply_progress(0, 6), 10);
        assert_eq!(apply_progress(3, 6), 25);
        assert_eq!(apply_progress(6, 6), 40);
        assert_eq!(apply_progress(9, 6), 40);
        assert_eq!(apply_progress(0, 0), 10);
    }
}
