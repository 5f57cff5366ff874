//! What every handler can reach, and the shutdown signal long-lived responses end on.

use std::sync::Arc;

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

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub spawner: Spawner,
    pub auth: Arc<Auth>,
    pub metrics: Metrics,
    pub reload: ReloadStatus,
    pub templates: Arc<Templates>,
    pub shutdown: ShutdownSignal,
}

impl AppState {
    /// Builds the state, compiling the web templates.
    pub fn new(spawner: Spawner, auth: Arc<Auth>, metrics: Metrics, reload: ReloadStatus, shutdown: ShutdownSignal) -> Result<AppState, minijinja::Error> {
        Ok(AppState { spawner, auth, metrics, reload, templates: Arc::new(Templates::new()?), shutdown })
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

    #[tokio::test]
    async fn shutdown_signal_fires_once_sent() {
        let (tx, rx) = watch::channel(false);
        let waiting = tokio::spawn(ShutdownSignal::new(rx).wait());
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
    }
}
