//! The REST API under `/api/v1`, and the operations endpoints `/healthz`, `/readyz`, `/metrics`.
//!
//! Every error is JSON `{"error": "<code>", "detail": "<sentence>"}` (plus `"field"` when one
//! input is at fault) with the matching status. The wire types live here, converted from the
//! spawner's types, so the OpenAPI document (derived from these types and the handlers'
//! annotations, served at `/api/v1/openapi.json`) describes exactly what is sent.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::LazyLock;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use axum_extra::extract::WithRejection;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, OpenApi};

use fleetspawn_core::instance::{InstanceState, InstanceView, SpawnEnd};
use fleetspawn_core::lifecycle::ProgressEvent;

use crate::config::Role;
use crate::http::auth::{validate_name, Caller};
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::http::wire::{self, ChoiceInfo, ErrorBody, FreeTextInfo, InstanceFilter, OptionInfo, ProfileInfo, Readiness, ServerPath, StartRequest, StopQuery};
use crate::registry::ClusterSync;
use crate::service::{SpawnError, SpawnRequest};

/// What `/readyz` says of a failed profiles reload to callers who are not administrators.
pub const RELOAD_FAILED: &str = "the last profiles edit is invalid; the previous profiles are in use (details for administrators)";

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Most entries in `options` or in `env`.
pub const MAX_MAP_ENTRIES: usize = 64;
/// Longest option value (free-text options included).
pub const MAX_OPTION_VALUE: usize = 1024;
/// Longest environment variable value.
pub const MAX_ENV_VALUE: usize = 8 * 1024;
/// Longest option key, environment variable name or profile slug.
pub const MAX_KEY_LEN: usize = 128;

// ---------------------------------------------------------------------------------------------
// Validation and authorization
// ---------------------------------------------------------------------------------------------

/// Checks the user and server names of a path.
pub fn validate_path(p: &ServerPath) -> Result<(), ApiError> {
    validate_name(&p.user).map_err(|m| ApiError::invalid("user", m))?;
    if p.user.is_empty() {
        return Err(ApiError::invalid("user", "is empty"));
    }
    validate_name(&p.server).map_err(|m| ApiError::invalid("server", m))
}

fn is_key(s: &str, extra: &[char]) -> bool {
    !s.is_empty() && s.len() <= MAX_KEY_LEN && s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

/// Checks the shape of a start request: sizes, names and characters. Option values are checked
/// against the profile (choices, regexes) by the spawner.
pub fn validate_start(req: &StartRequest) -> Result<(), ApiError> {
    if let Some(slug) = &req.profile {
        if !is_key(slug, &['-', '_', '.']) {
            return Err(ApiError::invalid("profile", "must be a profile slug (letters, digits, '-', '_', '.')"));
        }
    }
    if req.options.len() > MAX_MAP_ENTRIES {
        return Err(ApiError::invalid("options", format!("has more than {MAX_MAP_ENTRIES} entries")));
    }
    for (key, value) in &req.options {
        let field = format!("options.{key}");
        if !is_key(key, &['-', '_', '.']) {
            return Err(ApiError::invalid(field, "is not an option name"));
        }
        if value.len() > MAX_OPTION_VALUE {
            return Err(ApiError::invalid(field, format!("is longer than {MAX_OPTION_VALUE} bytes")));
        }
        if value.chars().any(char::is_control) {
            return Err(ApiError::invalid(field, "contains control characters"));
        }
    }
    if req.hub_parameters.len() > MAX_MAP_ENTRIES {
        return Err(ApiError::invalid("hub_parameters", format!("has more than {MAX_MAP_ENTRIES} entries")));
    }
    if let Some(key) = req.hub_parameters.keys().find(|k| !is_key(k, &['_'])) {
        return Err(ApiError::invalid(format!("hub_parameters.{key}"), "is not a parameter name (letters, digits and '_')"));
    }
    if req.env.len() > MAX_MAP_ENTRIES {
        return Err(ApiError::invalid("env", format!("has more than {MAX_MAP_ENTRIES} entries")));
    }
    for (key, value) in &req.env {
        let field = format!("env.{key}");
        if !is_key(key, &['_']) || key.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(ApiError::invalid(field, "is not an environment variable name"));
        }
        if value.len() > MAX_ENV_VALUE {
            return Err(ApiError::invalid(field, format!("is longer than {MAX_ENV_VALUE} bytes")));
        }
        if value.contains('\0') {
            return Err(ApiError::invalid(field, "contains a NUL character"));
        }
    }
    if let Some(prefix) = &req.url_prefix {
        let ok = prefix.starts_with('/')
            && prefix.len() <= 255
            && !prefix.split('/').any(|seg| seg == "..")
            && !prefix.chars().any(|c| c.is_control() || c.is_whitespace());
        if !ok {
            return Err(ApiError::invalid("url_prefix", "must be an absolute path without spaces or '..'"));
        }
    }
    Ok(())
}

