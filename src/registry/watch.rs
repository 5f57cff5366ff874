//! The watch loop of one cluster: lists, then follows changes of this installation's Pods,
//! feeding every event to the index. Errors back off and re-list by themselves; a restart
//! signal or the periodic resync forces a fresh list.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::watch;

use super::Registry;

/// How often each cluster's watch is restarted with a fresh list, whatever happens: the bound
/// on how long a silently stalled watch can keep the index stale.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(600);

/// How long watch errors may go on before a cluster's instances are answered `unknown`.
pub const WATCH_ERROR_GRACE: Duration = Duration::from_secs(10);

/// Pods per page of the initial list: a large cluster's list is decoded a page at a time,
/// which bounds the memory peak while syncing (docs/benchmarks.md).
const PAGE_SIZE: u32 = 250;

impl Registry {
    /// Runs the watch of one cluster forever: lists, then follows changes; on errors it backs
    /// off and re-lists by itself. `restart` forces a fresh list (e.g. when the cluster comes
    /// back after an outage the watch may not have noticed).
    pub async fn watch_cluster(self, cluster: String, client: Client, mut restart: watch::Receiver<u64>) {
        let api: Api<Pod> = Api::all(client);
        loop {
            let config = watcher::Config::default().labels(&self.inner.selector).page_size(PAGE_SIZE);
            let mut stream = watcher::watcher(api.clone(), config).default_backoff().boxed();
            // A watch can stall without an error (a middlebox silently dropping the stream):
            // a fresh list every RESYNC_INTERVAL bounds how stale the index can get.
            let resync = tokio::time::sleep(RESYNC_INTERVAL);
            tokio::pin!(resync);
            // (first, latest) error of the current run of errors.
            let mut failing_since: Option<(tokio::time::Instant, tokio::time::Instant)> = None;
            loop {
                let next = tokio::select! {
                    next = stream.next() => next,
                    changed = restart.changed() => {
                        if changed.is_err() { return; }
                        break;
                    }
                    () = &mut resync => break,
                };
                match next {
                    None => break,
                    Some(Ok(event)) => {
                        failing_since = None;
                        let done = matches!(event, Event::InitDone);
                        self.apply(&cluster, &event);
                        if done {
                            tracing::info!(cluster, pods = self.pods_per_cluster().get(&cluster).copied().unwrap_or(0), "registry synced");
                        }
                    }
                    Some(Err(e)) => {
                        // A dropped connection (an API server restart, a load balancer's idle
                        // timeout) is resumed by the watcher from where it was: the index
                        // stays right and the cluster synced. Only errors that last make the
                        // cluster's instances unknown, and then the watch starts over with a
                        // fresh list, which makes it synced again as soon as it can.
                        self.inner.metrics.watch_restart(&cluster);
                        let now = tokio::time::Instant::now();
                        // Errors far apart (with a working watch between them, even one that
                        // brought no event) are separate interruptions, not one failure.
                        let since = match failing_since {
                            Some((first, last)) if now.duration_since(last) < WATCH_ERROR_GRACE => first,
                            _ => now,
                        };
                        failing_since = Some((since, now));
                        if now.duration_since(since) < WATCH_ERROR_GRACE {
                            tracing::info!(cluster, error = %e, "watch interrupted; resuming");
                            continue;
                        }
                        tracing::warn!(cluster, error = %e, "watch failing; instances unknown until a fresh list");
                        self.mark_unreachable(&cluster, &e.to_string());
                        break;
                    }
                }
            }
            tracing::info!(cluster, "restarting the watch");
            self.inner.metrics.watch_restart(&cluster);
        }
    }
}
