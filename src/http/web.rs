//! The browser pages: pick a profile and start a server, watch it start, stop it; and, for
//! administrators, every instance with the health of each cluster.
//!
//! Pages are rendered on the server with minijinja (the templates are embedded), and work
//! without JavaScript except the live progress, which a small script reads from the API's SSE
//! stream (without it the progress page refreshes itself). Forms carry a CSRF token bound to a
//! signed session cookie (see [`crate::http::auth`]). User values reach templates only as context
//! data, which minijinja escapes for HTML.

use std::collections::BTreeMap;

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use axum_extra::extract::SignedCookieJar;
use serde::{Deserialize, Serialize};

use crate::http::api;
use crate::http::auth::{Caller, CSRF_FIELD};
use crate::http::error::ApiError;
use crate::http::pages::{percent_encode, progress_href};
use crate::http::state::AppState;
use crate::http::wire::{InstanceFilter, ProfileInfo, ServerPath, StartRequest};
use crate::kube::fleet::Health;
use fleetspawn_core::instance::InstanceState;
use fleetspawn_core::instance::{gone_after, InstanceView, SpawnEnd};
use fleetspawn_core::lifecycle::{FailureKind, ProgressEvent};

/// The select value meaning "use the free-text field instead".
pub const OTHER: &str = "__other__";

const CSS: &str = include_str!("web/app.css");
const PROGRESS_JS: &str = include_str!("web/progress.js");
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// The header bar's data, on every page.
#[derive(Debug, Clone, Serialize)]
pub struct Header {
    /// Shown at the right of the bar: the user, or the token's name.
    pub who: Option<String>,
    /// The user the pages act for, if the caller is one user.
    pub user: Option<String>,
    pub is_admin: bool,
}

impl Header {
    /// The header for `caller` (none when not signed in).
    pub fn new(caller: Option<&Caller>) -> Header {
        Header {
            who: caller.map(|c| c.user().map_or_else(|| c.label(), String::from)),
            user: caller.and_then(|c| c.user().map(String::from)),
            is_admin: caller.is_some_and(Caller::is_admin),
        }
    }
}

/// The home page: the user's servers and the profiles they may start.
#[derive(Debug, Clone, Serialize)]
pub struct HomePage {
    pub title: &'static str,
    pub active: &'static str,
    pub header: Header,
    pub csrf_token: String,
    pub servers: Vec<InstanceView>,
    pub profiles: Vec<ProfileInfo>,
    /// Display name of each profile slug in `servers` (the slug when the profile is gone).
    pub profile_names: BTreeMap<String, String>,
    /// Why the last form post failed, in plain words.
    pub error: Option<String>,
    pub other: &'static str,
}

/// The progress page of one server.
#[derive(Debug, Clone, Serialize)]
pub struct ProgressPage {
    pub title: String,
    pub active: &'static str,
    pub header: Header,
    pub server_label: String,
    pub profile: Option<String>,
    pub cluster: Option<String>,
    /// The API's SSE endpoint for this server.
    pub events_url: String,
    pub percent: u8,
    /// The progress messages so far (the script replaces them with the live stream).
    pub messages: Vec<String>,
    pub failed: bool,
    /// Set when the server is already running: the page opens it.
    pub ready_url: Option<String>,
    /// "Default server" or the server's name.
    pub server_name: String,
    pub explanation: String,
    pub cause: String,
}

/// Rows on one page of the administrators' instance list.
pub const ADMIN_PAGE_ROWS: usize = 100;

/// The administrators' page.
#[derive(Debug, Clone, Serialize)]
pub struct AdminPage {
    pub title: &'static str,
    pub active: &'static str,
    pub header: Header,
    pub clusters: Vec<Health>,
    /// The rows of this page: the instances that pass the filter, sorted by cluster, user and
    /// server, [`ADMIN_PAGE_ROWS`] at most.
    pub instances: Vec<InstanceView>,
    /// Instances per cluster (all of them, whatever the filter).
    pub counts: BTreeMap<String, usize>,
    /// Instances in all.
    pub all: usize,
    /// Instances that pass the filter.
    pub total: usize,
    /// The filter as the page's form shows it (trimmed; the page number it ended on).
    pub filter: AdminQuery,
    /// Whether any filter is set.
    pub filtered: bool,
    /// The profiles to filter by: those of the profile set and those of live instances.
    pub profiles: Vec<String>,
    /// The states to filter by.
    pub states: Vec<&'static str>,
    /// This page (from 1), the number of pages, and the rows shown (from 1; 0 when none).
    pub page: usize,
    pub pages: usize,
    pub first: usize,
    pub last: usize,
    /// Links to the previous and the next page, with the same filter.
    pub prev_url: Option<String>,
    pub next_url: Option<String>,
    pub profiles_error: Option<String>,
}

/// The administrators' page's query, as its form puts it in the URL: filters (an empty one
/// filters nothing) and the page number.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct AdminQuery {
    pub cluster: String,
    pub profile: String,
    pub state: String,
    pub user: String,
    pub page: String,
}

impl AdminQuery {
    /// The filter it asks for and the page (from 1), or which field is wrong.
    pub fn parse(&self) -> Result<(InstanceFilter, usize), ApiError> {
        let set = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        let state = match set(&self.state) {
            None => None,
            Some(s) => {
                let known = InstanceState::ALL.into_iter().find(|k| k.as_str() == s);
                let names: Vec<&str> = InstanceState::ALL.iter().map(|k| k.as_str()).collect();
                Some(known.ok_or_else(|| ApiError::invalid("state", format!("is not one of {}", names.join(", "))))?.into())
            }
        };
        let page = match set(&self.page) {
            None => 1,
            Some(p) => p.parse::<usize>().ok().filter(|p| *p >= 1).ok_or_else(|| ApiError::invalid("page", "is not a page number (1, 2, …)"))?,
        };
        Ok((InstanceFilter { cluster: set(&self.cluster), profile: set(&self.profile), state, user: set(&self.user) }, page))
    }

