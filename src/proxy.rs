//! What fleetspawn asks of a configurable-http-proxy it drives itself, without a hub: its
//! REST API's routes (list, add, delete), with a timeout on every request. Routes fleetspawn
//! adds carry `fleetspawn` (the installation's home namespace) in their data, so routes
//! others added are told apart and left alone.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

/// How long one request to the proxy may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Asking the proxy failed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("asking the proxy at {url}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the proxy at {url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("the proxy's answer at {url} is not its routes: {message}")]
    Body { url: String, message: String },
}

/// One route of the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRoute {
    pub target: String,
    /// The installation that added it (`None`: not fleetspawn).
    pub owner: Option<String>,
    pub last_activity: Option<Timestamp>,
}

/// configurable-http-proxy's REST API, with its auth token.
#[derive(Clone)]
pub struct ProxyApi {
    client: reqwest::Client,
    url: String,
    token: String,
}

impl ProxyApi {
    /// The API at `url` (e.g. `http://127.0.0.1:8001`).
    pub fn new(url: &str, token: &str) -> Result<ProxyApi, ProxyError> {
        let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().map_err(|source| ProxyError::Request { url: url.to_string(), source })?;
        Ok(ProxyApi { client, url: url.trim_end_matches('/').to_string(), token: token.to_string() })
    }

    /// The API's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn send(&self, request: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response, ProxyError> {
        let response = request
            .header("Authorization", format!("token {}", self.token))
            .send()
            .await
            .map_err(|source| ProxyError::Request { url: url.to_string(), source })?;
        if !response.status().is_success() {
            return Err(ProxyError::Status { url: url.to_string(), status: response.status().as_u16() });
        }
        Ok(response)
    }

    /// Every route, by path.
    pub async fn routes(&self) -> Result<BTreeMap<String, ProxyRoute>, ProxyError> {
        let url = format!("{}/api/routes", self.url);
        let body: Value = self.send(self.client.get(&url), &url).await?.json().await.map_err(|source| ProxyError::Request { url: url.clone(), source })?;
        read_routes(&body).map_err(|message| ProxyError::Body { url, message })
    }

    /// Adds (or replaces) the route `path` → `target`, marked as `owner`'s.
    pub async fn add(&self, path: &str, target: &str, owner: &str) -> Result<(), ProxyError> {
        let url = format!("{}/api/routes{path}", self.url);
        self.send(self.client.post(&url).json(&json!({ "target": target, "fleetspawn": owner })), &url).await.map(drop)
    }

    /// Deletes the route `path` (one already gone is fine).
    pub async fn remove(&self, path: &str) -> Result<(), ProxyError> {
        let url = format!("{}/api/routes{path}", self.url);
        match self.send(self.client.delete(&url), &url).await {
            Err(ProxyError::Status { status: 404, .. }) | Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The routes in the proxy's answer: `{path: {target, last_activity, ...data}}`.
fn read_routes(body: &Value) -> Result<BTreeMap<String, ProxyRoute>, String> {
    let routes = body.as_object().ok_or("not an object")?;
    let mut out = BTreeMap::new();
    for (path, route) in routes {
        let target = route["target"].as_str().ok_or_else(|| format!("route {path:?} has no target"))?;
        let owner = route["fleetspawn"].as_str().map(str::to_owned);
        let last_activity = route["last_activity"].as_str().and_then(|s| s.parse().ok());
        out.insert(path.clone(), ProxyRoute { target: target.to_owned(), owner, last_activity });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_read_with_their_owner_and_activity() {
        let body = json!({
            "/": {"target": "http://hub:8081", "jupyterhub": true, "last_activity": "2026-12-01T10:00:00.123Z"},
            "/user/alice": {"target": "http://a.example", "fleetspawn": "fs-home", "last_activity": "2026-12-01T10:05:00Z"},
            "/user/odd": {"target": "http://b.example", "last_activity": "not a time"},
        });
        let routes = read_routes(&body).expect("routes");
        assert_eq!(routes["/"].owner, None);
        assert_eq!(routes["/user/alice"].owner.as_deref(), Some("fs-home"));
        assert_eq!(routes["/user/alice"].last_activity, Some("2026-12-01T10:05:00Z".parse().expect("time")));
        assert_eq!(routes["/user/odd"].last_activity, None);
        assert!(read_routes(&json!({"/x": {}})).unwrap_err().contains("/x"));
        assert!(read_routes(&json!([])).is_err());
    }
}
