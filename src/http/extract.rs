//! Extractors: turning a request into a [`Caller`], with the API's error as the rejection.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;

use crate::http::auth::{Auth, Caller};
use crate::http::error::{ApiError, Audience};

impl<S> FromRequestParts<S> for Caller
where
    Arc<Auth>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Arc::<Auth>::from_ref(state);
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let caller = auth.authenticate(&parts.headers, peer)?;
        tracing::Span::current().record("caller", caller.label());
        if let Some(audience) = parts.extensions.get::<Audience>() {
            audience.set_admin(caller.is_admin());
        }
        Ok(caller)
    }
}