    /// The link to `page` with this (trimmed) filter: `/admin?cluster=…&page=2`, empty filters
    /// left out.
    fn href(&self, page: usize) -> String {
        let fields = [("cluster", &self.cluster), ("profile", &self.profile), ("state", &self.state), ("user", &self.user)];
        let mut query: Vec<String> = fields.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}={}", percent_encode(v))).collect();
        query.push(format!("page={page}"));
        format!("/admin?{}", query.join("&"))
    }
}

/// A page that says what went wrong.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorPage {
    pub title: String,
    pub active: &'static str,
    pub header: Header,
    pub message: String,
}

/// The routes of the pages and their static assets.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/spawn", post(spawn))
        .route("/stop", post(stop))
        .route("/progress", get(progress))
        .route("/admin", get(admin))
        .route("/static/app.css", get(|| async { asset("text/css; charset=utf-8", CSS) }))
        .route("/static/progress.js", get(|| async { asset("text/javascript; charset=utf-8", PROGRESS_JS) }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=300")], body).into_response()
}

/// An HTML response with the security headers every page gets.
fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert::<HeaderName>(name, HeaderValue::from_static(value));
    }
    response
}

fn render<T: Serialize>(state: &AppState, status: StatusCode, name: &str, page: &T) -> Response {
    match state.templates.render(name, page) {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(template = name, error = %e, "rendering a page");
            (StatusCode::INTERNAL_SERVER_ERROR, "The page could not be rendered.").into_response()
        }
    }
}

fn error_page(state: &AppState, caller: Option<&Caller>, error: &ApiError) -> Response {
    let title = match error.status() {
        StatusCode::UNAUTHORIZED => "Not signed in",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        _ => "Something went wrong",
    };
    let page = ErrorPage { title: title.into(), active: "", header: Header::new(caller), message: error.user_message() };
    render(state, error.status(), "error.html", &page)
}

/// The pages act for one user: a proxy user or a single-user token.
fn page_user(caller: &Caller) -> Result<&str, ApiError> {
    caller.user().ok_or_else(|| ApiError::Forbidden("these pages are for users; use the API with this token".into()))
}

async fn home(State(state): State<AppState>, caller: Result<Caller, ApiError>, jar: SignedCookieJar) -> Response {
    match caller {
        Ok(caller) => home_page(&state, &caller, jar, None),
        Err(e) => error_page(&state, None, &e),
    }
}

fn home_page(state: &AppState, caller: &Caller, jar: SignedCookieJar, failure: Option<&ApiError>) -> Response {
    home_page_saying(state, caller, jar, failure.map(|e| (e.status(), e.user_message())))
}

/// The home page with `failure` (a status and the words for the user) above it.
fn home_page_saying(state: &AppState, caller: &Caller, jar: SignedCookieJar, failure: Option<(StatusCode, String)>) -> Response {
    let user = match page_user(caller) {
        Ok(u) => u,
        Err(e) if caller.is_admin() => return admin_redirect(&e),
        Err(e) => return error_page(state, Some(caller), &e),
    };
    let (jar, csrf_token) = state.auth.csrf_token(jar, caller);
    let mut servers: Vec<InstanceView> = state.spawner.list().into_iter().filter(|i| i.user == user).collect();
    servers.sort_by(|a, b| a.server.cmp(&b.server));
    let status = failure.as_ref().map_or(StatusCode::OK, |(status, _)| *status);
    let set = state.spawner.profiles();
    let profile_names = profile_names(&servers, |slug| set.get(slug).map(|p| p.display_name.clone()));
    let page = HomePage {
        title: "Your servers",
        active: "home",
        header: Header::new(Some(caller)),
        csrf_token,
        servers,
        profiles: crate::http::wire::visible_profiles(&set, caller),
        profile_names,
        error: failure.map(|(_, message)| message),
        other: OTHER,
    };
    (jar, render(state, status, "home.html", &page)).into_response()
}

/// The display name of every profile `servers` use; the slug when `name` knows none.
pub fn profile_names(servers: &[InstanceView], name: impl Fn(&str) -> Option<String>) -> BTreeMap<String, String> {
    servers.iter().map(|s| (s.profile.clone(), name(&s.profile).filter(|n| !n.is_empty()).unwrap_or_else(|| s.profile.clone()))).collect()
}

fn admin_redirect(reason: &ApiError) -> Response {
    tracing::debug!(%reason, "an admin token on the home page: sending it to /admin");
    Redirect::to("/admin").into_response()
}

/// A start form, parsed: its CSRF token, the server to start and the request.
#[derive(Debug, Default)]
pub struct SpawnForm {
    pub csrf_token: String,
    pub server: String,
    pub request: StartRequest,
}

/// Parses the fields of a start form: `profile`, `server`, `option.NAME` (a choice, or
/// [`OTHER`] to take `other.NAME`), and the CSRF token. Unknown fields are ignored.
pub fn parse_spawn_form(fields: Vec<(String, String)>) -> SpawnForm {
    let mut form = SpawnForm::default();
    let mut others: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in fields {
        if key == CSRF_FIELD {
            form.csrf_token = value;
        } else if key == "profile" {
            form.request.profile = Some(value);
        } else if key == "server" {
            form.server = value.trim().to_string();
        } else if let Some(name) = key.strip_prefix("option.") {
            form.request.options.insert(name.to_string(), value);
        } else if let Some(name) = key.strip_prefix("other.") {
            others.insert(name.to_string(), value.trim().to_string());
        }
    }
    for (name, value) in form.request.options.iter_mut() {
        if value == OTHER {
            *value = others.remove(name).unwrap_or_default();
        }
    }
    form
}