/// Fails unless `caller` may act for `user`.
pub fn authorize(caller: &Caller, user: &str) -> Result<(), ApiError> {
    if caller.can_act_for(user) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("{} may not act for user {user:?}", caller.label())))
    }
}

fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden("this needs an administrator".into()))
    }
}

/// Validates and authorizes a start request, then starts (or returns) the server. Shared by the
/// API and the web form.
pub async fn start_server(state: &AppState, caller: &Caller, path: &ServerPath, req: StartRequest) -> Result<InstanceView, ApiError> {
    validate_path(path)?;
    authorize(caller, &path.user)?;
    validate_start(&req)?;
    // The environment and the path a server is routed under are the hub's to give: from
    // anyone else they would let a user take another user's route, cookies and tokens.
    if !matches!(caller, Caller::Token { role: Role::Hub, .. }) {
        // So are the hub's parameters (a uid, a project): a user must not forge them.
        for (field, given) in [("url_prefix", req.url_prefix.is_some()), ("env", !req.env.is_empty()), ("hub_parameters", !req.hub_parameters.is_empty())] {
            if given {
                return Err(ApiError::Forbidden(format!("only the hub may set {field}")));
            }
        }
    }
    let profiles = state.spawner.profiles();
    let profile = match &req.profile {
        Some(slug) => profiles.get(slug),
        None => profiles.default_profile(),
    }
    .ok_or_else(|| SpawnError::UnknownProfile(req.profile.clone().unwrap_or_default()))?;
    if !caller.can_use_profile(&profile.allowed_groups) {
        return Err(ApiError::Forbidden(format!("profile {:?} is limited to other groups", profile.slug)));
    }
    tracing::info!(caller = %caller.label(), user = %path.user, server = %path.server, profile = %profile.slug,
        options = ?req.options, env_vars = req.env.len(), "start requested");
    let request = SpawnRequest {
        user: path.user.clone(),
        server: path.server.clone(),
        profile: profile.slug.clone(),
        options: req.options,
        env: req.env,
        url_prefix: req.url_prefix,
        hub_parameters: req.hub_parameters,
    };
    Ok(state.spawner.spawn(request).await?)
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

type ApiPath = WithRejection<Path<ServerPath>, ApiError>;

/// `GET /profiles` query parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default)]
pub struct ProfilesQuery {
    /// For hub and admin tokens (which may use every profile): list only the profiles a user in
    /// these groups may use, comma-separated (empty: a user in no group). Ignored for others.
    pub groups: Option<String>,
}

/// The profiles the caller may use, with their options; `?groups=` lets the hub ask for one
/// of its users.
#[utoipa::path(get, path = "/api/v1/profiles", tag = "profiles", params(ProfilesQuery),
    responses((status = 200, body = Vec<ProfileInfo>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_profiles(
    State(state): State<AppState>,
    caller: Caller,
    WithRejection(Query(q), _): WithRejection<Query<ProfilesQuery>, ApiError>,
) -> Json<Vec<ProfileInfo>> {
    let caller = match (&caller, q.groups) {
        (Caller::Token { role: Role::Hub | Role::Admin, .. }, Some(groups)) => {
            Caller::User { user: String::new(), groups: groups.split(',').map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect(), admin: false }
        }
        _ => caller,
    };
    Json(wire::visible_profiles(&state.spawner.profiles(), &caller))
}

/// Starts a server, or returns the one starting or running.
#[utoipa::path(put, path = "/api/v1/users/{user}/servers/{server}", tag = "servers", params(ServerPath),
    request_body = StartRequest,
    responses(
        (status = 200, description = "Already running", body = wire::InstanceView),
        (status = 202, description = "Starting; follow `/progress`", body = wire::InstanceView),
        (status = 400, description = "Bad input (the field is named)", body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, description = "Unknown profile", body = ErrorBody),
        (status = 409, description = "Stopping, or too many servers", body = ErrorBody),
        (status = 429, description = "Too many spawns in flight", body = ErrorBody),
        (status = 503, description = "Cluster unavailable", body = ErrorBody)))]
async fn start(
    State(state): State<AppState>,
    caller: Caller,
    WithRejection(Path(path), _): ApiPath,
    WithRejection(Json(body), _): WithRejection<Json<StartRequest>, ApiError>,
) -> Result<(StatusCode, Json<wire::InstanceView>), ApiError> {
    let view = start_server(&state, &caller, &path, body).await?;
    let status = if view.state == InstanceState::Running { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(view.into())))
}

