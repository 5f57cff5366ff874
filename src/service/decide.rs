//! The spawner's decisions as functions of state: which clusters a stop covers, which spawns
//! no operation follows are reaped, which labelled objects are garbage, how far an apply is.
//! No I/O and no clock: the caller passes what it observed and the time.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use fleetspawn_core::instance::{Instance, InstanceState, InstanceView};
use fleetspawn_core::lifecycle::FailureKind;
use fleetspawn_core::profiles::{ProfileSet, DEFAULT_START_TIMEOUT};
use k8s_openapi::jiff::Timestamp;

use super::SpawnError;

/// Where a stop must delete objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopTargets {
    /// These clusters.
    Clusters(Vec<String>),
    /// The instance lives on this cluster, which cannot be reached: nothing can be done yet.
    Unavailable(String),
}

/// The clusters a stop of one instance covers: the one it lives on; when it is not live
/// anywhere (or not known yet), every reachable cluster, to sweep leftovers.
pub fn stop_targets(found: &Result<Option<Instance>, Vec<String>>, reachable: impl IntoIterator<Item = String>) -> StopTargets {
    match found {
        Ok(Some(i)) if i.state == InstanceState::Unknown => StopTargets::Unavailable(i.cluster.clone()),
        Ok(Some(i)) => StopTargets::Clusters(vec![i.cluster.clone()]),
        _ => StopTargets::Clusters(reachable.into_iter().collect()),
    }
}

/// Instances no operation follows (their spawner died mid-spawn, or the daemon restarted)
/// that are removed: failed ones (unless their profile keeps failures) and pending ones older
/// than their profile's start timeout (the default timeout for a profile that is gone) whose
/// Pod does not run. A Pod that runs but is not Ready (a readiness blip under load, a node
/// going NotReady) may be serving its user: it is never removed here.
pub fn orphans_to_reap(instances: Vec<Instance>, in_flight: &HashSet<String>, profiles: &ProfileSet, now: Timestamp) -> Vec<Instance> {
    instances
        .into_iter()
        .filter(|i| matches!(i.state, InstanceState::Failed | InstanceState::Pending))
        .filter(|i| !in_flight.contains(&i.key))
        .filter(|i| {
            let profile = profiles.get(&i.profile);
            match i.state {
                InstanceState::Failed => !profile.is_some_and(|p| p.keep_on_failure),
                _ if i.runs => false,
                _ => {
                    let timeout = profile.map_or(DEFAULT_START_TIMEOUT, |p| p.start_timeout);
                    let started = i.started_at.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
                    started.is_some_and(|t| older_than(t, timeout, now, false))
                }
            }
        })
        .collect()
}

/// Whether a labelled object of instance `key`, created at `created`, is garbage: its
/// instance is not live and no operation follows it, and it is at least `grace` old (an
/// object of unknown age never is).
pub fn is_garbage(key: &str, created: Option<Timestamp>, live: &BTreeSet<String>, in_flight: &HashSet<String>, grace: Duration, now: Timestamp) -> bool {
    !live.contains(key) && !in_flight.contains(key) && created.is_some_and(|t| older_than(t, grace, now, true))
}

/// Whether `then` is more than `age` before `now` (or exactly, with `inclusive`), in whole
/// seconds.
fn older_than(then: Timestamp, age: Duration, now: Timestamp, inclusive: bool) -> bool {
    let limit = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
    let elapsed = now.as_second() - then.as_second();
    if inclusive {
        elapsed >= limit
    } else {
        elapsed > limit
    }
}

/// How a new spawn of a key starts, given what the registry knows of it.
#[derive(Debug, Clone, PartialEq)]
pub enum SpawnStart {
    /// Nothing is there: start.
    Fresh,
    /// The previous attempt failed and kept its objects: clear them, then start.
    AfterFailure(Instance),
    /// A server is already starting or running: it is the answer (no second one).
    AlreadyThere(InstanceView),
}