async fn spawn(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    jar: SignedCookieJar,
    fields: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let caller = match caller {
        Ok(c) => c,
        Err(e) => return error_page(&state, None, &e),
    };
    let form = match fields {
        Ok(Form(fields)) => parse_spawn_form(fields),
        Err(e) => return home_page(&state, &caller, jar, Some(&ApiError::BadBody { status: e.status(), message: e.body_text() })),
    };
    let slug = form.request.profile.clone();
    let result = async {
        state.auth.verify_csrf(&jar, &caller, &form.csrf_token)?;
        let user = page_user(&caller)?.to_string();
        let path = ServerPath { user, server: form.server.clone() };
        api::start_server(&state, &caller, &path, form.request).await
    }
    .await;
    match result {
        // Even for a server already running: the progress page opens it (see `progress_page`).
        Ok(_) => Redirect::to(&progress_href(&form.server)).into_response(),
        Err(e) => {
            let profiles = crate::http::wire::visible_profiles(&state.spawner.profiles(), &caller);
            let profile = profiles.iter().find(|p| Some(&p.slug) == slug.as_ref());
            let message = form_error_message(&e, profile);
            home_page_saying(&state, &caller, jar, Some((e.status(), message)))
        }
    }
}

/// Why a start form was refused, in words: an option is named as the form labels it, and a
/// refused free-text value comes with what the option expects.
pub fn form_error_message(error: &ApiError, profile: Option<&ProfileInfo>) -> String {
    use crate::service::SpawnError;
    use fleetspawn_core::profiles::OptionError;
    let ApiError::Spawn(SpawnError::BadOption(e)) = error else { return error.user_message() };
    let (name, value) = match e {
        OptionError::NotAChoice { option, value, .. } | OptionError::NoMatch { option, value, .. } => (option, value),
        _ => return error.user_message(),
    };
    let Some(option) = profile.and_then(|p| p.options.iter().find(|o| &o.name == name)) else { return error.user_message() };
    let label = if option.display_name.is_empty() { &option.name } else { &option.display_name };
    match &option.free_text {
        Some(free) if !free.hint.is_empty() && free.hint != option.name => {
            format!("“{value}” cannot be used as {label}: enter {}.", free.hint)
        }
        _ => format!("“{value}” cannot be used as {label}. Please pick one of the choices."),
    }
}

/// The stop form.
#[derive(Debug, Deserialize)]
pub struct StopForm {
    pub csrf_token: String,
    #[serde(default)]
    pub server: String,
}

async fn stop(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    jar: SignedCookieJar,
    form: Result<Form<StopForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let caller = match caller {
        Ok(c) => c,
        Err(e) => return error_page(&state, None, &e),
    };
    let result = async {
        let Form(form) = form.map_err(|e| ApiError::BadBody { status: e.status(), message: e.body_text() })?;
        state.auth.verify_csrf(&jar, &caller, &form.csrf_token)?;
        let path = ServerPath { user: page_user(&caller)?.to_string(), server: form.server };
        api::validate_path(&path)?;
        tracing::info!(caller = %caller.label(), user = %path.user, server = %path.server, "stop requested from the web");
        Ok::<(), ApiError>(state.spawner.stop(&path.user, &path.server, false).await?)
    }
    .await;
    match result {
        Ok(()) => Redirect::to("/").into_response(),
        Err(e) => home_page(&state, &caller, jar, Some(&e)),
    }
}

/// The API's SSE endpoint for `user`'s `server`.
pub fn events_url(user: &str, server: &str) -> String {
    let user = percent_encode(user);
    if server.is_empty() {
        format!("/api/v1/users/{user}/server/progress")
    } else {
        format!("/api/v1/users/{user}/servers/{}/progress", percent_encode(server))
    }
}

/// What a spawn failure means, in words for the person who asked for the server. The raw cause
/// is shown next to it for whoever needs the details.
pub fn explain_failure(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::ImagePull => "The software image for this environment could not be downloaded. Try another image, or tell your administrators.",
        FailureKind::Unschedulable => {
            "The cluster has no room for your server right now (not enough CPU, memory or GPUs). Try a smaller environment, or try again later."
        }
        FailureKind::OutOfMemory => "Your server ran out of memory while starting. Pick an environment with more memory.",
        FailureKind::Quota => "Your team's quota on this cluster is used up. Stop another server, or ask your administrators for more.",
        FailureKind::CrashLoop => "Your server started but stopped right away. Check the options you chose, or tell your administrators.",
        FailureKind::Timeout => "Your server took too long to start. Please try again in a moment.",
        FailureKind::ClusterUnreachable => "The cluster for this environment cannot be reached right now. Please try again later or pick another environment.",
        FailureKind::Cancelled => "Your server was stopped before it was ready.",
        FailureKind::Other => "Something went wrong while starting your server. Please try again; if it keeps failing, tell your administrators.",
    }
}

/// `/progress` query.
#[derive(Debug, Default, Deserialize)]
pub struct ProgressQuery {
    #[serde(default)]
    pub server: String,
}