/// Same as `PUT`.
#[utoipa::path(post, path = "/api/v1/users/{user}/servers/{server}", tag = "servers", params(ServerPath),
    request_body = StartRequest,
    responses((status = 200, body = wire::InstanceView), (status = 202, body = wire::InstanceView), (status = "4XX", body = ErrorBody)))]
async fn start_post(
    state: State<AppState>,
    caller: Caller,
    path: ApiPath,
    body: WithRejection<Json<StartRequest>, ApiError>,
) -> Result<(StatusCode, Json<wire::InstanceView>), ApiError> {
    start(state, caller, path, body).await
}

/// A server's state, URL, cluster, profile, times and cause of failure.
#[utoipa::path(get, path = "/api/v1/users/{user}/servers/{server}", tag = "servers", params(ServerPath),
    responses((status = 200, body = wire::InstanceView), (status = 404, body = ErrorBody)))]
async fn status(State(state): State<AppState>, caller: Caller, WithRejection(Path(path), _): ApiPath) -> Result<Json<wire::InstanceView>, ApiError> {
    validate_path(&path)?;
    authorize(&caller, &path.user)?;
    state.spawner.status(&path.user, &path.server).map(|v| Json(v.into())).map_err(|e| not_found_names(e, &path))
}

/// [`SpawnError::NotFound`] with the user and server named.
pub fn not_found_names(e: SpawnError, path: &ServerPath) -> ApiError {
    match e {
        SpawnError::NotFound => no_server(path),
        other => other.into(),
    }
}

fn no_server(path: &ServerPath) -> ApiError {
    ApiError::NotFound(format!("user {:?} has no server {:?}", path.user, path.server))
}

/// Stops a server (idempotent); `?remove=true` also deletes its storage.
#[utoipa::path(delete, path = "/api/v1/users/{user}/servers/{server}", tag = "servers", params(ServerPath, StopQuery),
    responses((status = 204, description = "Stopped (or was not running)"), (status = 403, body = ErrorBody)))]
