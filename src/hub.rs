//! What fleetspawn asks of JupyterHub's REST API: every user's servers' last activity, the
//! activity source of idle culling. Paged (`application/jupyterhub-pagination+json`), with a
//! timeout on every request; errors keep the client's error as their source.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

/// How long one request to the hub may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Users per page.
const PAGE: usize = 200;

/// Asking the hub failed.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("asking the hub at {url}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the hub at {url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("the hub's answer at {url} is not a page of users: {message}")]
    Body { url: String, message: String },
}

/// (user, server name; `""` for the default server) → its last activity.
pub type Activity = HashMap<(String, String), Timestamp>;

/// JupyterHub's REST API, with a service token.
#[derive(Clone)]
pub struct HubApi {
    client: reqwest::Client,
    url: String,
    token: String,
}

impl HubApi {
    /// The API at `url` (e.g. `http://hub:8081/hub/api`).
    pub fn new(url: &str, token: &str) -> Result<HubApi, HubError> {
        let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().map_err(|source| HubError::Request { url: url.to_string(), source })?;
        Ok(HubApi { client, url: url.trim_end_matches('/').to_string(), token: token.to_string() })
    }

    /// The API's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every user's servers' last activity, all pages.
    pub async fn last_activity(&self) -> Result<Activity, HubError> {
        let mut activity = Activity::new();
        let mut offset = Some(0);
        while let Some(at) = offset {
            let url = format!("{}/users?offset={at}&limit={PAGE}", self.url);
            let response = self
                .client
                .get(&url)
                .header("Authorization", format!("token {}", self.token))
                .header("Accept", "application/jupyterhub-pagination+json")
                .send()
                .await
                .map_err(|source| HubError::Request { url: url.clone(), source })?;
            if !response.status().is_success() {
                return Err(HubError::Status { url, status: response.status().as_u16() });
            }
            let page: Value = response.json().await.map_err(|source| HubError::Request { url: url.clone(), source })?;
            offset = read_page(&page, &mut activity).map_err(|message| HubError::Body { url, message })?;
        }
        Ok(activity)
    }
}

fn timestamp(v: &Value) -> Option<Timestamp> {
    v.as_str().and_then(|s| s.parse().ok())
}

/// Adds a page of `GET /users` (paginated form) to `activity`; returns the next page's offset.
/// A server's own `last_activity` counts; for the default server, the user's too (what the
/// hub saw of the user through its proxy), whichever is later.
pub fn read_page(page: &Value, activity: &mut Activity) -> Result<Option<u64>, String> {
    let items = page.get("items").and_then(Value::as_array).ok_or("no items")?;
    for user in items {
        let Some(name) = user.get("name").and_then(Value::as_str) else { continue };
        let own = user.get("last_activity").and_then(timestamp);
        let servers = user.get("servers").and_then(Value::as_object);
        for (server, info) in servers.into_iter().flatten() {
            if let Some(at) = info.get("last_activity").and_then(timestamp) {
                activity.insert((name.to_string(), server.clone()), at);
            }
        }
        if let Some(own) = own {
            let default = activity.entry((name.to_string(), String::new())).or_insert(own);
            *default = (*default).max(own);
        }
    }
    Ok(page.pointer("/_pagination/next/offset").and_then(Value::as_u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    #[test]
    fn a_page_gives_each_servers_activity_and_the_next_offset() {
        let page = json!({
            "items": [
                {"name": "alice", "last_activity": "2026-12-01T10:00:00.123456Z",
                 "servers": {"": {"last_activity": "2026-12-01T09:00:00Z"}, "lab": {"last_activity": "2026-12-01T11:00:00Z"}}},
                {"name": "bob", "last_activity": "2026-12-01T08:00:00Z", "servers": {}},
                {"name": "carol", "last_activity": null},
                {"no": "name"},
            ],
            "_pagination": {"offset": 0, "limit": 200, "total": 400, "next": {"offset": 200, "limit": 200, "url": "..."}},
        });
        let mut activity = Activity::new();
        assert_eq!(read_page(&page, &mut activity), Ok(Some(200)));
        assert_eq!(activity[&("alice".into(), String::new())], at("2026-12-01T10:00:00.123456Z"), "the later of the user's and the server's");
        assert_eq!(activity[&("alice".into(), "lab".into())], at("2026-12-01T11:00:00Z"));
        assert_eq!(activity[&("bob".into(), String::new())], at("2026-12-01T08:00:00Z"));
        assert!(!activity.contains_key(&("carol".into(), String::new())), "no activity known: none made up");
        let last = json!({"items": [], "_pagination": {"offset": 200, "limit": 200, "total": 200, "next": null}});
        assert_eq!(read_page(&last, &mut activity), Ok(None));
        assert!(read_page(&json!([{"name": "x"}]), &mut activity).is_err(), "an unpaged answer is refused, not misread");
    }
}
