//! What every handler can reach, and the shutdown signal long-lived responses end on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::FromRef;
use axum_extra::extract::cookie::Key;
use tokio::sync::watch;

use crate::http::auth::Auth;
use crate::http::pages::Templates;
use crate::metrics::Metrics;
use crate::reload::ReloadStatus;
use crate::service::Spawner;

/// Resolves once the daemon starts shutting down; long-lived responses (progress streams) end then.
#[derive(Clone, Debug)]
pub struct ShutdownSignal(watch::Receiver<bool>);

impl ShutdownSignal {
    /// A signal that fires when `true` is sent on the channel.
    pub fn new(rx: watch::Receiver<bool>) -> ShutdownSignal {
        ShutdownSignal(rx)
    }

    /// Waits for the shutdown (forever if the sender is dropped without sending).
    pub async fn wait(mut self) {
        if self.0.wait_for(|stopping| *stopping).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Most progress streams open at once.
pub const MAX_STREAMS: usize = 1024;
/// Most progress streams open at once for one user's servers: a client cannot take every
/// stream (and the memory and tasks behind them) for itself.
pub const MAX_STREAMS_PER_USER: usize = 8;

/// The progress streams open now, in all and per user.
#[derive(Default)]
pub struct Streams {
    open: Mutex<(usize, HashMap<String, usize>)>,
}

/// One open stream, counted until dropped.
pub struct StreamGuard {
    streams: Arc<Streams>,
    user: String,
}

impl Streams {
    /// Counts a stream of `user`'s, unless that would pass a limit.
    pub fn open(self: &Arc<Self>, user: &str) -> Option<StreamGuard> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, by_user) = &mut *open;
        let mine = by_user.entry(user.to_string()).or_default();
        if *total >= MAX_STREAMS || *mine >= MAX_STREAMS_PER_USER {
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(StreamGuard { streams: self.clone(), user: user.to_string() })
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, by_user) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = by_user.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_user.remove(&self.user);
            }
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub spawner: Spawner,
    /// The progress streams open now.
    pub streams: Arc<Streams>,
    pub auth: Arc<Auth>,
    pub metrics: Metrics,
    pub reload: ReloadStatus,
    pub templates: Arc<Templates>,
    pub shutdown: ShutdownSignal,
}

impl AppState {
    /// Builds the state, compiling the web templates.
    pub fn new(spawner: Spawner, auth: Arc<Auth>, metrics: Metrics, reload: ReloadStatus, shutdown: ShutdownSignal) -> Result<AppState, minijinja::Error> {
        Ok(AppState { spawner, streams: Arc::default(), auth, metrics, reload, templates: Arc::new(Templates::new()?), shutdown })
    }
}

impl FromRef<AppState> for Arc<Auth> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

impl FromRef<AppState> for Key {
    fn from_ref(state: &AppState) -> Self {
        state.auth.cookie_key().clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn streams_are_limited_per_user_and_freed_when_they_end() {
        let streams = Arc::new(Streams::default());
        let held: Vec<StreamGuard> = (0..MAX_STREAMS_PER_USER).map(|_| streams.open("mallory").expect("within the limit")).collect();
        assert!(streams.open("mallory").is_none(), "one user cannot open more");
        assert!(streams.open("alice").is_some(), "another user still can");
        drop(held);
        assert!(streams.open("mallory").is_some(), "ended streams are freed");
    }

    #[tokio::test]
    async fn shutdown_signal_fires_once_sent() {
        let (tx, rx) = watch::channel(false);
        let waiting = tokio::spawn(ShutdownSignal::new(rx).wait());
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
    }
}