async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    WithRejection(Path(path), _): ApiPath,
    WithRejection(Query(q), _): WithRejection<Query<StopQuery>, ApiError>,
) -> Result<StatusCode, ApiError> {
    validate_path(&path)?;
    authorize(&caller, &path.user)?;
    tracing::info!(caller = %caller.label(), user = %path.user, server = %path.server, remove = q.remove, "stop requested");
    state.spawner.stop(&path.user, &path.server, q.remove).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Server-Sent Events with the spawn's progress: the history first, then live events; the last
/// one is named `ready` (with `url`) or `failed` (the cause in `message`).
#[utoipa::path(get, path = "/api/v1/users/{user}/servers/{server}/progress", tag = "servers", params(ServerPath),
    responses((status = 200, content_type = "text/event-stream", body = wire::ProgressEvent), (status = 404, body = ErrorBody),
        (status = 429, description = "Too many progress streams open for this user's servers", body = ErrorBody)))]
async fn progress(
    State(state): State<AppState>,
    caller: Caller,
    WithRejection(Path(path), _): ApiPath,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    validate_path(&path)?;
    authorize(&caller, &path.user)?;
    let log = state.spawner.progress(&path.user, &path.server).ok_or_else(|| no_server(&path))?;
    // The log of a spawn that became ready outlives the server: once it is stopped, its old
    // `ready` event (with a URL that no longer answers) must not be replayed. A failed spawn's
    // log stays readable, its cause is what the user needs.
    let last = log.last();
    let ready_then_stopped =
        matches!(SpawnEnd::of(last.as_ref()), Some(SpawnEnd::Ready(_))) && matches!(state.spawner.status(&path.user, &path.server), Err(SpawnError::NotFound));
    if ready_then_stopped {
        return Err(no_server(&path));
    }
    let guard =
        state.streams.open(&path.user).ok_or_else(|| ApiError::TooManyStreams { user: path.user.clone(), limit: crate::http::state::MAX_STREAMS_PER_USER })?;
    // The guard lives as long as the stream: the count goes down when it ends or the client goes.
    let events = log
        .subscribe()
        .map(move |e| {
            let _open = &guard;
            Ok(sse_event(e))
        })
        .take_until(state.shutdown.clone().wait());
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// One SSE event for a progress message.
pub fn sse_event(p: ProgressEvent) -> Event {
    let name = p.event_name();
    // Serializing a struct of strings and numbers cannot fail.
    let data = serde_json::to_string(&wire::ProgressEvent::from(p)).unwrap_or_default();
    Event::default().event(name).data(data)
}

/// Every instance across clusters (administrators only), filtered.
#[utoipa::path(get, path = "/api/v1/instances", tag = "admin", params(InstanceFilter),
    responses((status = 200, body = Vec<wire::InstanceView>), (status = 403, body = ErrorBody)))]
async fn instances(
    State(state): State<AppState>,
    caller: Caller,
    WithRejection(Query(filter), _): WithRejection<Query<InstanceFilter>, ApiError>,
) -> Result<Json<Vec<wire::InstanceView>>, ApiError> {
    require_admin(&caller)?;
    Ok(Json(state.spawner.list().into_iter().filter(|i| filter.matches(i)).map(wire::InstanceView::from).collect()))
}

/// The health of each cluster (administrators and the hub).
#[utoipa::path(get, path = "/api/v1/clusters", tag = "admin",
    responses((status = 200, body = Vec<wire::Health>), (status = 403, body = ErrorBody)))]