/// Decides how a spawn of a key starts from the registry's answer for it. A key not found
/// while some of the profile's clusters are not synced cannot be known: refused, never
/// started twice; an instance being stopped is busy.
pub fn spawn_start(found: Result<Option<Instance>, Vec<String>>, contexts: &[String]) -> Result<SpawnStart, SpawnError> {
    let existing = match found {
        Ok(found) => found,
        Err(unsynced) => match unsynced.into_iter().find(|c| contexts.contains(c)) {
            Some(context) => return Err(SpawnError::ClusterUnavailable { context }),
            None => None,
        },
    };
    match existing {
        None => Ok(SpawnStart::Fresh),
        Some(i) => match i.state {
            InstanceState::Running | InstanceState::Pending => Ok(SpawnStart::AlreadyThere(i.into())),
            InstanceState::Unknown => Err(SpawnError::ClusterUnavailable { context: i.cluster }),
            InstanceState::Stopping => Err(SpawnError::Busy),
            InstanceState::Failed => Ok(SpawnStart::AfterFailure(i)),
        },
    }
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
    use fleetspawn_core::bundle::Renderer;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn instance(key: &str, profile: &str, state: InstanceState, started: &str) -> Instance {
        Instance {
            key: key.into(),
            user: key.into(),
            server: String::new(),
            profile: profile.into(),
            cluster: "east".into(),
            namespace: "jh".into(),
            pod: format!("fs-{key}"),
            uid: "u".into(),
            state,
            url: None,
            started_at: Some(started.into()),
            last_seen: None,
            cause: None,
            failure: None,
            runs: false,
        }
    }

    fn profiles() -> ProfileSet {
        let text = r#"
[defaults]
image = "quay.io/jupyter/base-notebook:latest"
ingress_public_url = "http://x.example.org"
context = "east"
[[profiles]]
slug = "quick"
display_name = "Quick"
start_timeout = 60
[[profiles]]
slug = "keep"
display_name = "Keep"
keep_on_failure = true
"#;
        Renderer::builtin().expect("templates").parse_profiles("p.toml", text).expect("profiles")
    }

    #[test]
    fn a_stop_covers_the_instances_cluster_or_sweeps_every_reachable_one() {
        let reachable = || vec!["east".to_string(), "west".to_string()];
        let live = Ok(Some(instance("a", "quick", InstanceState::Running, "2026-01-01T00:00:00Z")));
        assert_eq!(stop_targets(&live, reachable()), StopTargets::Clusters(vec!["east".into()]));
        let unknown = Ok(Some(instance("a", "quick", InstanceState::Unknown, "2026-01-01T00:00:00Z")));
        assert_eq!(stop_targets(&unknown, reachable()), StopTargets::Unavailable("east".into()));
        assert_eq!(stop_targets(&Ok(None), reachable()), StopTargets::Clusters(reachable()));
        assert_eq!(stop_targets(&Err(vec!["west".into()]), reachable()), StopTargets::Clusters(reachable()));
    }

    #[test]
    fn orphaned_spawns_are_reaped_by_state_profile_and_age() {
        let now = ts("2026-01-01T00:02:00Z");
        let all = vec![
            instance("old-pending", "quick", InstanceState::Pending, "2026-01-01T00:00:00Z"),
            instance("young-pending", "quick", InstanceState::Pending, "2026-01-01T00:01:30Z"),
            instance("failed", "quick", InstanceState::Failed, "2026-01-01T00:01:59Z"),
            instance("kept-failure", "keep", InstanceState::Failed, "2026-01-01T00:00:00Z"),
            instance("running", "quick", InstanceState::Running, "2026-01-01T00:00:00Z"),
            instance("followed", "quick", InstanceState::Failed, "2026-01-01T00:00:00Z"),
            instance("gone-profile", "nope", InstanceState::Pending, "2026-01-01T00:00:00Z"),
            Instance { runs: true, ..instance("blipped", "quick", InstanceState::Pending, "2026-01-01T00:00:00Z") },
        ];
        let in_flight = HashSet::from(["followed".to_string()]);
        let reaped: Vec<String> = orphans_to_reap(all, &in_flight, &profiles(), now).into_iter().map(|i| i.key).collect();
        assert_eq!(reaped, ["old-pending", "failed"], "the default timeout (300 s) applies to a profile that is gone; a Pod that runs stays");
    }

    #[test]
    fn garbage_is_what_no_live_instance_or_operation_owns_after_the_grace() {
        let now = ts("2026-01-01T00:02:00Z");
        let live = BTreeSet::from(["alice".to_string()]);
        let in_flight = HashSet::from(["bob".to_string()]);
        let grace = Duration::from_secs(60);
        let old = Some(ts("2026-01-01T00:01:00Z"));
        assert!(is_garbage("carol", old, &live, &in_flight, grace, now), "exactly the grace old");
        assert!(!is_garbage("alice", old, &live, &in_flight, grace, now), "live");
        assert!(!is_garbage("bob", old, &live, &in_flight, grace, now), "an operation follows it");
        assert!(!is_garbage("carol", Some(ts("2026-01-01T00:01:30Z")), &live, &in_flight, grace, now), "too young");
        assert!(!is_garbage("carol", None, &live, &in_flight, grace, now), "age unknown");
    }

    #[test]
    fn a_spawn_starts_fresh_returns_what_is_there_or_is_refused() {
        let contexts = vec!["east".to_string()];
        let with = |state| Ok(Some(instance("a", "quick", state, "2026-01-01T00:00:00Z")));
        assert_eq!(spawn_start(Ok(None), &contexts).expect("start"), SpawnStart::Fresh);
        for state in [InstanceState::Running, InstanceState::Pending] {
            assert!(matches!(spawn_start(with(state), &contexts), Ok(SpawnStart::AlreadyThere(v)) if v.state == state), "no second server");
        }
        assert!(matches!(spawn_start(with(InstanceState::Failed), &contexts), Ok(SpawnStart::AfterFailure(i)) if i.key == "a"));
        assert!(matches!(spawn_start(with(InstanceState::Stopping), &contexts), Err(SpawnError::Busy)));
        assert!(matches!(spawn_start(with(InstanceState::Unknown), &contexts), Err(SpawnError::ClusterUnavailable { context }) if context == "east"));
        // Not found, but one of the profile's clusters is not synced: it may be there.
        assert!(matches!(spawn_start(Err(vec!["east".into()]), &contexts), Err(SpawnError::ClusterUnavailable { .. })));
        // Not found, and only clusters the profile does not use are unsynced: start.
        assert_eq!(spawn_start(Err(vec!["west".into()]), &contexts).expect("start"), SpawnStart::Fresh);
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
