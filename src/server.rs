//! `fleetspawn serve`: composes the API, the web pages and the operations endpoints, watches
//! profiles.toml for edits, and shuts down gracefully.

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{FromRef, MatchedPath, Request, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use axum_extra::extract::cookie::Key;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::watch;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::api;
use crate::auth::{Auth, AuthConfig, AuthConfigError};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::profiles;
use crate::spawner::Spawner;
use crate::web::{self, Templates};

/// How long open connections may take to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight spawns get to reach a consistent point (ready, or failed and rolled
/// back) at shutdown. Give the Pod a `terminationGracePeriodSeconds` above this plus
/// [`DRAIN_TIMEOUT`].
pub const SPAWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Quiet time after the last file event before profiles.toml is reloaded.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(300);

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
    #[error("cannot watch {path} for edits: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the web templates do not compile: {0}")]
    Templates(#[from] minijinja::Error),
}

/// The error of the last profiles reload, shared between the watcher and the pages that show it.
#[derive(Clone, Default, Debug)]
pub struct ReloadStatus(Arc<RwLock<Option<String>>>);

impl ReloadStatus {
    /// The last reload's error, or `None` when it succeeded (or none happened).
    pub fn last_error(&self) -> Option<String> {
        self.0.read().map(|e| e.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn set(&self, error: Option<String>) {
        match self.0.write() {
            Ok(mut e) => *e = error,
            Err(poisoned) => *poisoned.into_inner() = error,
        }
    }
}

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
    pub fn new(spawner: Spawner, auth: Arc<Auth>, metrics: Metrics, reload: ReloadStatus, shutdown: ShutdownSignal) -> Result<AppState, ServeError> {
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

/// The whole HTTP application: API, web pages, operations endpoints, with request ids, request
/// logging, metrics and the body size limit.
pub fn app(state: AppState) -> Router {
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
                .layer(middleware::from_fn(json_body_limit_errors))
                .layer(RequestBodyLimitLayer::new(api::BODY_LIMIT)),
        )
        .with_state(state)
}

/// Most bytes of an oversized request body read (and dropped) before the 413 is sent.
const OVERSIZED_DRAIN_LIMIT: usize = 1024 * 1024;

/// Oversized bodies under `/api/`: a JSON 413 like every other API error, sent after reading
/// what the client is still sending (up to [`OVERSIZED_DRAIN_LIMIT`], briefly). Answering
/// with the body unread would close the connection on data the client is writing, and the
/// kernel's reset then often destroys the answer before the client reads it. Bodies with no
/// `Content-Length` reach the limit layer and the JSON extractor, which answer 413 as JSON too.
async fn json_body_limit_errors(req: Request, next: Next) -> Response {
    use futures::StreamExt;

    let is_api = req.uri().path().starts_with("/api/");
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        let message = format!("the request body is larger than {} bytes", api::BODY_LIMIT);
        api::ApiError::BadBody { status: StatusCode::PAYLOAD_TOO_LARGE, message }.into_response()
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
            let is_json = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            if is_api && response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
                return too_large();
            }
            response
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
    auth: AuthConfig,
    spawner: Spawner,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let auth = Arc::new(Auth::new(&auth)?);
    let watcher = watch_profiles(&config.profiles, spawner.clone(), metrics.clone())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = AppState::new(spawner.clone(), auth, metrics, watcher.status(), ShutdownSignal::new(stop_rx.clone()))?;
    let addr = config.listen.to_string();
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|source| ServeError::Bind { addr: addr.clone(), source })?;
    tracing::info!(addr = %addr, "listening");

    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, ending progress streams");
        // Nobody listening only means no stream is open.
        let _ = stop_tx.send(true);
    };
    let server = axum::serve(listener, app(state).into_make_service_with_connect_info::<SocketAddr>()).with_graceful_shutdown(signal);
    let drain_deadline = async move {
        ShutdownSignal::new(stop_rx).wait().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        result = server => result?,
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

/// Keeps profiles.toml watched while alive; dropping it stops the watching.
pub struct ProfilesWatcher {
    status: ReloadStatus,
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl ProfilesWatcher {
    /// The outcome of the last reload.
    pub fn status(&self) -> ReloadStatus {
        self.status.clone()
    }
}

impl Drop for ProfilesWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn content_hash(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

/// Watches `path` and swaps the spawner's profiles when its content changes.
///
/// The file's directory is watched rather than the file, so editors that replace the file and
/// Kubernetes ConfigMap updates (a symlink swap) are seen. Events are debounced
/// ([`RELOAD_DEBOUNCE`]) and a reload happens only when the content changed. An invalid edit
/// keeps the previous profiles: the error (with the file and line, as the profiles loader
/// reports it) is logged and kept in [`ProfilesWatcher::status`] for `/readyz` and the admin page.
pub fn watch_profiles(path: &Path, spawner: Spawner, metrics: Metrics) -> Result<ProfilesWatcher, ServeError> {
    let path = path.to_path_buf();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(OsString::from).unwrap_or_default();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        // Other files of the directory (a log written there, say) are not edits of the
        // profiles: counting them would keep the debounce from ever settling.
        Ok(e) if !matches!(e.kind, EventKind::Access(_)) && concerns_profiles(&e.paths, &name) => {
            // A full channel already holds a pending reload.
            let _ = tx.try_send(());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "profiles watcher error"),
    })
    .map_err(|source| ServeError::Watch { path: dir.clone(), source })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(|source| ServeError::Watch { path: dir.clone(), source })?;

    tracing::info!(path = %path.display(), "watching profiles for edits");
    let status = ReloadStatus::default();
    let task_status = status.clone();
    let task = tokio::spawn(async move {
        let mut last = content_hash(&path);
        while rx.recv().await.is_some() {
            // Debounce: wait until the directory has been quiet for a moment.
            loop {
                match tokio::time::timeout(RELOAD_DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let now = content_hash(&path);
            if now == last {
                continue;
            }
            last = now;
            reload_profiles(&path, &spawner, &metrics, &task_status).await;
        }
    });
    Ok(ProfilesWatcher { status, _watcher: watcher, task })
}

/// Whether a file event in the profiles' directory may have changed the profiles: it names the
/// file itself, or a Kubernetes ConfigMap volume's `..data` link or `..<timestamp>` directory
/// (swapped on every ConfigMap update), or no path at all.
fn concerns_profiles(paths: &[PathBuf], name: &OsStr) -> bool {
    paths.is_empty()
        || paths.iter().filter_map(|p| p.file_name()).any(|n| n == name || n.to_str().is_some_and(|n| n.starts_with("..")))
}

async fn reload_profiles(path: &Path, spawner: &Spawner, metrics: &Metrics, status: &ReloadStatus) {
    let owned = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || profiles::load(&owned).map_err(|e| e.to_string())).await;
    match loaded {
        Ok(Ok(set)) => {
            let contexts: Vec<String> = spawner.cluster_health().into_iter().map(|h| h.context).collect();
            let known: Vec<&str> = contexts.iter().map(String::as_str).collect();
            for warning in set.check_contexts(&known) {
                tracing::warn!(%warning, "profiles");
            }
            let n = set.iter().count();
            spawner.set_profiles(Arc::new(set));
            status.set(None);
            metrics.profile_reload(true);
            tracing::info!(path = %path.display(), profiles = n, "profiles reloaded");
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "invalid profiles edit; keeping the previous profiles");
            status.set(Some(error));
            metrics.profile_reload(false);
        }
        Err(join) => tracing::error!(error = %join, "profiles reload task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole router over a real spawner with no clusters: routes must not conflict (axum
    /// panics on that when the router is built), and the endpoints that need no cluster answer.
    #[tokio::test]
    async fn the_app_routes_requests() {
        use axum::body::Body;
        use axum::http::{Request, StatusCode};
        use tower::ServiceExt;

        let loaded = crate::kubeconfig::LoadedKubeconfig { paths: vec![], config: Default::default() };
        let fleet = crate::kubeconfig::Fleet::connect(&loaded).await;
        let set = profiles::parse("profiles.toml", "[defaults]\nimage = \"quay.io/jupyter/base-notebook:latest\"\ningress_public_url = \"http://x.example.org\"\n[[profiles]]\nslug = \"cpu\"\ndisplay_name = \"CPU\"\ncontext = \"east\"\n").unwrap();
        let renderer = crate::bundle::Renderer::new(None).unwrap();
        let spawner = Spawner::start(fleet, set, renderer, Default::default(), crate::metrics::Metrics::new()).await;
        let token = crate::auth::TokenConfig {
            name: "hub".into(),
            // sha256("t")
            sha256: "e3b98a4da31a127d4bde6e43033f66ba274cab0eb7eb1c70ec41402bf6273dd8".into(),
            role: crate::auth::Role::Hub,
        };
        let auth = Arc::new(Auth::new(&AuthConfig { tokens: vec![token], ..Default::default() }).unwrap());
        let (_tx, rx) = watch::channel(false);
        let state = AppState::new(spawner, auth, Metrics::new(), ReloadStatus::default(), ShutdownSignal::new(rx)).unwrap();
        let app = app(state);
        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        let cases = [
            ("/healthz", StatusCode::OK),
            ("/readyz", StatusCode::OK),
            ("/metrics", StatusCode::OK),
            ("/api/v1/openapi.json", StatusCode::OK),
            ("/static/app.css", StatusCode::OK),
            ("/api/v1/profiles", StatusCode::UNAUTHORIZED),
            ("/api/v1/nope", StatusCode::NOT_FOUND),
            ("/", StatusCode::UNAUTHORIZED),
        ];
        for (uri, status) in cases {
            let response = app.clone().oneshot(get(uri)).await.unwrap();
            assert_eq!(response.status(), status, "{uri}");
            assert!(response.headers().contains_key("x-request-id"), "{uri}");
        }
        let big = Request::put("/api/v1/users/a/server").header("content-type", "application/json").header("content-length", "71680").header("authorization", "Bearer t").body(Body::from(vec![b' '; 70 * 1024])).unwrap();
        let response = app.clone().oneshot(big).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()["content-type"], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "body_too_large", "{body}");
        let authed = |uri: &str| Request::get(uri).header("authorization", "Bearer t").body(Body::empty()).unwrap();
        assert_eq!(app.clone().oneshot(authed("/api/v1/profiles")).await.unwrap().status(), StatusCode::OK);
        assert_eq!(app.clone().oneshot(authed("/api/v1/instances")).await.unwrap().status(), StatusCode::FORBIDDEN);
        assert_eq!(app.clone().oneshot(authed("/api/v1/users/a/server")).await.unwrap().status(), StatusCode::NOT_FOUND);
        let metrics = app.oneshot(get("/metrics")).await.unwrap();
        let text = axum::body::to_bytes(metrics.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains(r#"fleetspawn_http_requests_total{route="/healthz",status="200"} 1"#), "{text}");
    }

    #[test]
    fn reload_status_round_trips() {
        let s = ReloadStatus::default();
        assert_eq!(s.last_error(), None);
        s.clone().set(Some("profiles.toml:3: bad".into()));
        assert_eq!(s.last_error().as_deref(), Some("profiles.toml:3: bad"));
        s.set(None);
        assert_eq!(s.last_error(), None);
    }

    #[tokio::test]
    async fn shutdown_signal_fires_once_sent() {
        let (tx, rx) = watch::channel(false);
        let waiting = tokio::spawn(ShutdownSignal::new(rx).wait());
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
    }

    #[test]
    fn only_events_about_the_profiles_file_count() {
        let name = OsStr::new("profiles.toml");
        let p = |s: &str| vec![PathBuf::from(s)];
        assert!(concerns_profiles(&p("/etc/fleetspawn/profiles.toml"), name));
        assert!(concerns_profiles(&p("/etc/fleetspawn/..data"), name));
        assert!(concerns_profiles(&p("/etc/fleetspawn/..2026_01_01_00_00_00.123"), name));
        assert!(concerns_profiles(&[], name));
        assert!(!concerns_profiles(&p("/etc/fleetspawn/daemon.log"), name));
        assert!(!concerns_profiles(&p("/etc/fleetspawn/profiles.toml.swp"), name));
    }

    #[test]
    fn content_hash_tells_edits_apart() {
        let dir = std::env::temp_dir().join(format!("fleetspawn-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("profiles.toml");
        std::fs::write(&file, "a").unwrap();
        let first = content_hash(&file);
        std::fs::write(&file, "b").unwrap();
        assert_ne!(first, content_hash(&file));
        assert_eq!(content_hash(&dir.join("missing")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