async fn progress(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    query: Result<Query<ProgressQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let caller = match caller {
        Ok(c) => c,
        Err(e) => return error_page(&state, None, &e),
    };
    let result = async {
        let Query(q) = query?;
        let user = page_user(&caller)?.to_string();
        let path = ServerPath { user, server: q.server };
        api::validate_path(&path)?;
        Ok::<_, ApiError>(path)
    }
    .await;
    let path = match result {
        Ok(path) => path,
        Err(e) => return error_page(&state, Some(&caller), &e),
    };
    let history = state.spawner.progress(&path.user, &path.server).map(|log| log.history()).unwrap_or_default();
    let instance = match state.spawner.status(&path.user, &path.server) {
        Ok(view) => view,
        // A failed spawn is rolled back, so the registry forgets it; its progress log keeps
        // the cause, which is what this page is for.
        Err(crate::service::SpawnError::NotFound) => {
            let key = fleetspawn_core::naming::InstanceKey::new(&path.user, &path.server);
            match gone_after(key.key(), &path.user, &path.server, SpawnEnd::of(history.last())) {
                Some(view) => view,
                None => return error_page(&state, Some(&caller), &api::not_found_names(crate::service::SpawnError::NotFound, &path)),
            }
        }
        Err(e) => return error_page(&state, Some(&caller), &api::not_found_names(e, &path)),
    };
    let mut page = progress_page(&caller, &instance, history);
    if let Some(name) = state.spawner.profiles().get(&instance.profile).map(|p| p.display_name.clone()) {
        page.profile = Some(name).filter(|n| !n.is_empty());
    }
    render(&state, StatusCode::OK, "progress.html", &page)
}

/// The progress page's data for `instance`, with the progress `history` so far.
///
/// A running server gets the page in its finished state, which opens the server with a meta
/// refresh and a link rather than an HTTP redirect: a redirect to another origin at the end of
/// a form post is refused by the `form-action 'self'` policy.
pub fn progress_page(caller: &Caller, instance: &InstanceView, history: Vec<ProgressEvent>) -> ProgressPage {
    let last_failed = match SpawnEnd::of(history.last()) {
        Some(SpawnEnd::Failed(failure)) => Some(failure),
        _ => None,
    };
    let failed = instance.state == InstanceState::Failed || last_failed.is_some();
    // The instance's own failure first (what the cluster says now), else the spawn's.
    let kind = instance.failure.or(last_failed.as_ref().map(|f| f.kind)).unwrap_or(FailureKind::Other);
    let ready_url = match (instance.state, &instance.url) {
        (InstanceState::Running, Some(url)) if !failed => Some(url.clone()),
        _ => None,
    };
    let server_label = if instance.server.is_empty() { "your server".to_string() } else { format!("server “{}”", instance.server) };
    let server_name = if instance.server.is_empty() { "Default server".to_string() } else { instance.server.clone() };
    let cause = instance.cause.clone().or(last_failed.map(|f| f.message)).unwrap_or_default();
    let percent = if failed || ready_url.is_some() { 100 } else { history.last().map_or(0, |e| e.progress.min(100)) };
    ProgressPage {
        title: if failed {
            "Start failed".into()
        } else if ready_url.is_some() {
            "Ready".into()
        } else {
            "Starting".into()
        },
        active: "home",
        header: Header::new(Some(caller)),
        server_label,
        profile: Some(instance.profile.clone()).filter(|p| !p.is_empty()),
        cluster: Some(instance.cluster.clone()).filter(|c| !c.is_empty()),
        events_url: events_url(&instance.user, &instance.server),
        percent,
        messages: if failed { Vec::new() } else { history.into_iter().map(|e| e.message).collect() },
        failed,
        ready_url,
        server_name,
        explanation: if failed { explain_failure(kind).to_string() } else { String::new() },
        cause,
    }
}

async fn admin(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    query: Result<Query<AdminQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let caller = match caller {
        Ok(c) if c.is_admin() => c,
        Ok(c) => return error_page(&state, Some(&c), &ApiError::Forbidden("administrators only".into())),
        Err(e) => return error_page(&state, None, &e),
    };
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => return error_page(&state, Some(&caller), &ApiError::from(e)),
    };
    let clusters: Vec<Health> = state.spawner.cluster_health().into_iter().collect();
    let slugs = state.spawner.profiles().iter().map(|p| p.slug.clone()).collect();
    match admin_page(&caller, clusters, state.spawner.list(), &query, slugs, state.reload.last_error()) {
        Ok(page) => render(&state, StatusCode::OK, "admin.html", &page),
        Err(e) => error_page(&state, Some(&caller), &e),
    }
}

