//! `fleetspawn serve`: composes the API, the web pages and the operations endpoints, watches
//! profiles.toml for edits, and shuts down gracefully.

pub mod api;
pub mod auth;
pub mod error;
pub mod extract;
pub mod listen;
pub mod pages;
pub mod state;
pub mod web;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::watch;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::{Config, HttpConfig};
use crate::http::auth::{Auth, AuthConfigError};
use crate::http::state::{AppState, ShutdownSignal};
use crate::metrics::Metrics;
use crate::reload::{watch_profiles, WatchError};
use crate::service::Spawner;

/// How long open connections may take to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight spawns get to reach a consistent point (ready, or failed and rolled
/// back) at shutdown. Give the Pod a `terminationGracePeriodSeconds` above this plus
/// [`DRAIN_TIMEOUT`].
pub const SPAWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error("the web templates do not compile: {0}")]
    Templates(#[from] minijinja::Error),
}

/// The whole HTTP application: API, web pages, operations endpoints, with request ids, request
/// logging, metrics and the body size limit.
pub fn app(state: AppState, limits: &HttpConfig) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let trace = TraceLayer::new_for_http()
        .make_span_with(|req: &Request| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path(), caller = tracing::field::Empty)
        })
        .on_response(DefaultOnResponse::new().level(Level::INFO));
    Router::new()
        .merge(api::router())
        .merge(api::ops_router())
        .merge(web::router())
        .layer(middleware::from_fn_with_state(state.metrics.clone(), count_request))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(trace)
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(middleware::from_fn(json_errors))
                .layer(middleware::from_fn(error::admin_details))
                .layer(RequestBodyLimitLayer::new(api::BODY_LIMIT))
                .layer(TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, limits.request_timeout))
                .layer(RequestBodyTimeoutLayer::new(limits.body_timeout)),
        )
        .with_state(state)
}

/// Most bytes of an oversized request body read (and dropped) before the 413 is sent.
const OVERSIZED_DRAIN_LIMIT: usize = 1024 * 1024;

/// The limit layers' answers under `/api/` as JSON like every other API error: 413 for an
/// oversized body, sent after reading what the client is still sending (up to
/// [`OVERSIZED_DRAIN_LIMIT`], briefly; answering with the body unread would close the
/// connection on data the client is writing, and the kernel's reset then often destroys the
/// answer before the client reads it), and 504 for `http.request_timeout`. Bodies with no
/// `Content-Length` reach the limit layer and the JSON extractor, which answer 413 as JSON too.
async fn json_errors(req: Request, next: Next) -> Response {
    use futures::StreamExt;

    let is_api = req.uri().path().starts_with("/api/");
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        let message = format!("the request body is larger than {} bytes", api::BODY_LIMIT);
        crate::http::error::ApiError::BadBody { status: StatusCode::PAYLOAD_TOO_LARGE, message }.into_response()
    };
    match declared {
        Some(n) if is_api && n > api::BODY_LIMIT as u64 => {
            if n <= OVERSIZED_DRAIN_LIMIT as u64 {
                let mut data = req.into_body().into_data_stream();
                let drain = async { while let Some(Ok(_)) = data.next().await {} };
                // A client that stops sending only delays its own answer, briefly.
                let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
            }
            let mut response = too_large();
            response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            response
        }
        _ => {
            let response = next.run(req).await;
            let is_json = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
            match response.status() {
                StatusCode::PAYLOAD_TOO_LARGE if is_api && !is_json => too_large(),
                StatusCode::GATEWAY_TIMEOUT if is_api && !is_json => crate::http::error::ApiError::RequestTimeout.into_response(),
                _ => response,
            }
        }
    }
}

async fn count_request(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(req).await;
    metrics.http_request(&route, response.status().as_u16());
    response
}

/// Runs the daemon until `shutdown` resolves, then stops accepting connections, ends progress
/// streams, gives open requests [`DRAIN_TIMEOUT`] to finish, and waits for in-flight spawns to
/// reach a consistent point.
pub async fn serve(
    config: &Config,
    auth: crate::config::AuthConfig,
    spawner: Spawner,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let auth = Arc::new(Auth::new(&auth)?);
    let watcher = watch_profiles(&config.profiles, spawner.clone(), metrics.clone())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = AppState::new(spawner.clone(), auth, metrics.clone(), watcher.status(), ShutdownSignal::new(stop_rx.clone()))?;
    let addr = config.listen.to_string();
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|source| ServeError::Bind { addr: addr.clone(), source })?;
    tracing::info!(addr = %addr, "listening");

    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, ending progress streams");
        // Nobody listening only means no stream is open.
        let _ = stop_tx.send(true);
    };
    let server = listen::serve(listener, app(state, &config.http), &config.http, metrics, signal);
    let drain_deadline = async move {
        ShutdownSignal::new(stop_rx).wait().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        () = server => {}
        () = drain_deadline => tracing::warn!("requests still open after {DRAIN_TIMEOUT:?}; closing them"),
    }
    tracing::info!("waiting for in-flight spawns to reach a consistent point");
    spawner.shutdown(SPAWN_DRAIN_TIMEOUT).await;
    drop(watcher);
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C: pass it to [`serve`].
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