async fn clusters(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<wire::Health>>, ApiError> {
    if !(caller.is_admin() || matches!(&caller, Caller::Token { role: Role::Hub, .. })) {
        return Err(ApiError::Forbidden("cluster health is for administrators and the hub".into()));
    }
    Ok(Json(state.spawner.cluster_health().into_iter().map(wire::Health::from).collect()))
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the registry is synced for every reachable cluster; the body lists what is not,
/// and whether the last profiles reload failed (which does not make the daemon unready). The
/// reload error's text (file, line, the profile's content) is shown to administrators only;
/// anyone else gets [`RELOAD_FAILED`].
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(state): State<AppState>, caller: Result<Caller, ApiError>) -> (StatusCode, Json<Readiness>) {
    let unsynced = syncing_clusters(&state.spawner.registry().sync_states());
    let ready = unsynced.is_empty();
    let admin = caller.is_ok_and(|c| c.is_admin());
    let profiles_error = state.reload.last_error().map(|e| if admin { e } else { RELOAD_FAILED.to_string() });
    let body = Readiness { ready, unsynced_clusters: unsynced, profiles_error };
    (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

/// The reachable clusters whose registry is not synced yet. An unreachable cluster does not
/// make the daemon unready: the others still serve, and restarting would not bring it back.
pub fn syncing_clusters(states: &BTreeMap<String, ClusterSync>) -> Vec<String> {
    states.iter().filter(|(_, s)| **s == ClusterSync::Syncing).map(|(c, _)| c.clone()).collect()
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "application/openmetrics-text", body = String)))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
}

async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON.as_str())
}

async fn unknown_api_route() -> ApiError {
    ApiError::NotFound("no such API route".into())
}

// ---------------------------------------------------------------------------------------------
// Routers and the OpenAPI document
// ---------------------------------------------------------------------------------------------

/// The routes under `/api/v1`.
pub fn router() -> Router<AppState> {
    let server = || get(status).put(start).post(start_post).delete(stop);
    Router::new()
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/v1/profiles", get(list_profiles))
        .route("/api/v1/users/{user}/server", server())
        .route("/api/v1/users/{user}/server/progress", get(progress))
        // The default server's name is empty: `/servers/` is the same server as `/server`.
        .route("/api/v1/users/{user}/servers/", server())
        .route("/api/v1/users/{user}/servers/{server}", server())
        .route("/api/v1/users/{user}/servers/{server}/progress", get(progress))
        .route("/api/v1/instances", get(instances))
        .route("/api/v1/clusters", get(clusters))
        .route("/api/v1/{*rest}", axum::routing::any(unknown_api_route))
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn ops_router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "fleetspawn", description = "Start, watch and stop per-user servers across many Kubernetes clusters."),
    paths(list_profiles, start, start_post, status, stop, progress, instances, clusters, healthz, readyz, metrics),
    components(schemas(ErrorBody, wire::InstanceView, wire::InstanceState, wire::ProgressEvent, ProfileInfo, OptionInfo, ChoiceInfo, FreeTextInfo, StartRequest, wire::Health, Readiness)),
    modifiers(&Security),
    security(("token" = [])),
)]
struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token from the daemon's config (role admin, hub, or one user)"))
                    .build(),
            ),
        );
        add_default_server_routes(openapi);
    }
}