/// The admin page's data: one page of the instances that pass the query's filter.
pub fn admin_page(
    caller: &Caller,
    clusters: Vec<Health>,
    instances: Vec<InstanceView>,
    query: &AdminQuery,
    mut profiles: Vec<String>,
    profiles_error: Option<String>,
) -> Result<AdminPage, ApiError> {
    let (filter, asked) = query.parse()?;
    // Every cluster has a count (0 too): the template looks each one up, and an undefined value
    // is an error with the strict templates.
    let mut counts: BTreeMap<String, usize> = clusters.iter().map(|c| (c.context.clone(), 0)).collect();
    for i in &instances {
        *counts.entry(i.cluster.clone()).or_default() += 1;
    }
    profiles.extend(instances.iter().map(|i| i.profile.clone()));
    profiles.sort();
    profiles.dedup();
    let all = instances.len();
    let mut rows: Vec<InstanceView> = instances.into_iter().filter(|i| filter.matches(i)).collect();
    rows.sort_by(|a, b| (&a.cluster, &a.user, &a.server).cmp(&(&b.cluster, &b.user, &b.server)));
    let total = rows.len();
    let pages = total.div_ceil(ADMIN_PAGE_ROWS).max(1);
    // A page past the end (the list shrank since the link was made) shows the last one.
    let page = asked.min(pages);
    let skip = (page - 1) * ADMIN_PAGE_ROWS;
    let instances: Vec<InstanceView> = rows.into_iter().skip(skip).take(ADMIN_PAGE_ROWS).collect();
    let (first, last) = if instances.is_empty() { (0, 0) } else { (skip + 1, skip + instances.len()) };
    let filtered = filter.cluster.is_some() || filter.profile.is_some() || filter.state.is_some() || filter.user.is_some();
    let shown = AdminQuery {
        cluster: filter.cluster.clone().unwrap_or_default(),
        profile: filter.profile.clone().unwrap_or_default(),
        state: query.state.trim().to_string(),
        user: filter.user.clone().unwrap_or_default(),
        page: page.to_string(),
    };
    Ok(AdminPage {
        title: "Instances",
        active: "admin",
        header: Header::new(Some(caller)),
        clusters,
        instances,
        counts,
        all,
        total,
        filtered,
        profiles,
        states: InstanceState::ALL.iter().map(|s| s.as_str()).collect(),
        page,
        pages,
        first,
        last,
        prev_url: (page > 1).then(|| shown.href(page - 1)),
        next_url: (page < pages).then(|| shown.href(page + 1)),
        filter: shown,
        profiles_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::pages::{short_time, Templates};
    use crate::http::wire::{ChoiceInfo, FreeTextInfo, OptionInfo};
    use fleetspawn_core::lifecycle::Failure;

    fn alice() -> Caller {
        Caller::User { user: "alice".into(), groups: vec!["data".into()], admin: false }
    }

    fn boss() -> Caller {
        Caller::User { user: "morgan".into(), groups: vec!["platform".into()], admin: true }
    }

    fn instance(user: &str, server: &str, cluster: &str, state: InstanceState) -> InstanceView {
        InstanceView {
            key: format!("{cluster}/{user}/{server}"),
            user: user.into(),
            server: server.into(),
            profile: "scipy".into(),
            cluster: cluster.into(),
            state,
            url: (state == InstanceState::Running).then(|| format!("https://{cluster}.example.org/user/{user}/{server}")),
            started_at: Some("2026-05-02T09:14:03Z".into()),
            last_seen: Some("2026-05-02T10:01:44Z".into()),
            cause: (state == InstanceState::Failed).then(|| "Back-off pulling image \"ghcr.io/lab/tensorflow:9.9\": ErrImagePull".into()),
            placement: None,
            failure: (state == InstanceState::Failed).then_some(FailureKind::ImagePull),
        }
    }

    fn profiles() -> Vec<ProfileInfo> {
        let choice = |v: &str, d: &str| ChoiceInfo { value: v.into(), display_name: d.into(), description: String::new() };
        vec![
            ProfileInfo {
                start_timeout: 300,
                slug: "scipy".into(),
                display_name: "Data science".into(),
                description: "Python with NumPy, pandas, SciPy and Jupyter. 2 CPUs, 8 GiB memory.".into(),
                clusters: vec!["eu-west".into(), "eu-central".into()],
                default: true,
                options: vec![OptionInfo {
                    name: "image".into(),
                    display_name: "Image".into(),
                    description: "The software installed in your server.".into(),
                    choices: vec![choice("scipy-2026.04", "SciPy 2026.04"), choice("scipy-2025.10", "SciPy 2025.10")],
                    default: Some("scipy-2026.04".into()),
                    free_text: Some(FreeTextInfo {
                        regex: "^[a-z0-9./:-]+$".into(),
                        hint: "a container image, e.g. quay.io/jupyter/scipy-notebook:latest".into(),
                    }),
                }],
            },
            ProfileInfo {
                start_timeout: 300,
                slug: "gpu".into(),
                display_name: "GPU <large>".into(),
                description: "One NVIDIA A100, 16 CPUs, 64 GiB memory. For training models.".into(),
                clusters: vec!["us-gpu".into()],
                default: false,
                options: vec![OptionInfo {
                    name: "gpus".into(),
                    display_name: "GPUs".into(),
                    description: String::new(),
                    choices: vec![choice("1", "1 GPU"), choice("2", "2 GPUs")],
                    default: Some("2".into()),
                    free_text: None,
                }],
            },
            ProfileInfo {
                start_timeout: 300,
                slug: "r".into(),
                display_name: "R Studio".into(),
                description: String::new(),
                clusters: vec![],
                default: false,
                options: vec![OptionInfo {
                    name: "packages".into(),
                    display_name: "Extra packages".into(),
                    description: String::new(),
                    choices: vec![],
                    default: None,
                    free_text: Some(FreeTextInfo { regex: "^[a-zA-Z0-9 ,.]*$".into(), hint: "package names, separated by commas".into() }),
                }],
            },
        ]
    }

    fn home_sample(error: Option<String>) -> HomePage {
        HomePage {
            title: "Your servers",
            active: "home",
            header: Header::new(Some(&alice())),
            csrf_token: "tok123".into(),
            servers: vec![instance("alice", "", "eu-west", InstanceState::Running), instance("alice", "big run", "us-gpu", InstanceState::Pending)],
            profiles: profiles(),
            profile_names: BTreeMap::from([("scipy".to_string(), "Data science".to_string())]),
            error,
            other: OTHER,
        }
    }

    /// Renders `name`; with `FLEETSPAWN_WEB_PREVIEW_DIR` set, also writes it there to look at.
    fn rendered<T: Serialize>(name: &str, file: &str, page: &T) -> String {
        let html = Templates::new().unwrap().render(name, page).unwrap();
        // minijinja escapes '/' in values as "&#x2f;", which browsers read as '/'.
        let html = html.replace("&#x2f;", "/");
        if let Some(dir) = std::env::var_os("FLEETSPAWN_WEB_PREVIEW_DIR") {
            let dir = std::path::PathBuf::from(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(file), html.replace("/static/app.css", "app.css")).unwrap();
            std::fs::write(dir.join("app.css"), CSS).unwrap();
        }
        html
    }

    #[test]
    fn home_page_shows_profiles_options_and_servers() {
        let html = rendered("home.html", "home.html", &home_sample(None));
        assert!(html.contains(r#"<option value="scipy-2026.04" selected>SciPy 2026.04</option>"#), "{html}");
        assert!(html.contains(r#"<option value="2" selected>2 GPUs</option>"#));
        assert!(html.contains(r#"name="option.image""#) && html.contains(r#"name="other.image""#));
        assert!(html.contains(&format!(r#"<option class="other-choice" value="{OTHER}">"#)));
        assert!(html.contains("package names, separated by commas"));
        assert!(html.contains(r#"name="csrf_token" value="tok123""#));
        assert!(html.contains(r#"href="https://eu-west.example.org/user/alice/">Open</a>"#));
        assert!(html.contains(r#"href="/progress?server=big%20run">Show progress</a>"#), "{html}");
        assert!(html.contains("GPU &lt;large&gt;"), "user-visible values are escaped");
        assert!(html.contains("Default server"));
        assert!(!html.contains("Your server was not started"));
        assert_eq!(html.matches(r#"action="/spawn""#).count(), 3);
        assert_eq!(html.matches(r#"action="/stop""#).count(), 2);
    }

    #[test]
    fn home_page_shows_an_error_and_empty_states() {
        let mut page = home_sample(Some("Many servers are starting right now.".into()));
        page.servers.clear();
        page.profiles.clear();
        let html = rendered("home.html", "home-error.html", &page);
        assert!(html.contains("Many servers are starting right now."));
        assert!(html.contains("You have no servers running"));
        assert!(html.contains("No environment is available to you"));
    }

    #[test]
    fn progress_page_while_starting_and_after_a_failure() {
        let history =
            vec![ProgressEvent::step(10, "Placed on us-gpu (least loaded)"), ProgressEvent::step(35, "Pulling image quay.io/jupyter/pytorch-notebook")];
        let starting = progress_page(&alice(), &instance("alice", "big run", "us-gpu", InstanceState::Pending), history);
        assert_eq!(starting.percent, 35);
        assert_eq!(starting.events_url, "/api/v1/users/alice/servers/big%20run/progress");
        let html = rendered("progress.html", "progress.html", &starting);
        assert!(html.contains(r#"data-events="/api/v1/users/alice/servers/big%20run/progress""#), "{html}");
        assert!(html.contains(r#"<meta http-equiv="refresh""#));
        assert!(html.contains(r#"<div class="failure" hidden>"#));
        assert!(html.contains("<li>Pulling image quay.io/jupyter/pytorch-notebook</li>"));

        let failed = progress_page(
            &alice(),
            &instance("alice", "", "eu-west", InstanceState::Failed),
            vec![ProgressEvent::failed(Failure::new(FailureKind::Other, "x"))],
        );
        assert!(failed.failed);
        let html = rendered("progress.html", "progress-failed.html", &failed);
        assert!(html.contains("could not be downloaded"));
        assert!(html.contains("ErrImagePull"));
        assert!(html.contains(r#"href="/">Back to your servers"#));
        assert!(!html.contains(r#"http-equiv="refresh""#));
    }

    #[test]
    fn progress_page_of_a_running_server_opens_it_without_a_redirect() {
        let page = progress_page(
            &alice(),
            &instance("alice", "", "eu-west", InstanceState::Running),
            vec![ProgressEvent::ready("https://eu-west.example.org/user/alice/")],
        );
        assert_eq!((page.percent, page.failed, page.ready_url.as_deref()), (100, false, Some("https://eu-west.example.org/user/alice/")));
        let html = rendered("progress.html", "progress-ready.html", &page);
        assert!(html.contains(r#"<meta http-equiv="refresh" content="0; url=https://eu-west.example.org/user/alice/">"#), "{html}");
        assert!(html.contains(r#"class="button ready-link" href="https://eu-west.example.org/user/alice/""#));
        assert!(html.contains("Your server is ready") && html.contains(r#"data-done="1""#));
    }

    #[test]
    fn a_failure_known_only_from_the_progress_log_is_explained() {
        let path = ServerPath { user: "alice".into(), server: "x".into() };
        let history = vec![
            ProgressEvent::step(45, "Pulling"),
            ProgressEvent::failed(Failure::new(FailureKind::ImagePull, "container notebook cannot start (ErrImagePull: not found)")),
        ];
        let gone = gone_after("alice--x", &path.user, &path.server, SpawnEnd::of(history.last())).expect("a failed spawn is shown");
        let page = progress_page(&alice(), &gone, history.clone());
        assert!(page.failed && page.explanation.contains("could not be downloaded"), "{page:?}");
        assert_eq!(page.cause, "container notebook cannot start (ErrImagePull: not found)");
        // The registry may still say pending for a moment: the log's end wins.
        let page = progress_page(&alice(), &instance("alice", "x", "eu-west", InstanceState::Pending), history);
        assert!(page.failed && page.cause.contains("ErrImagePull"));
    }

    #[test]
    fn refused_options_are_named_as_the_form_labels_them() {
        use crate::service::SpawnError;
        use fleetspawn_core::profiles::OptionError;
        let list = profiles();
        let scipy = list.iter().find(|p| p.slug == "scipy");
        let no_match = ApiError::Spawn(SpawnError::BadOption(OptionError::NoMatch { option: "image".into(), value: "Bad Image".into(), regex: "x".into() }));
        assert_eq!(
            form_error_message(&no_match, scipy),
            "“Bad Image” cannot be used as Image: enter a container image, e.g. quay.io/jupyter/scipy-notebook:latest."
        );
        let gpu = list.iter().find(|p| p.slug == "gpu");
        let not_a_choice = ApiError::Spawn(SpawnError::BadOption(OptionError::NotAChoice { option: "gpus".into(), value: "9".into(), choices: "1, 2".into() }));
        assert_eq!(form_error_message(&not_a_choice, gpu), "“9” cannot be used as GPUs. Please pick one of the choices.");
        // Without the profile (or for other errors) the general words.
        assert_eq!(form_error_message(&no_match, None), no_match.user_message());
        let csrf = ApiError::Auth(crate::http::auth::AuthError::Csrf);
        assert_eq!(form_error_message(&csrf, scipy), csrf.user_message());
    }

    #[test]
    fn servers_show_their_profiles_display_name() {
        let servers = vec![
            instance("alice", "", "eu-west", InstanceState::Running),
            InstanceView { profile: "gone".into(), ..instance("alice", "b", "eu-west", InstanceState::Running) },
        ];
        let names = profile_names(&servers, |slug| (slug == "scipy").then(|| "Data science".to_string()));
        assert_eq!(names["scipy"], "Data science");
        assert_eq!(names["gone"], "gone");
        let html = rendered("home.html", "home.html", &home_sample(None));
        assert!(html.contains("Data science on eu-west"), "{html}");
    }

    #[test]
    fn admin_page_lists_instances_and_cluster_health() {
        let clusters = vec![
            Health {
                context: "eu-west".into(),
                server: Some("https://10.0.0.1:6443".into()),
                healthy: true,
                version: Some("v1.34.1".into()),
                latency_ms: Some(12),
                cause: None,
            },
            Health {
                context: "us-gpu".into(),
                server: Some("https://gpu.example.org".into()),
                healthy: false,
                version: None,
                latency_ms: None,
                cause: Some("connection refused".into()),
            },
        ];
        let instances = vec![
            instance("alice", "", "eu-west", InstanceState::Running),
            instance("bob", "train", "us-gpu", InstanceState::Failed),
            instance("carol", "", "eu-west", InstanceState::Pending),
        ];
        let idle = Health { context: "idle".into(), server: None, healthy: true, version: Some("v1.34.1".into()), latency_ms: Some(3), cause: None };
        let clusters = [clusters, vec![idle]].concat();
        let page =
            admin_page(&boss(), clusters, instances, &AdminQuery::default(), vec!["scipy".into()], Some("profiles.toml:12: unknown field `imagee`".into()))
                .expect("no filter");
        assert_eq!(page.counts["eu-west"], 2);
        assert_eq!(page.counts["idle"], 0, "a cluster without instances renders too");
        let html = rendered("admin.html", "admin.html", &page);
        assert!(html.contains("profiles.toml:12: unknown field `imagee`"));
        assert!(html.contains("connection refused"));
        assert!(html.contains("v1.34.1"));
        assert!(html.contains("2026-05-02 10:01 UTC"));
        assert_eq!(html.matches("<tr>").count(), 4);
        assert!(html.contains(r#"<span class="tag">admin</span>"#));
    }

    /// `n` instances: users u0000.., on three clusters, every third one failed.
    fn many(n: usize) -> Vec<InstanceView> {
        let clusters = ["eu-west", "us-gpu", "eu-central"];
        let states = [InstanceState::Running, InstanceState::Running, InstanceState::Failed];
        (0..n).map(|k| instance(&format!("u{k:04}"), "", clusters[k % 3], states[k % 3])).collect()
    }

    fn query(pairs: &[(&str, &str)]) -> AdminQuery {
        let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect();
        Query::<AdminQuery>::try_from_uri(&format!("/admin?{}", text.join("&")).parse().expect("uri")).expect("query").0
    }

    #[test]
    fn admin_page_shows_one_page_of_the_filtered_instances_with_links_that_keep_the_filter() {
        let health = |c: &str| Health { context: c.into(), server: None, healthy: true, version: None, latency_ms: None, cause: None };
        let clusters = || vec![health("eu-west"), health("us-gpu"), health("eu-central")];
        let page = |q: AdminQuery| admin_page(&boss(), clusters(), many(1000), &q, vec!["scipy".into(), "gpu".into()], None);

        // No filter: the first 100 of 1,000, sorted by cluster then user; a link to page 2.
        let p = page(AdminQuery::default()).expect("page 1");
        assert_eq!((p.all, p.total, p.page, p.pages, p.first, p.last), (1000, 1000, 1, 10, 1, 100));
        assert_eq!(p.instances.len(), ADMIN_PAGE_ROWS);
        assert_eq!((p.instances[0].cluster.as_str(), p.instances[0].user.as_str()), ("eu-central", "u0002"));
        assert_eq!((p.prev_url, p.next_url.as_deref()), (None, Some("/admin?page=2")));
        assert_eq!(p.profiles, ["gpu", "scipy"], "the set's profiles and the live ones, once each");
        let html = rendered("admin.html", "admin.html", &page(AdminQuery::default()).expect("page 1"));
        assert_eq!(html.matches("<tr>").count(), 101, "a header and 100 rows");
        assert!(html.contains(r#"<a rel="next" href="/admin?page=2">"#), "{html}");
        assert!(html.contains("1–100 of 1000 · page 1 of 10"));

        // The failed ones of eu-central (333, every third user), page 3 of 4, the filter kept in
        // both links; us-gpu has none failed.
        let p = page(query(&[("cluster", "eu-central"), ("state", "failed"), ("page", "3")])).expect("page 3");
        assert_eq!((p.total, p.page, p.pages, p.first, p.last), (333, 3, 4, 201, 300));
        assert!(p.instances.iter().all(|i| i.cluster == "eu-central" && i.state == InstanceState::Failed));
        assert_eq!(p.prev_url.as_deref(), Some("/admin?cluster=eu-central&state=failed&page=2"));
        assert_eq!(p.next_url.as_deref(), Some("/admin?cluster=eu-central&state=failed&page=4"));
        let html = rendered("admin.html", "admin.html", &p);
        assert!(html.contains(r#"<option value="eu-central" selected>"#) && html.contains(r#"<option value="failed" selected>"#), "{html}");
        assert!(html.contains("333 of 1000"), "the count says it is filtered");
        assert!(html.contains(r#"href="/admin?cluster=eu-central&amp;state=failed&amp;page=2""#), "{html}");
        assert_eq!(page(query(&[("cluster", "us-gpu"), ("state", "failed")])).expect("none").total, 0);

        // A form's empty fields filter nothing; a page past the end shows the last page.
        let p = page(query(&[("cluster", ""), ("profile", " "), ("state", ""), ("user", ""), ("page", "99")])).expect("last page");
        assert_eq!((p.total, p.page, p.first, p.last, p.next_url), (1000, 10, 901, 1000, None));
        assert!(!p.filtered);

        // One user, exactly; a user value is escaped into the form and percent-encoded into links.
        let p = page(query(&[("user", "u0042")])).expect("one user");
        assert_eq!((p.total, p.instances[0].user.as_str()), (1, "u0042"));
        let odd = "<b>\"&amp;/x?y=1";
        let p = page(query(&[("user", odd)])).expect("no such user");
        assert_eq!((p.total, p.first, p.last), (0, 0, 0));
        let html = rendered("admin.html", "admin.html", &p);
        assert!(!html.contains("<b>") && html.contains("&lt;b&gt;"), "{html}");
        assert!(html.contains("No instance matches this filter."));

        // Wrong values name their field.
        for (field, value) in [("state", "sleeping"), ("page", "0"), ("page", "two"), ("page", "-1")] {
            match page(query(&[(field, value)])) {
                Err(ApiError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}={value}: {other:?}"),
            }
        }
    }

    #[test]
    fn error_page_renders() {
        let page = ErrorPage { title: "Not signed in".into(), active: "", header: Header::new(None), message: "You are not signed in.".into() };
        let html = rendered("error.html", "error.html", &page);
        assert!(html.contains("You are not signed in."));
        assert!(!html.contains("Instances</a>"));
    }

    #[test]
    fn spawn_forms_are_parsed() {
        let fields = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let form = parse_spawn_form(fields(&[
            ("csrf_token", "t"),
            ("profile", "scipy"),
            ("option.image", OTHER),
            ("other.image", " quay.io/x:1 "),
            ("option.size", "small"),
            ("other.size", "ignored"),
            ("server", " analysis "),
            ("junk", "x"),
        ]));
        assert_eq!(form.csrf_token, "t");
        assert_eq!(form.server, "analysis");
        assert_eq!(form.request.profile.as_deref(), Some("scipy"));
        assert_eq!(form.request.options["image"], "quay.io/x:1");
        assert_eq!(form.request.options["size"], "small");
        assert_eq!(form.request.options.len(), 2);
        assert!(form.request.env.is_empty() && form.request.url_prefix.is_none());
    }

    #[test]
    fn times_are_shortened() {
        assert_eq!(short_time("2026-05-02T09:14:03Z"), "2026-05-02 09:14 UTC");
        assert_eq!(short_time("2026-05-02T09:14:03+02:00"), "2026-05-02T09:14:03+02:00");
        assert_eq!(short_time("soon"), "soon");
    }

    #[test]
    fn urls_are_encoded() {
        assert_eq!(percent_encode("a b/ü?&"), "a%20b%2F%C3%BC%3F%26");
        assert_eq!(progress_href(""), "/progress");
        assert_eq!(progress_href("x y"), "/progress?server=x%20y");
        assert_eq!(events_url("a@b", ""), "/api/v1/users/a%40b/server/progress");
    }

    #[test]
    fn failures_are_explained_in_plain_words() {
        assert!(explain_failure(FailureKind::ImagePull).contains("image"));
        assert!(explain_failure(FailureKind::Unschedulable).contains("no room"));
        assert!(explain_failure(FailureKind::OutOfMemory).contains("memory"));
        assert!(explain_failure(FailureKind::Quota).contains("quota"));
        assert!(explain_failure(FailureKind::CrashLoop).contains("stopped right away"));
        assert!(explain_failure(FailureKind::Timeout).contains("too long"));
        assert!(explain_failure(FailureKind::ClusterUnreachable).contains("cannot be reached"));
        assert!(explain_failure(FailureKind::Cancelled).contains("stopped before"));
        assert!(explain_failure(FailureKind::Other).contains("Something went wrong"));
    }

    #[test]
    fn headers_name_the_caller() {
        let h = Header::new(Some(&Caller::Token { name: "ops".into(), role: crate::config::Role::Admin }));
        assert_eq!(h.who.as_deref(), Some("token:ops"));
        assert!(h.user.is_none() && h.is_admin);
        assert!(Header::new(None).who.is_none());
    }
}
