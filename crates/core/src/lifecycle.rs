//! Pure rules of a server's life: what a Pod's status means for the user, and how spawn steps
//! and Kubernetes Events map onto JupyterHub-style progress. No I/O, no clients.

use k8s_openapi::api::core::v1::{Event, Pod};
use serde::{Deserialize, Serialize};

/// Why a server did not start, as a kind a program can act on (the message says it for
/// people). The names are the `reason` values of a failed server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureKind {
    /// The image cannot be pulled (wrong name, missing tag, no access).
    ImagePull,
    /// No node fits the server (CPU, memory, GPUs, taints).
    Unschedulable,
    /// A container was killed for using too much memory.
    OutOfMemory,
    /// A resource quota of the namespace is used up.
    Quota,
    /// A container exits or crashes as it starts.
    CrashLoop,
    /// The server did not become ready in time.
    Timeout,
    /// The cluster cannot be reached.
    ClusterUnreachable,
    /// The spawn was stopped, or its Pod deleted, before it was ready.
    Cancelled,
    /// Anything else (a rejected object, a misconfigured container...).
    Other,
}

/// A failure: its kind and the cause in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure { kind, message: message.into() }
    }
}

/// The kind of a container's fatal waiting reason, `None` for a reason it may recover from.
fn waiting_failure(reason: &str) -> Option<FailureKind> {
    match reason {
        "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => Some(FailureKind::ImagePull),
        "CrashLoopBackOff" | "RunContainerError" => Some(FailureKind::CrashLoop),
        "CreateContainerConfigError" | "CreateContainerError" => Some(FailureKind::Other),
        _ => None,
    }
}

/// Where a Pod stands, as far as a user waiting for it is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodVerdict {
    /// Still on its way (not scheduled yet, pulling, starting...).
    Starting,
    /// The scheduler cannot place it; the message is the scheduler's.
    Unschedulable(String),
    /// Running and Ready.
    Ready,
    /// It will not become ready by itself: why.
    Failed(Failure),
    /// Being deleted.
    Terminating,
}

/// Judges a Pod from its status alone.
pub fn judge_pod(pod: &Pod) -> PodVerdict {
    if pod.metadata.deletion_timestamp.is_some() {
        return PodVerdict::Terminating;
    }
    let Some(status) = pod.status.as_ref() else { return PodVerdict::Starting };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    if phase == "Failed" || phase == "Succeeded" {
        let why = status.message.clone().or_else(|| status.reason.clone()).unwrap_or_default();
        let message = format!("the server's pod {} {}", phase.to_lowercase(), why).trim().to_string();
        return PodVerdict::Failed(Failure::new(FailureKind::Other, message));
    }
    for cs in status.container_statuses.iter().flatten() {
        let state = cs.state.as_ref();
        if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.as_deref().unwrap_or_default();
            if let Some(kind) = waiting_failure(reason) {
                let detail = w.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
                return PodVerdict::Failed(Failure::new(kind, format!("container {} cannot start ({reason}{detail})", cs.name)));
            }
        }
        if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            let reason = t.reason.as_deref().unwrap_or("exited");
            let kind = if reason == "OOMKilled" { FailureKind::OutOfMemory } else { FailureKind::CrashLoop };
            return PodVerdict::Failed(Failure::new(kind, format!("container {} exited with code {} ({reason})", cs.name, t.exit_code)));
        }
    }
    let condition = |kind: &str| status.conditions.iter().flatten().find(|c| c.type_ == kind);
    if phase == "Running" && condition("Ready").is_some_and(|c| c.status == "True") {
        return PodVerdict::Ready;
    }
    if let Some(c) = condition("PodScheduled") {
        if c.status == "False" && c.reason.as_deref() == Some("Unschedulable") {
            return PodVerdict::Unschedulable(c.message.clone().unwrap_or_else(|| "no node fits the server".into()));
        }
    }
    PodVerdict::Starting
}

/// Whether the Pod runs: phase Running and every container running. Such a Pod may have
/// served its user already, whatever its readiness says now (a probe failing under load, a
/// node going NotReady): it is never removed as a spawn that did not start.
pub fn runs(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else { return false };
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    status.phase.as_deref() == Some("Running") && !containers.is_empty() && containers.iter().all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

/// One step of a spawn's progress, in the shape JupyterHub's progress API uses: the `data` of
/// every SSE event, whose name is `progress`, then `ready` or `failed` for the last one.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProgressEvent {
    /// 0..=100.
    pub progress: u8,
    pub message: String,
    /// Present (true) on the final event of a successful spawn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// The user's URL, with `ready`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Present (true) on the final event of a failed spawn; `message` is the cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<bool>,
    /// The kind of failure, with `failed`.
    #[serde(skip)]
    pub failure: Option<FailureKind>,
}

impl ProgressEvent {
    pub fn step(progress: u8, message: impl Into<String>) -> Self {
        ProgressEvent { progress: progress.min(100), message: message.into(), ready: None, url: None, failed: None, failure: None }
    }

    pub fn ready(url: &str) -> Self {
        ProgressEvent { ready: Some(true), url: Some(url.to_string()), ..Self::step(100, format!("Server ready at {url}")) }
    }

    /// The last event of a failed spawn: the cause is its message.
    pub fn failed(failure: Failure) -> Self {
        ProgressEvent { failed: Some(true), failure: Some(failure.kind), ..Self::step(100, failure.message) }
    }

    /// Whether this event ends the stream.
    pub fn is_terminal(&self) -> bool {
        self.ready == Some(true) || self.failed == Some(true)
    }

    /// The SSE event name: `ready`, `failed` or `progress`.
    pub fn event_name(&self) -> &'static str {
        if self.ready == Some(true) {
            "ready"
        } else if self.failed == Some(true) {
            "failed"
        } else {
            "progress"
        }
    }
}

