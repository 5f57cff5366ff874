//! The one error type of the HTTP layer: a status, a stable code, a sentence, and the input at
//! fault. Only `http/` knows status codes.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
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
            ApiError::Spawn(e) => match e {
                SpawnError::UnknownProfile(_) | SpawnError::NotFound => StatusCode::NOT_FOUND,
                SpawnError::BadOption(_) => StatusCode::BAD_REQUEST,
                SpawnError::TooManySpawns { .. } => StatusCode::TOO_MANY_REQUESTS,
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
            ApiError::Spawn(e) => match e {
                SpawnError::UnknownProfile(_) => "unknown_profile",
                SpawnError::NotFound => "not_found",
                SpawnError::BadOption(_) => "bad_option",
                SpawnError::TooManySpawns { .. } => "too_many_spawns",
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
            ApiError::Spawn(SpawnError::UnknownProfile(_)) => "That environment is no longer offered. Please pick another one.".into(),
            ApiError::Spawn(SpawnError::TooManySpawns { .. }) => "Many servers are starting right now. Please try again in a minute.".into(),
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
        }
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
        let body = ErrorBody { error: self.code().into(), detail: self.to_string(), field: self.field() };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Spawn(SpawnError::TooManySpawns { .. }) => {
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
