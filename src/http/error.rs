//! The one error type of the HTTP layer: a status, a stable code, a sentence, and the input at
//! fault. Only `http/` knows status codes.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fleetspawn_core::profiles::OptionError;

use crate::http::auth::AuthError;
use crate::http::wire::ErrorBody;
use crate::service::SpawnError;

/// An API error: a status, a stable code, a sentence, and the field at fault if any.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{message}")]
    BadBody { status: StatusCode, message: String },
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("too many progress streams open for {user:?}'s servers (at most {limit}); close one first")]
    TooManyStreams { user: String, limit: usize },
    #[error("no answer within http.request_timeout; what the request started goes on (poll the server's status)")]
    RequestTimeout,
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Auth(AuthError::Csrf) => StatusCode::FORBIDDEN,
            ApiError::Auth(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::BadBody { status, .. } => *status,
            ApiError::TooManyStreams { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Spawn(e) => match e {
                SpawnError::UnknownProfile(_) | SpawnError::NotFound => StatusCode::NOT_FOUND,
                SpawnError::BadOption(_) | SpawnError::BadHubParameter(_) => StatusCode::BAD_REQUEST,
                SpawnError::TooManySpawns { .. } | SpawnError::TooManySpawnsForUser { .. } => StatusCode::TOO_MANY_REQUESTS,
                SpawnError::TooManyServers { .. } | SpawnError::Busy => StatusCode::CONFLICT,
                SpawnError::ClusterUnavailable { .. } | SpawnError::NoHealthyCluster(_) => StatusCode::SERVICE_UNAVAILABLE,
                SpawnError::Kubernetes(_) => StatusCode::BAD_GATEWAY,
                SpawnError::Bundle(_) => StatusCode::INTERNAL_SERVER_ERROR,
                SpawnError::StopTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
                SpawnError::ForeignUrlPrefix { .. } => StatusCode::FORBIDDEN,
                SpawnError::Home(e) if e.is_conflict() => StatusCode::CONFLICT,
                SpawnError::Home(_) | SpawnError::NoHome(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
        }
    }

    /// The stable code in the `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Auth(AuthError::Csrf) => "csrf",
            ApiError::Auth(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Invalid { .. } => "invalid_input",
            ApiError::BadBody { status, .. } if *status == StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            ApiError::BadBody { .. } => "invalid_body",
            ApiError::TooManyStreams { .. } => "too_many_streams",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::Spawn(e) => match e {
                SpawnError::UnknownProfile(_) => "unknown_profile",
                SpawnError::NotFound => "not_found",
                SpawnError::BadOption(_) => "bad_option",
                SpawnError::BadHubParameter(_) => "bad_hub_parameter",
                SpawnError::TooManySpawns { .. } => "too_many_spawns",
                SpawnError::TooManySpawnsForUser { .. } => "too_many_spawns_for_user",
                SpawnError::TooManyServers { .. } => "too_many_servers",
                SpawnError::Busy => "busy",
                SpawnError::ClusterUnavailable { .. } => "cluster_unavailable",
                SpawnError::NoHealthyCluster(_) => "no_healthy_cluster",
                SpawnError::Kubernetes(_) => "kubernetes_error",
                SpawnError::Bundle(_) => "profile_error",
                SpawnError::StopTimeout(_) => "stop_timeout",
                SpawnError::ForeignUrlPrefix { .. } => "forbidden",
                SpawnError::Home(e) if e.is_conflict() => "conflict",
                SpawnError::Home(_) | SpawnError::NoHome(_) => "home_unavailable",
            },
        }
    }

    /// The input at fault, if one is (`options.NAME` for a bad option).
    pub fn field(&self) -> Option<String> {
        match self {
            ApiError::Invalid { field, .. } => Some(field.clone()),
            ApiError::Spawn(SpawnError::BadOption(e)) => Some(format!("options.{}", option_name(e))),
            ApiError::Spawn(SpawnError::BadHubParameter(e)) => Some(format!("hub_parameters.{}", e.name())),
            ApiError::Spawn(SpawnError::ForeignUrlPrefix { .. }) => Some("url_prefix".into()),
            _ => None,
        }
    }

    /// The error in words for a person at a browser rather than a program.
    pub fn user_message(&self) -> String {
        match self {
            ApiError::Auth(AuthError::Csrf) => "This page had expired. Please try again.".into(),
            ApiError::Auth(_) => "You are not signed in. Sign in and try again.".into(),
            ApiError::Forbidden(_) => "You are not allowed to do that.".into(),
            ApiError::Invalid { field, message } => format!("The value for “{field}” {message}."),
            ApiError::Spawn(SpawnError::BadOption(e)) => bad_option_message(e),
            ApiError::Spawn(SpawnError::BadHubParameter(e)) => e.to_string(),
            ApiError::Spawn(SpawnError::UnknownProfile(_)) => "That environment is no longer offered. Please pick another one.".into(),
            ApiError::Spawn(SpawnError::TooManySpawns { .. }) => "Many servers are starting right now. Please try again in a minute.".into(),
            ApiError::Spawn(SpawnError::TooManySpawnsForUser { limit, .. }) => {
                format!("You already have {limit} servers starting, the most allowed at once. Wait for one to be ready.")
            }
            ApiError::Spawn(SpawnError::TooManyServers { limit, .. }) => {
                format!("You already have {limit} servers, the most allowed. Stop one to start another.")
            }
            ApiError::Spawn(SpawnError::ClusterUnavailable { context }) => {
                format!("The cluster “{context}” cannot be reached right now, so the state of this server is not known. Please try again in a moment.")
            }
            ApiError::Spawn(SpawnError::NoHealthyCluster(_)) => {
                "No cluster for this environment can be reached right now. Please try again later or pick another environment.".into()
            }
            ApiError::Spawn(SpawnError::Busy) => "Your server is still shutting down. Please wait a moment and try again.".into(),
            ApiError::Spawn(SpawnError::Kubernetes(_)) => {
                "The cluster refused to start your server. Please try again; if it keeps failing, tell your administrators.".into()
            }
            ApiError::Spawn(SpawnError::Bundle(_)) => "This environment is misconfigured and cannot start. Please tell your administrators.".into(),
            ApiError::Spawn(SpawnError::StopTimeout(_)) => "Your server is taking long to stop. It will be cleaned up; please try again in a minute.".into(),
            ApiError::Spawn(SpawnError::ForeignUrlPrefix { .. }) => "You are not allowed to do that.".into(),
            ApiError::Spawn(SpawnError::Home(_) | SpawnError::NoHome(_)) => {
                "The service cannot record your request right now, so nothing was changed. Please try again in a moment.".into()
            }
            ApiError::NotFound(_) | ApiError::Spawn(SpawnError::NotFound) => "There is no such server.".into(),
            ApiError::BadBody { .. } => "The request could not be read.".into(),
            ApiError::TooManyStreams { .. } => "Too many windows are following your servers. Close one and reload.".into(),
            ApiError::RequestTimeout => "This is taking longer than expected. It goes on; reload the page in a minute.".into(),
        }
    }

    /// Whether the error's own text is for operators only: an API server's message, cluster
    /// addresses and causes, template errors. Other callers get [`ApiError::user_message`].
    fn is_internal(&self) -> bool {
        matches!(
            self,
            ApiError::Spawn(SpawnError::Kubernetes(_) | SpawnError::Bundle(_) | SpawnError::Home(_) | SpawnError::NoHome(_) | SpawnError::NoHealthyCluster(_))
        )
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid { field: field.into(), message: message.into() }
    }
}