/// Progress for a Kubernetes Event about the Pod: the kubelet's and scheduler's steps advance
/// the bar; anything else is reported at the current level.
pub fn progress_for_event(event: &Event, current: u8) -> ProgressEvent {
    let reason = event.reason.as_deref().unwrap_or("Event");
    let level = match reason {
        "Scheduled" => 50,
        "Pulling" => 60,
        "Pulled" => 70,
        "Created" => 75,
        "Started" => 80,
        _ => current,
    }
    .max(current);
    let kind = if event.type_.as_deref() == Some("Warning") { "Warning: " } else { "" };
    let message = event.message.as_deref().unwrap_or_default();
    ProgressEvent::step(level, format!("{kind}{reason}: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).expect("pod")
    }

    #[test]
    fn ready_pod() {
        let p = pod(json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}));
        assert_eq!(judge_pod(&p), PodVerdict::Ready);
    }

    #[test]
    fn running_but_not_ready_is_starting() {
        let p = pod(json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}));
        assert_eq!(judge_pod(&p), PodVerdict::Starting);
    }

    #[test]
    fn image_pull_errors_fail_with_the_kubelet_message() {
        for reason in ["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CrashLoopBackOff"] {
            let p = pod(json!({"phase": "Pending", "containerStatuses": [{"name": "notebook", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": "not found"}}}]}));
            let PodVerdict::Failed(failure) = judge_pod(&p) else { panic!("{reason} must fail") };
            let cause = &failure.message;
            assert!(cause.contains(reason) && cause.contains("not found") && cause.contains("notebook"), "{cause}");
            let kind = if reason == "CrashLoopBackOff" { FailureKind::CrashLoop } else { FailureKind::ImagePull };
            assert_eq!(failure.kind, kind, "{reason}");
        }
    }

    #[test]
    fn a_pod_whose_containers_run_runs_whatever_its_readiness() {
        let running = |ready: &str| {
            pod(json!({"phase": "Running", "conditions": [{"type": "Ready", "status": ready}],
                "containerStatuses": [{"name": "notebook", "image": "x", "imageID": "", "ready": ready == "True", "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}))
        };
        assert!(runs(&running("True")) && runs(&running("False")));
        assert_eq!(judge_pod(&running("False")), PodVerdict::Starting, "not ready: not Ready");
        assert!(!runs(&pod(json!({"phase": "Pending"}))));
        assert!(!runs(&pod(json!({"phase": "Running"}))), "no container status: not known to run");
    }

    #[test]
    fn container_creating_is_not_fatal() {
        let p = pod(json!({"phase": "Pending", "containerStatuses": [{"name": "notebook", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}}]}));
        assert_eq!(judge_pod(&p), PodVerdict::Starting);
    }

    #[test]
    fn an_exited_container_fails_with_its_exit_code() {
        let p = pod(json!({"phase": "Running", "containerStatuses": [{"name": "notebook", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}));
        assert_eq!(judge_pod(&p), PodVerdict::Failed(Failure::new(FailureKind::OutOfMemory, "container notebook exited with code 137 (OOMKilled)")));
    }

    #[test]
    fn failed_phase_fails() {
        let p = pod(json!({"phase": "Failed", "reason": "Evicted", "message": "node ran out of memory"}));
        let PodVerdict::Failed(failure) = judge_pod(&p) else { panic!("must fail") };
        assert!(failure.message.contains("node ran out of memory"), "{failure:?}");
    }

    #[test]
    fn unschedulable_carries_the_scheduler_message() {
        let p = pod(json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient cpu."}]}));
        assert_eq!(judge_pod(&p), PodVerdict::Unschedulable("0/3 nodes are available: 3 Insufficient cpu.".into()));
    }

    #[test]
    fn deleting_pod_is_terminating() {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"}})).expect("pod");
        assert_eq!(judge_pod(&p), PodVerdict::Terminating);
    }

    #[test]
    fn kubelet_events_advance_progress_and_never_go_back() {
        let ev = |reason: &str, type_: &str| -> Event {
            serde_json::from_value(json!({"metadata": {"name": "e"}, "involvedObject": {}, "reason": reason, "type": type_, "message": "m"})).expect("event")
        };
        assert_eq!(progress_for_event(&ev("Scheduled", "Normal"), 30).progress, 50);
        assert_eq!(progress_for_event(&ev("Scheduled", "Normal"), 60).progress, 60);
        let warn = progress_for_event(&ev("FailedScheduling", "Warning"), 40);
        assert_eq!((warn.progress, warn.message.as_str()), (40, "Warning: FailedScheduling: m"));
    }

    #[test]
    fn progress_events_are_named_by_outcome_and_clamped() {
        assert_eq!(ProgressEvent::step(250, "x").progress, 100);
        assert_eq!(ProgressEvent::step(50, "m").event_name(), "progress");
        assert_eq!(ProgressEvent::ready("u").event_name(), "ready");
        assert_eq!(ProgressEvent::failed(Failure::new(FailureKind::Other, "f")).event_name(), "failed");
    }

    #[test]
    fn terminal_events_serialize_like_jupyterhub() {
        let ready = serde_json::to_value(ProgressEvent::ready("http://h/user/a/")).expect("json");
        assert_eq!(ready, json!({"progress": 100, "message": "Server ready at http://h/user/a/", "ready": true, "url": "http://h/user/a/"}));
        let failed = ProgressEvent::failed(Failure::new(FailureKind::Other, "boom"));
        assert!(failed.is_terminal());
        assert_eq!(serde_json::to_value(failed).expect("json"), json!({"progress": 100, "message": "boom", "failed": true}));
        assert!(!ProgressEvent::step(10, "x").is_terminal());
    }
}