/// Documents `/users/{user}/server[...]` (the default server) as a copy of the named-server
/// routes without the `server` parameter, so both stay in step.
fn add_default_server_routes(openapi: &mut utoipa::openapi::OpenApi) {
    let copies: Vec<(String, utoipa::openapi::path::PathItem)> = openapi
        .paths
        .paths
        .iter()
        .filter(|(path, _)| path.contains("/servers/{server}"))
        .map(|(path, item)| {
            let mut item = item.clone();
            let ops: [&mut Option<Operation>; 4] = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete];
            for op in ops.into_iter().flatten() {
                if let Some(params) = op.parameters.as_mut() {
                    params.retain(|p| !matches!(p, RefOr::T(p) if p.name == "server"));
                }
                op.operation_id = op.operation_id.as_ref().map(|id| format!("{id}_default"));
                op.summary = op.summary.as_ref().map(|s| format!("{s} (default server)"));
            }
            (path.replace("/servers/{server}", "/server"), item)
        })
        .collect();
    openapi.paths.paths.extend(copies);
}

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The OpenAPI document as JSON, built once.
static OPENAPI_JSON: LazyLock<String> = LazyLock::new(|| {
    openapi().to_pretty_json().unwrap_or_else(|e| {
        tracing::error!(error = %e, "encoding the OpenAPI document");
        String::from("{}")
    })
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::auth::AuthError;
    use crate::http::wire::visible_profiles;
    use fleetspawn_core::profiles::{OptionError, ProfileSet};

    fn not_a_choice() -> OptionError {
        OptionError::NotAChoice { option: "image".into(), value: "x".into(), choices: "base, scipy".into() }
    }

    fn start_req(options: &[(&str, &str)], env: &[(&str, &str)]) -> StartRequest {
        StartRequest {
            options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    fn field_of(r: Result<(), ApiError>) -> String {
        match r {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn spawn_errors_map_to_statuses_and_codes() {
        let cases: Vec<(SpawnError, u16, &str)> = vec![
            (SpawnError::UnknownProfile("x".into()), 404, "unknown_profile"),
            (SpawnError::BadOption(not_a_choice()), 400, "bad_option"),
            (SpawnError::NoHealthyCluster(fleetspawn_core::placement::NoHealthyCluster { unhealthy: vec![] }), 503, "no_healthy_cluster"),
            (SpawnError::StopTimeout(std::time::Duration::from_secs(30)), 504, "stop_timeout"),
            (SpawnError::TooManySpawns { limit: 3 }, 429, "too_many_spawns"),
            (SpawnError::TooManySpawnsForUser { user: "a".into(), limit: 2 }, 429, "too_many_spawns_for_user"),
            (SpawnError::TooManyServers { user: "a".into(), limit: 2 }, 409, "too_many_servers"),
            (SpawnError::ClusterUnavailable { context: "east".into() }, 503, "cluster_unavailable"),
            (SpawnError::Busy, 409, "busy"),
            (SpawnError::NotFound, 404, "not_found"),
            (
                SpawnError::Kubernetes(crate::kube::objects::ObjectError { object: "Pod jupyter/x".into(), message: "denied".into(), code: Some(403) }),
                502,
                "kubernetes_error",
            ),
        ];
        for (e, status, code) in cases {
            let e = ApiError::from(e);
            assert_eq!((e.status().as_u16(), e.code()), (status, code), "{e:?}");
            assert!(!e.user_message().is_empty());
        }
        assert_eq!(ApiError::from(AuthError::Csrf).status(), StatusCode::FORBIDDEN);
        assert_eq!(ApiError::from(AuthError::BadToken).status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn error_bodies_are_json_with_the_field() {
        let response = ApiError::from(SpawnError::BadOption(not_a_choice())).into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let bytes = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"], "bad_option");
        assert_eq!(body["field"], "options.image");
        assert!(body["detail"].as_str().unwrap().contains("is not one of"));
        let busy = ApiError::from(SpawnError::TooManySpawns { limit: 1 }).into_response();
        assert_eq!(busy.headers()[header::RETRY_AFTER], "10");
        let anon = ApiError::from(AuthError::Missing).into_response();
        assert_eq!(anon.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn start_requests_are_validated_with_the_field_named() {
        assert!(validate_start(&start_req(&[("image", "python:3.12")], &[("JUPYTERHUB_API_TOKEN", "x")])).is_ok());
        assert_eq!(field_of(validate_start(&start_req(&[("bad key", "x")], &[]))), "options.bad key");
        assert_eq!(field_of(validate_start(&start_req(&[("image", "a\nb")], &[]))), "options.image");
        let long = "x".repeat(MAX_OPTION_VALUE + 1);
        assert_eq!(field_of(validate_start(&start_req(&[("image", &long)], &[]))), "options.image");
        assert_eq!(field_of(validate_start(&start_req(&[], &[("1ABC", "x")]))), "env.1ABC");
        assert_eq!(field_of(validate_start(&start_req(&[], &[("A-B", "x")]))), "env.A-B");
        assert_eq!(field_of(validate_start(&start_req(&[], &[("A", "x\0")]))), "env.A");
        let params = |key: &str| StartRequest { hub_parameters: [(key.to_string(), serde_json::json!(1))].into(), ..Default::default() };
        assert!(validate_start(&params("uid")).is_ok());
        assert_eq!(field_of(validate_start(&params("u-id"))), "hub_parameters.u-id");
        assert_eq!(field_of(validate_start(&params(&"u".repeat(300)))), format!("hub_parameters.{}", "u".repeat(300)));
        let many: Vec<(String, String)> = (0..=MAX_MAP_ENTRIES).map(|i| (format!("k{i}"), String::new())).collect();
        let req = StartRequest { options: many.into_iter().collect(), ..Default::default() };
        assert_eq!(field_of(validate_start(&req)), "options");
        for bad in ["relative/", "/a/../b", "/a b", "/a\n"] {
            let req = StartRequest { url_prefix: Some(bad.into()), ..Default::default() };
            assert_eq!(field_of(validate_start(&req)), "url_prefix", "{bad:?}");
        }
        let req = StartRequest { url_prefix: Some("/user/alice/".into()), profile: Some("gpu-large".into()), ..Default::default() };
        assert!(validate_start(&req).is_ok());
        let req = StartRequest { profile: Some("../etc".into()), ..Default::default() };
        assert_eq!(field_of(validate_start(&req)), "profile");
    }

    #[test]
    fn start_request_bodies_reject_unknown_fields() {
        assert!(serde_json::from_str::<StartRequest>(r#"{"profile":"cpu","image":"x"}"#).is_err());
        let empty: StartRequest = serde_json::from_str("{}").unwrap();
        assert!(empty.profile.is_none() && empty.options.is_empty());
    }

    #[test]
    fn paths_are_validated() {
        let p = |user: &str, server: &str| ServerPath { user: user.into(), server: server.into() };
        assert!(validate_path(&p("alice", "")).is_ok());
        assert_eq!(field_of(validate_path(&p("", "x"))), "user");
        assert_eq!(field_of(validate_path(&p("alice", "a\tb"))), "server");
        assert_eq!(field_of(validate_path(&p(&"u".repeat(256), ""))), "user");
    }

    #[test]
    fn only_the_user_or_their_delegates_act_for_them() {
        let alice = Caller::User { user: "alice".into(), groups: vec![], admin: false };
        assert!(authorize(&alice, "alice").is_ok());
        assert_eq!(authorize(&alice, "bob").unwrap_err().status(), StatusCode::FORBIDDEN);
        assert!(authorize(&Caller::Token { name: "hub".into(), role: Role::Hub }, "bob").is_ok());
        assert!(require_admin(&alice).is_err());
    }

    fn profiles() -> ProfileSet {
        let text = r#"
[defaults]
image = "quay.io/jupyter/base-notebook:latest"
ingress_public_url = "http://east.example.org"
allowed_images = ["quay.io/jupyter/*"]

[[profiles]]
slug = "gpu"
display_name = "GPU"
context = "east"
allowed_groups = ["gpu"]

[[profiles]]
slug = "cpu"
display_name = "CPU"
default = true
context = "east"

[profiles.options.image]
display_name = "Image"
default = "scipy"

[profiles.options.image.choices.scipy]
display_name = "SciPy"
description = "NumPy, pandas, SciPy"
override = { image = "quay.io/jupyter/scipy-notebook:latest" }

[profiles.options.image.free_text]
display_name = "an image name"
regex = 'quay\.io/jupyter/[a-z-]+:[a-z0-9.-]+'
override = { image = "{value}" }
"#;
        fleetspawn_core::bundle::Renderer::builtin().unwrap().parse_profiles("profiles.toml", text).unwrap()
    }

    #[test]
    fn profiles_are_filtered_by_group_and_the_default_comes_first() {
        let set = profiles();
        let alice = Caller::User { user: "alice".into(), groups: vec![], admin: false };
        let list = visible_profiles(&set, &alice);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].slug, "cpu");
        assert!(list[0].default);
        assert_eq!(list[0].options[0].choices[0].value, "scipy");
        assert_eq!(list[0].options[0].free_text.as_ref().unwrap().hint, "an image name");
        assert_eq!(list[0].options[0].choices[0].description, "NumPy, pandas, SciPy");
        assert_eq!(list[0].clusters, ["east"]);
        let gpu_user = Caller::User { user: "g".into(), groups: vec!["gpu".into()], admin: false };
        let list = visible_profiles(&set, &gpu_user);
        assert_eq!(list.iter().map(|p| p.slug.as_str()).collect::<Vec<_>>(), ["cpu", "gpu"]);
    }

    #[test]
    fn instance_filters() {
        let i = InstanceView { profile: "cpu".into(), cluster: "east".into(), ..InstanceView::named("k", "alice", "", InstanceState::Running) };
        assert!(InstanceFilter::default().matches(&i));
        assert!(InstanceFilter { cluster: Some("east".into()), state: Some(wire::InstanceState::Running), ..Default::default() }.matches(&i));
        assert!(!InstanceFilter { user: Some("bob".into()), ..Default::default() }.matches(&i));
        assert!(!InstanceFilter { state: Some(wire::InstanceState::Failed), ..Default::default() }.matches(&i));
    }

    #[test]
    fn only_reachable_clusters_still_syncing_make_the_daemon_unready() {
        let states: BTreeMap<String, ClusterSync> = [
            ("a".to_string(), ClusterSync::Synced),
            ("b".to_string(), ClusterSync::Unreachable { cause: "connection refused".into() }),
            ("c".to_string(), ClusterSync::Syncing),
        ]
        .into_iter()
        .collect();
        assert_eq!(syncing_clusters(&states), ["c"]);
    }

    #[test]
    fn the_openapi_document_covers_every_route() {
        let doc: serde_json::Value = serde_json::from_str(&OPENAPI_JSON).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/api/v1/profiles",
            "/api/v1/users/{user}/servers/{server}",
            "/api/v1/users/{user}/server",
            "/api/v1/users/{user}/servers/{server}/progress",
            "/api/v1/users/{user}/server/progress",
            "/api/v1/instances",
            "/api/v1/clusters",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(paths.contains_key(path), "missing {path}");
        }
        let default_put = &paths["/api/v1/users/{user}/server"]["put"];
        let params: Vec<&str> = default_put["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(params, ["user"]);
        assert_eq!(default_put["operationId"], "start_default");
        assert!(doc["components"]["schemas"]["StartRequest"].is_object());
        assert!(doc["components"]["securitySchemes"]["token"].is_object());
    }

    /// The name rules are in the document, so a fuzzer's negative cases send names that are
    /// too long or carry control characters; the declared limit is the one enforced.
    #[test]
    fn the_openapi_document_declares_the_name_rules() {
        let doc: serde_json::Value = serde_json::from_str(&OPENAPI_JSON).unwrap();
        let params = doc["paths"]["/api/v1/users/{user}/servers/{server}"]["put"]["parameters"].as_array().unwrap();
        for name in ["user", "server"] {
            let schema = &params.iter().find(|p| p["name"] == name).unwrap()["schema"];
            assert_eq!(schema["maxLength"], crate::http::auth::MAX_NAME_LEN, "{name}: {schema}");
            let pattern = regex::Regex::new(schema["pattern"].as_str().unwrap()).unwrap();
            for refused in ["a\u{0}b", "a\nb", "a/b", "a\\b", "\u{7f}"] {
                assert!(!pattern.is_match(refused), "{name}: {refused:?} matches {pattern}");
                assert!(crate::http::auth::validate_name(refused).is_err(), "{refused:?}");
            }
            assert!(pattern.is_match("first.last@example.org"), "{name}: {pattern}");
        }
    }
}