/// The option an [`OptionError`] is about.
fn option_name(e: &OptionError) -> &str {
    match e {
        OptionError::Unknown { option, .. }
        | OptionError::NotAChoice { option, .. }
        | OptionError::NoMatch { option, .. }
        | OptionError::ImageNotAllowed { option, .. }
        | OptionError::Invalid { option, .. } => option,
    }
}

fn bad_option_message(e: &OptionError) -> String {
    match e {
        OptionError::Unknown { option, .. } => format!("This environment has no option “{option}”. Please reload the page."),
        OptionError::NotAChoice { option, value, .. } => format!("“{value}” is not one of the choices for “{option}”."),
        OptionError::NoMatch { option, value, .. } => format!("“{value}” is not a valid value for “{option}”."),
        OptionError::ImageNotAllowed { image, .. } => format!("The image “{image}” is not allowed here."),
        OptionError::Invalid { option, .. } => format!("The value for “{option}” cannot be used with this environment."),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let full = ErrorBody { error: self.code().into(), detail: self.to_string(), field: self.field() };
        let mut response = if self.is_internal() {
            let public = ErrorBody { detail: self.user_message(), ..full.clone() };
            let mut response = (status, Json(public)).into_response();
            response.extensions_mut().insert(AdminDetail(full));
            response
        } else {
            (status, Json(full)).into_response()
        };
        let headers = response.headers_mut();
        match &self {
            ApiError::Spawn(SpawnError::TooManySpawns { .. } | SpawnError::TooManySpawnsForUser { .. }) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
            }
            ApiError::Auth(AuthError::Missing | AuthError::BadToken) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

/// The whole error of a response whose `detail` was put in users' words; [`admin_details`]
/// answers it to administrators.
#[derive(Clone)]
struct AdminDetail(ErrorBody);

/// Whether a request's caller turned out to be an administrator; set by the [`Caller`]
/// extractor, read by [`admin_details`] once the handler has answered.
///
/// [`Caller`]: crate::http::auth::Caller
#[derive(Clone, Default)]
pub struct Audience(Arc<OnceLock<bool>>);

impl Audience {
    /// Records whether the caller is an administrator (the first answer counts).
    pub fn set_admin(&self, admin: bool) {
        let _ = self.0.set(admin);
    }
}

/// Errors carrying what only operators should read (API servers' messages, cluster causes) go
/// to everyone else in users' words, and whole to administrators.
pub async fn admin_details(mut req: Request, next: Next) -> Response {
    let audience = Audience::default();
    req.extensions_mut().insert(audience.clone());
    let mut response = next.run(req).await;
    match response.extensions_mut().remove::<AdminDetail>() {
        Some(AdminDetail(full)) if audience.0.get() == Some(&true) => {
            let (mut parts, _) = response.into_parts();
            parts.headers.remove(header::CONTENT_LENGTH);
            match serde_json::to_vec(&full) {
                Ok(bytes) => Response::from_parts(parts, Body::from(bytes)),
                Err(e) => {
                    tracing::error!(error = %e, "encoding an error body");
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
            }
        }
        _ => response,
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // A body of the wrong shape (a number for an option, an unknown field) is bad input like
        // any other: 400, as documented, rather than axum's 422.
        let status = match r.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            other => other,
        };
        ApiError::BadBody { status, message: r.body_text() }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::BadBody { status: StatusCode::BAD_REQUEST, message: r.body_text() }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadBody { status: StatusCode::BAD_REQUEST, message: r.body_text() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::{Extension, Router};
    use tower::ServiceExt;

    /// What a cluster said reaches administrators; everyone else gets the web page's words.
    #[tokio::test]
    async fn cluster_messages_reach_administrators_only() {
        let message = "admission webhook \"policy.internal.example\" denied the request: 10.3.4.5:6443";
        let failing = move |admin: bool| async move {
            let handler = move |Extension(audience): Extension<Audience>| async move {
                audience.set_admin(admin);
                let cause = crate::kube::objects::ObjectError { object: "Pod jupyter/fs-alice".into(), message: message.into(), code: Some(403) };
                Err::<(), _>(ApiError::Spawn(SpawnError::Kubernetes(cause)))
            };
            let app = Router::new().route("/", get(handler)).layer(axum::middleware::from_fn(admin_details));
            let response = app.oneshot(Request::get("/").body(Body::empty()).expect("request")).await.expect("answer");
            assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
            let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("body");
            serde_json::from_slice::<serde_json::Value>(&body).expect("JSON")
        };
        let user = failing(false).await;
        assert_eq!(user["error"], "kubernetes_error");
        assert!(!user["detail"].as_str().unwrap_or_default().contains("10.3.4.5"), "{user}");
        assert!(user["detail"].as_str().unwrap_or_default().contains("refused to start your server"), "{user}");
        let admin = failing(true).await;
        assert!(admin["detail"].as_str().unwrap_or_default().contains(message), "{admin}");
    }
}
