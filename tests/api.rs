//! The daemon's REST API, driven over HTTP against a real `fleetspawn serve` process and the
//! real local clusters: start, progress (SSE), status, stop, who may do what, bad input, the
//! spawn limit, the admin views, profile hot reload and shutdown. Each test uses users of its own.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{Daemon, DaemonOptions, ADMIN_TOKEN, ALICE_TOKEN, HUB_TOKEN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// How a request authenticates.
#[derive(Clone, Copy)]
enum As<'a> {
    Nobody,
    Token(&'a str),
    /// Identity headers, as the trusted proxy (the tests run on its address) sets them.
    Proxy {
        user: &'a str,
        groups: &'a str,
    },
}

struct Api {
    daemon: Daemon,
    http: reqwest::Client,
}

/// One answer: status, headers and the body (JSON, or `Value::Null` when empty).
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    /// Asserts the status and that the body is a JSON error with this code.
    fn expect_error(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.body["error"], code, "{}", self.body);
        assert!(self.body["detail"].as_str().is_some_and(|d| !d.is_empty()), "an error needs a detail: {}", self.body);
        self
    }
}

/// A path segment, percent-encoded.
fn seg(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// `/api/v1/users/U/servers/S`, or `/api/v1/users/U/server` for the default server.
fn server_path(user: &str, server: &str) -> String {
    if server.is_empty() {
        format!("/api/v1/users/{}/server", seg(user))
    } else {
        format!("/api/v1/users/{}/servers/{}", seg(user), seg(server))
    }
}

impl Api {
    fn start() -> Api {
        Api::with(DaemonOptions::default())
    }

    fn with(options: DaemonOptions<'_>) -> Api {
        Api { daemon: Daemon::start(options), http: reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("client") }
    }

    fn request(&self, method: Method, path: &str, who: As<'_>) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.daemon.url));
        match who {
            As::Nobody => r,
            As::Token(t) => r.bearer_auth(t),
            As::Proxy { user, groups } => r.header("X-Forwarded-User", user).header("X-Forwarded-Groups", groups),
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Answer {
        let response = r.send().await.expect("the daemon answers");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a body");
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text}")) };
        assert!(!status.is_server_error(), "{status}: {body}\nlog:\n{}", self.daemon.log());
        Answer { status, headers, body }
    }

    async fn get(&self, path: &str, who: As<'_>) -> Answer {
        self.send(self.request(Method::GET, path, who)).await
    }

    async fn put(&self, path: &str, who: As<'_>, body: Value) -> Answer {
        self.send(self.request(Method::PUT, path, who).json(&body)).await
    }

    async fn delete(&self, path: &str, who: As<'_>) -> Answer {
        self.send(self.request(Method::DELETE, path, who)).await
    }

    /// Reads a progress stream to its end: `(event name, data)` in order.
    async fn progress(&self, path: &str, who: As<'_>) -> Vec<(String, Value)> {
        let response = self.request(Method::GET, &format!("{path}/progress"), who).send().await.expect("progress answers");
        assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap_or_default());
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        let text = tokio::time::timeout(Duration::from_secs(90), response.text()).await.expect("the stream ends within 90s").expect("the stream reads");
        parse_sse(&text)
    }

    /// Polls a server's status until `done` holds (at most 30 s) and returns the last answer.
    async fn status_until(&self, path: &str, who: As<'_>, done: impl Fn(&Answer) -> bool) -> Answer {
        let started = Instant::now();
        loop {
            let a = self.get(path, who).await;
            if done(&a) || started.elapsed() > Duration::from_secs(30) {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts the default-profile server of `user` as the hub and waits until it is ready.
    async fn running(&self, user: &str, server: &str, profile: &str) -> Value {
        let path = server_path(user, server);
        let started = self.put(&path, As::Token(HUB_TOKEN), json!({ "profile": profile })).await;
        assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
        let events = self.progress(&path, As::Token(HUB_TOKEN)).await;
        assert_eq!(events.last().map(|(name, _)| name.as_str()), Some("ready"), "{}", show(&events));
        started.body
    }
}

/// Splits a Server-Sent Events body into `(event, data)` pairs; comments (keep-alives) are skipped.
fn parse_sse(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = "message".to_string();
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                }
            }
            (!data.is_empty()).then(|| {
                let data = data.join("\n");
                (event, serde_json::from_str(&data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {data}")))
            })
        })
        .collect()
}

fn show(events: &[(String, Value)]) -> String {
    events.iter().map(|(name, data)| format!("{name}: {data}")).collect::<Vec<_>>().join("\n")
}

fn slugs(profiles: &Value) -> Vec<String> {
    profiles.as_array().expect("a list").iter().map(|p| p["slug"].as_str().expect("slug").to_string()).collect()
}

#[tokio::test]
async fn start_follow_progress_status_and_stop_leaves_nothing_behind() {
    let api = Api::start();
    let hub = As::Token(HUB_TOKEN);
    let user = common::unique("api.user@example.org");
    let path = server_path(&user, "notebook");

    let started = api.put(&path, hub, json!({ "profile": "a" })).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let i = &started.body;
    assert_eq!((i["user"].as_str(), i["server"].as_str(), i["profile"].as_str()), (Some(user.as_str()), Some("notebook"), Some("a")));
    assert_eq!(i["cluster"], "cluster-a");
    assert_eq!(i["state"], "pending");
    let key = i["key"].as_str().expect("key").to_string();

    let events = api.progress(&path, hub).await;
    let text = show(&events);
    let (last_name, last) = events.last().expect("events");
    assert_eq!(last_name, "ready", "{text}");
    assert_eq!(last["ready"], true, "{text}");
    let url = last["url"].as_str().expect("the ready event has the URL").to_string();
    assert!(url.starts_with("http://cluster-a.127.0.0.1.nip.io:8080/user/"), "{url}");
    assert!(events[..events.len() - 1].iter().all(|(name, _)| name == "progress"), "only the last event ends the spawn:\n{text}");
    let percents: Vec<u64> = events.iter().map(|(_, d)| d["progress"].as_u64().expect("progress")).collect();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "progress never goes back:\n{text}");
    assert_eq!(percents.last(), Some(&100));
    let pos = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle} missing from:\n{text}"));
    assert!(pos("Scheduled") < pos("Pulling") && pos("Pulling") < pos("Started"), "{text}");

    let status = api.status_until(&path, hub, |a| a.body["state"] == "running").await;
    assert_eq!(status.status, StatusCode::OK);
    let s = &status.body;
    assert_eq!(
        (s["state"].as_str(), s["url"].as_str(), s["cluster"].as_str(), s["profile"].as_str()),
        (Some("running"), Some(url.as_str()), Some("cluster-a"), Some("a")),
        "{s}"
    );
    assert!(s["started_at"].is_string() && s["cause"].is_null(), "{s}");
    assert!(common::objects_of("cluster-a", &key).len() >= 5, "{:?}", common::objects_of("cluster-a", &key));

    // Asking again for a running server answers it, unchanged.
    let again = api.put(&path, hub, json!({ "profile": "a" })).await;
    assert_eq!((again.status, again.body["key"].as_str()), (StatusCode::OK, Some(key.as_str())), "{}", again.body);

    let stopped = api.delete(&path, hub).await;
    assert_eq!(stopped.status, StatusCode::NO_CONTENT, "{}", stopped.body);
    assert_eq!(common::objects_of("cluster-a", &key), Vec::<String>::new(), "every object gone after stop");
    api.status_until(&path, hub, |a| a.status == StatusCode::NOT_FOUND).await.expect_error(404, "not_found");
    // The old `ready` (with a URL that no longer answers) is not replayed for a stopped server.
    api.get(&format!("{path}/progress"), hub).await.expect_error(404, "not_found");
    // Stopping is idempotent.
    assert_eq!(api.delete(&path, hub).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn the_default_server_routes_and_a_late_subscriber_gets_the_history() {
    let api = Api::start();
    let hub = As::Token(HUB_TOKEN);
    let user = common::unique("late");
    let default = server_path(&user, "");
    let slash = format!("/api/v1/users/{}/servers/", seg(&user));

    // `{}` starts the default profile (a); a second start answers the spawn in flight.
    let first = api.put(&default, hub, json!({})).await;
    assert_eq!((first.status, first.body["profile"].as_str(), first.body["server"].as_str()), (StatusCode::ACCEPTED, Some("a"), Some("")), "{}", first.body);
    let second = api.send(api.request(Method::POST, &slash, hub).json(&json!({}))).await;
    assert!(matches!(second.status.as_u16(), 200 | 202), "{}", second.body);
    assert_eq!(second.body["key"], first.body["key"]);

    let live = api.progress(&default, hub).await;
    assert_eq!(live.last().map(|(n, _)| n.as_str()), Some("ready"), "{}", show(&live));
    let late = api.progress(&slash, hub).await;
    assert_eq!(late, live, "a late subscriber gets the whole history, then the end");

    let status = api.status_until(&slash, hub, |a| a.body["state"] == "running").await;
    assert_eq!(status.body["key"], first.body["key"]);
    assert_eq!(api.delete(&slash, hub).await.status, StatusCode::NO_CONTENT);
    api.status_until(&default, hub, |a| a.status == StatusCode::NOT_FOUND).await.expect_error(404, "not_found");
}

#[tokio::test]
async fn remove_true_also_deletes_the_storage() {
    let api = Api::start();
    let hub = As::Token(HUB_TOKEN);
    let user = common::unique("storage");
    let path = server_path(&user, "");
    let key = api.running(&user, "", "with-storage").await["key"].as_str().expect("key").to_string();
    let pvcs = || common::objects_of("cluster-c", &key).into_iter().filter(|o| o.starts_with("persistentvolumeclaim")).count();
    assert_eq!(pvcs(), 1);

    assert_eq!(api.delete(&path, hub).await.status, StatusCode::NO_CONTENT);
    assert_eq!(common::objects_of("cluster-c", &key).len(), 1, "a plain stop keeps the PVC only: {:?}", common::objects_of("cluster-c", &key));
    assert_eq!(api.delete(&format!("{path}?remove=true"), hub).await.status, StatusCode::NO_CONTENT);
    assert_eq!(common::objects_of("cluster-c", &key), Vec::<String>::new(), "remove=true deletes the PVC too");
    api.delete(&format!("{path}?remove=maybe"), hub).await.expect_error(400, "invalid_body");
}

#[tokio::test]
async fn missing_or_wrong_tokens_are_401_and_users_only_touch_their_own_servers() {
    let api = Api::start();
    let owner = common::unique("owner");
    let other = common::unique("other");
    let me = As::Proxy { user: &owner, groups: "" };
    let them = As::Proxy { user: &other, groups: "" };
    let path = server_path(&owner, "");

    for who in [As::Nobody, As::Token("not-a-token")] {
        for a in [
            api.get("/api/v1/profiles", who).await,
            api.get(&path, who).await,
            api.put(&path, who, json!({})).await,
            api.delete(&path, who).await,
            api.get("/api/v1/instances", who).await,
        ] {
            a.expect_error(401, "unauthorized");
            assert_eq!(a.headers.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
        }
    }
    // A wrong token never falls back to the proxy's headers.
    let wrong = api.send(api.request(Method::GET, &path, me).bearer_auth("not-a-token")).await;
    wrong.expect_error(401, "unauthorized");

    // The owner (through the proxy) starts their server.
    let started = api.put(&path, me, json!({ "profile": "a" })).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);

    // Another user, and alice's token, can neither see nor touch it.
    for who in [them, As::Token(ALICE_TOKEN)] {
        api.get(&path, who).await.expect_error(403, "forbidden");
        api.put(&path, who, json!({ "profile": "a" })).await.expect_error(403, "forbidden");
        api.delete(&path, who).await.expect_error(403, "forbidden");
        api.get(&format!("{path}/progress"), who).await.expect_error(403, "forbidden");
        // Whether a server exists is not told either.
        api.get(&server_path(&owner, "no-such-server"), who).await.expect_error(403, "forbidden");
    }
    // Alice's token acts for alice (who has no such server).
    api.get(&server_path("alice", &common::unique("none")), As::Token(ALICE_TOKEN)).await.expect_error(404, "not_found");

    // The owner and the hub see it; the admin views are for administrators only.
    assert_eq!(api.get(&path, me).await.status, StatusCode::OK);
    assert_eq!(api.get(&path, As::Token(HUB_TOKEN)).await.status, StatusCode::OK);
    for who in [me, As::Token(HUB_TOKEN), As::Token(ALICE_TOKEN)] {
        api.get("/api/v1/instances", who).await.expect_error(403, "forbidden");
    }
    for who in [me, As::Token(ALICE_TOKEN)] {
        api.get("/api/v1/clusters", who).await.expect_error(403, "forbidden");
    }
    let clusters = api.get("/api/v1/clusters", As::Token(HUB_TOKEN)).await;
    let contexts: Vec<&str> = clusters.body.as_array().expect("list").iter().filter_map(|c| c["context"].as_str()).collect();
    for c in ["cluster-a", "cluster-b", "cluster-c"] {
        assert!(contexts.contains(&c), "{}", clusters.body);
    }
    // A proxy user named as an administrator sees every instance.
    let all = api.get(&format!("/api/v1/instances?user={}", seg(&owner)), As::Proxy { user: "root", groups: "" }).await;
    assert_eq!(all.body.as_array().map(Vec::len), Some(1), "{}", all.body);

    assert_eq!(api.delete(&path, me).await.status, StatusCode::NO_CONTENT);
    api.status_until(&path, me, |a| a.status == StatusCode::NOT_FOUND).await.expect_error(404, "not_found");
}

#[tokio::test]
async fn profiles_are_limited_by_group_and_list_their_options() {
    let api = Api::start();
    let user = common::unique("grouped");
    let plain = As::Proxy { user: &user, groups: "data" };
    let member = As::Proxy { user: &user, groups: "data, gpu-users" };

    let seen = api.get("/api/v1/profiles", plain).await;
    assert_eq!(seen.status, StatusCode::OK);
    let list = slugs(&seen.body);
    assert_eq!(list.first().map(String::as_str), Some("a"), "the default comes first: {list:?}");
    assert!(list.contains(&"with-options".into()) && !list.contains(&"groups-only".into()), "{list:?}");
    assert!(!slugs(&api.get("/api/v1/profiles", As::Token(ALICE_TOKEN)).await.body).contains(&"groups-only".into()));
    assert!(slugs(&api.get("/api/v1/profiles", member).await.body).contains(&"groups-only".into()));
    assert!(slugs(&api.get("/api/v1/profiles", As::Token(HUB_TOKEN)).await.body).contains(&"groups-only".into()));
    // A hub asks on behalf of a user in given groups (fleetspawn does not know the hub's groups).
    for (groups, allowed) in [("gpu-users", true), ("data,staff", false), ("", false)] {
        let seen = api.get(&format!("/api/v1/profiles?groups={groups}"), As::Token(HUB_TOKEN)).await;
        assert_eq!(slugs(&seen.body).contains(&"groups-only".into()), allowed, "groups={groups:?}");
    }

    // The options, as a form would show them.
    let with_options = seen.body.as_array().expect("list").iter().find(|p| p["slug"] == "with-options").expect("with-options").clone();
    assert_eq!(with_options["clusters"], json!(["cluster-c"]));
    assert_eq!(with_options["start_timeout"], 60, "a hub waits as long as the profile's start timeout");
    let image = &with_options["options"][0];
    assert_eq!((image["name"].as_str(), image["default"].as_str()), (Some("image"), Some("base")), "{image}");
    let choices: Vec<&str> = image["choices"].as_array().expect("choices").iter().filter_map(|c| c["value"].as_str()).collect();
    assert_eq!(choices, ["base", "scipy"]);
    assert!(image["free_text"]["regex"].as_str().is_some_and(|r| r.contains("quay")), "{image}");

    // Starting a profile of another group is forbidden, and nothing starts.
    let path = server_path(&user, "gpu");
    api.put(&path, plain, json!({ "profile": "groups-only" })).await.expect_error(403, "forbidden");
    api.get(&path, plain).await.expect_error(404, "not_found");
    let alices = server_path("alice", &common::unique("gpu"));
    api.put(&alices, As::Token(ALICE_TOKEN), json!({ "profile": "groups-only" })).await.expect_error(403, "forbidden");
    api.get(&alices, As::Token(ALICE_TOKEN)).await.expect_error(404, "not_found");
}

#[tokio::test]
async fn bad_input_is_refused_with_the_field_named() {
    let api = Api::start();
    let hub = As::Token(HUB_TOKEN);
    let user = common::unique("careless");
    let path = server_path(&user, "");

    api.put(&path, hub, json!({ "profile": "no-such-profile" })).await.expect_error(404, "unknown_profile");
    api.get(&server_path(&user, "never-started"), hub).await.expect_error(404, "not_found");
    api.get(&format!("{}/progress", server_path(&user, "never-started")), hub).await.expect_error(404, "not_found");
    api.get("/api/v1/no-such-route", hub).await.expect_error(404, "not_found");

    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({ "profile": "with-options", "options": { "image": "docker.io/evil:latest" } }), "bad_option", "options.image"),
        (json!({ "profile": "with-options", "options": { "colour": "blue" } }), "bad_option", "options.colour"),
        (json!({ "profile": "a", "options": { "image": "scipy" } }), "bad_option", "options.image"),
        (json!({ "profile": "with-options", "options": { "image": "line\nbreak" } }), "invalid_input", "options.image"),
        (json!({ "profile": "a", "env": { "1NOT_A_NAME": "x" } }), "invalid_input", "env.1NOT_A_NAME"),
        (json!({ "profile": "../etc" }), "invalid_input", "profile"),
        (json!({ "url_prefix": "/user/../admin/" }), "invalid_input", "url_prefix"),
    ];
    for (body, code, field) in cases {
        let a = api.put(&path, hub, body.clone()).await;
        a.expect_error(400, code);
        assert_eq!(a.body["field"], field, "{body} -> {}", a.body);
    }
    // A body that is not a start request at all.
    for body in [json!({ "profile": "a", "image": "x" }), json!({ "options": { "image": 5 } }), json!([1, 2])] {
        api.put(&path, hub, body).await.expect_error(400, "invalid_body");
    }
    let not_json = api.request(Method::PUT, &path, hub).header("content-type", "application/json").body("{\"profile\":");
    api.send(not_json).await.expect_error(400, "invalid_body");
    // Names in the path.
    let long = "u".repeat(300);
    let a = api.get(&server_path(&long, ""), hub).await;
    a.expect_error(400, "invalid_input");
    assert_eq!(a.body["field"], "user");
    let a = api.get(&server_path(&user, "tab\there"), hub).await;
    a.expect_error(400, "invalid_input");
    assert_eq!(a.body["field"], "server");
    // An oversized body is refused before it is read, still as JSON.
    let big = json!({ "profile": "a", "env": { "BIG": "x".repeat(100 * 1024) } });
    api.put(&path, hub, big).await.expect_error(413, "body_too_large");

    // Nothing of all that started anything; a good option value does.
    api.get(&path, hub).await.expect_error(404, "not_found");
    let started = api.put(&path, hub, json!({ "profile": "with-options", "options": { "image": "scipy" }, "env": { "GREETING": "hello" } })).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let events = api.progress(&path, hub).await;
    assert_eq!(events.last().map(|(n, _)| n.as_str()), Some("ready"), "{}", show(&events));
    assert_eq!(api.delete(&path, hub).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_spawn_storm_beyond_the_limit_gets_429_and_no_server_error() {
    let api = Api::with(DaemonOptions { max_concurrent_spawns: 2, ..Default::default() });
    let hub = As::Token(HUB_TOKEN);
    let prefix = common::unique("storm");
    let users: Vec<String> = (0..20).map(|i| format!("{prefix}-{i}")).collect();
    let paths: Vec<String> = users.iter().map(|u| server_path(u, "")).collect();
    let answers = futures::future::join_all(paths.iter().map(|p| api.put(p, hub, json!({ "profile": "a" })))).await;

    let accepted = answers.iter().filter(|a| a.status == StatusCode::ACCEPTED).count();
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS).collect();
    let statuses: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
    assert_eq!(accepted + refused.len(), users.len(), "only 202 and 429: {statuses:?}");
    assert!(accepted >= 1 && !refused.is_empty(), "{statuses:?}");
    for a in refused {
        a.expect_error(429, "too_many_spawns");
        assert!(a.headers.contains_key("retry-after"), "429 says when to retry");
    }
    // Stopping is never limited; stop everything (refused ones are already "not running").
    let stops = futures::future::join_all(paths.iter().map(|p| api.delete(p, hub))).await;
    assert!(stops.iter().all(|a| a.status == StatusCode::NO_CONTENT), "{:?}", stops.iter().map(|a| a.status).collect::<Vec<_>>());
}

#[tokio::test]
async fn instances_are_filtered_by_cluster_profile_state_and_user() {
    let api = Api::start();
    let admin = As::Token(ADMIN_TOKEN);
    let u1 = common::unique("listed");
    let u2 = common::unique("listed");
    api.running(&u1, "x", "a").await;
    api.running(&u2, "", "c").await;

    let list = |query: String| {
        let api = &api;
        async move {
            let a = api.get(&format!("/api/v1/instances?{query}"), admin).await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.body);
            a.body
                .as_array()
                .expect("a list")
                .iter()
                .map(|i| (i["user"].as_str().unwrap_or_default().to_string(), i["server"].as_str().unwrap_or_default().to_string()))
                .collect::<Vec<_>>()
        }
    };
    let (q1, q2) = (seg(&u1), seg(&u2));
    assert_eq!(list(format!("user={q1}")).await, [(u1.clone(), "x".to_string())]);
    assert_eq!(list(format!("user={q2}&cluster=cluster-c&profile=c")).await, [(u2.clone(), String::new())]);
    assert!(list(format!("user={q2}&cluster=cluster-a")).await.is_empty());
    assert!(list(format!("user={q1}&profile=c")).await.is_empty());
    let started = Instant::now();
    while list(format!("user={q1}&state=running")).await.is_empty() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(list(format!("user={q1}&state=running")).await.len(), 1);
    assert!(list(format!("user={q1}&state=failed")).await.is_empty());
    let everyone = list(String::new()).await;
    assert!(everyone.contains(&(u1.clone(), "x".into())) && everyone.contains(&(u2.clone(), String::new())));
    api.get("/api/v1/instances?state=sleeping", admin).await.expect_error(400, "invalid_body");
    api.get("/api/v1/instances?colour=red", admin).await.expect_error(400, "invalid_body");

    assert_eq!(api.delete(&server_path(&u1, "x"), admin).await.status, StatusCode::NO_CONTENT);
    assert_eq!(api.delete(&server_path(&u2, ""), admin).await.status, StatusCode::NO_CONTENT);
}

/// Waits (at most 15 s) until `f` holds, returning whether it did.
async fn eventually<F: std::future::Future<Output = bool>>(mut f: impl FnMut() -> F) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn profile_edits_take_effect_and_a_bad_edit_keeps_the_previous_profiles() {
    let api = Api::start();
    let admin = As::Token(ADMIN_TOKEN);
    let file = api.daemon.profiles_path();
    let original = std::fs::read_to_string(&file).expect("profiles");
    let slugs_now = || async { slugs(&api.get("/api/v1/profiles", admin).await.body) };
    assert!(!slugs_now().await.contains(&"hot".to_string()));

    // A good edit: a new profile, without a restart.
    let added = format!(
        "{original}\n[[profiles]]\nslug = \"hot\"\ndisplay_name = \"Added while running\"\ncontext = \"cluster-a\"\ningress_public_url = \"http://cluster-a.127.0.0.1.nip.io:8080\"\n"
    );
    std::fs::write(&file, &added).expect("edit");
    assert!(eventually(|| async { slugs_now().await.contains(&"hot".to_string()) }).await, "the new profile never showed:\n{}", api.daemon.log());
    let ready = api.get("/readyz", As::Nobody).await;
    assert_eq!((ready.status, &ready.body["profiles_error"]), (StatusCode::OK, &Value::Null), "{}", ready.body);

    // A bad edit: the previous profiles stay, the error (file:line) shows in /readyz.
    let broken_line = added.lines().count() + 2;
    std::fs::write(&file, format!("{added}\n[[profiles]\nslug = \"broken\"\n")).expect("edit");
    let error = || async { api.get("/readyz", As::Token(ADMIN_TOKEN)).await.body["profiles_error"].as_str().map(String::from) };
    assert!(eventually(|| async { error().await.is_some() }).await, "no error shown:\n{}", api.daemon.log());
    let shown = error().await.unwrap_or_default();
    assert!(shown.contains(&format!("profiles.toml:{broken_line}")), "file:line of the error, for administrators: {shown}");
    // Strangers (a probe, anyone who reaches the daemon) learn that it failed, not the file.
    for who in [As::Nobody, As::Token(ALICE_TOKEN), As::Token(HUB_TOKEN)] {
        let told = api.get("/readyz", who).await.body["profiles_error"].as_str().map(String::from).unwrap_or_default();
        assert!(told.contains("invalid") && !told.contains("profiles.toml") && !told.contains("broken"), "{told}");
    }
    let ready = api.get("/readyz", As::Nobody).await;
    assert_eq!((ready.status, &ready.body["ready"]), (StatusCode::OK, &json!(true)), "a bad edit does not make the daemon unready");
    let kept = slugs_now().await;
    assert!(kept.contains(&"hot".to_string()) && kept.contains(&"a".to_string()) && !kept.contains(&"broken".to_string()), "{kept:?}");
    assert!(api.daemon.log().contains(&format!("profiles.toml:{broken_line}")), "the error is logged with file:line");

    // Fixing it clears the error and applies the fixed file.
    std::fs::write(&file, &original).expect("fix");
    assert!(eventually(|| async { error().await.is_none() && !slugs_now().await.contains(&"hot".to_string()) }).await, "{}", api.daemon.log());
    let metrics = api.http.get(format!("{}/metrics", api.daemon.url)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("fleetspawn_profile_reloads_total{outcome=\"error\"} 1"), "{metrics}");
    assert!(metrics.contains("fleetspawn_profile_reloads_total{outcome=\"ok\"} 2"), "{metrics}");
}

#[tokio::test]
async fn operations_endpoints_and_request_ids() {
    let api = Api::start();
    let health = api.http.get(format!("{}/healthz", api.daemon.url)).send().await.expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
    let ready = api.get("/readyz", As::Nobody).await;
    assert_eq!((ready.status, &ready.body["ready"], &ready.body["unsynced_clusters"]), (StatusCode::OK, &json!(true), &json!([])));

    // A request id is answered back and appears in the log lines of that request.
    let id = common::unique("request-id");
    let r = api.send(api.request(Method::GET, "/api/v1/profiles", As::Token(HUB_TOKEN)).header("x-request-id", &id)).await;
    assert_eq!(r.headers.get("x-request-id").and_then(|v| v.to_str().ok()), Some(id.as_str()));
    let generated = api.get("/api/v1/profiles", As::Token(HUB_TOKEN)).await;
    assert!(generated.headers.get("x-request-id").is_some_and(|v| !v.is_empty()), "one is made up when none is sent");
    assert!(eventually(|| async { api.daemon.log().contains(&id) }).await, "request id not in the log");

    let metrics = api.http.get(format!("{}/metrics", api.daemon.url)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("fleetspawn_http_requests_total{route=\"/api/v1/profiles\",status=\"200\"}"), "{metrics}");

    let doc = api.get("/api/v1/openapi.json", As::Nobody).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["paths"]["/api/v1/users/{user}/servers/{server}"]["put"].is_object());
}

/// The Grafana dashboard (`deploy/grafana/fleetspawn.json`) against what a running daemon
/// exports after one spawn: every query names a metric it has (with the suffix its type gives
/// it), and every metric it has is on a panel.
#[tokio::test]
async fn the_grafana_dashboard_queries_only_exported_metrics_and_shows_them_all() {
    let api = Api::start();
    let path = server_path(&common::unique("grafana"), "");
    let started = api.put(&path, As::Token(HUB_TOKEN), json!({ "profile": "a" })).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let events = api.progress(&path, As::Token(HUB_TOKEN)).await;
    assert_eq!(events.last().map(|(name, _)| name.as_str()), Some("ready"), "{}", show(&events));
    let scraped = api.http.get(format!("{}/metrics", api.daemon.url)).send().await.expect("metrics").text().await.expect("text");
    // `# TYPE fleetspawn_x counter`: the families and their types.
    let families: std::collections::BTreeMap<&str, &str> =
        scraped.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split_once(' ')).collect();
    assert!(families.len() >= 10, "too few metrics scraped: {scraped}");
    let series_of = |name: &str| -> Option<String> {
        let typed = |family: &str, kind: &str| families.get(family).is_some_and(|t| *t == kind).then(|| family.to_string());
        typed(name, "gauge")
            .or_else(|| name.strip_suffix("_total").and_then(|f| typed(f, "counter")))
            .or_else(|| ["_bucket", "_count", "_sum"].iter().find_map(|suffix| name.strip_suffix(suffix).and_then(|f| typed(f, "histogram"))))
    };
    let text = std::fs::read_to_string(common::repo().join("deploy/grafana/fleetspawn.json")).expect("the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let name = regex::Regex::new(r"fleetspawn_[a-z_]+").expect("regex");
    let mut shown = std::collections::BTreeSet::new();
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("panel {} has no queries", panel["title"]));
        assert!(!targets.is_empty(), "panel {} has no queries", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("panel {}: a query without expr", panel["title"]));
            let names: Vec<&str> = name.find_iter(expr).map(|m| m.as_str()).collect();
            assert!(!names.is_empty(), "panel {}: {expr} names no fleetspawn metric", panel["title"]);
            for n in names {
                let family = series_of(n).unwrap_or_else(|| panic!("panel {}: {n} is not exported (families: {families:?})", panel["title"]));
                shown.insert(family);
            }
        }
    }
    let missing: Vec<&&str> = families.keys().filter(|f| !shown.contains(**f)).collect();
    assert!(missing.is_empty(), "exported but on no panel: {missing:?}");
    assert_eq!(api.delete(&path, As::Token(HUB_TOKEN)).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn sigterm_ends_open_progress_streams_and_exits_zero() {
    let home = common::home_namespace();
    let api = Api::with(DaemonOptions { home_namespace: Some(&home), ..Default::default() });
    let hub = As::Token(HUB_TOKEN);
    let user = common::unique("shutdown");
    let path = server_path(&user, "");
    let started = api.put(&path, hub, json!({ "profile": "c" })).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    // A client follows the progress while the daemon is told to stop.
    let stream = api.request(Method::GET, &format!("{path}/progress"), hub).send().await.expect("progress");
    assert_eq!(stream.status(), StatusCode::OK);
    let reader = tokio::spawn(async move { stream.text().await });

    let Api { daemon, .. } = api;
    let exit = tokio::task::spawn_blocking(move || daemon.terminate()).await.expect("terminate");
    assert!(exit.success(), "exit status after SIGTERM: {exit:?}");
    let _ = tokio::time::timeout(Duration::from_secs(30), reader).await.expect("the stream ended with the daemon");

    // A new daemon finds the server (the spawn reached a consistent point) and stops it.
    let api = Api::with(DaemonOptions { home_namespace: Some(&home), ..Default::default() });
    let a = api.get(&path, hub).await;
    assert!(matches!(a.status.as_u16(), 200 | 404), "{}", a.body);
    assert_eq!(api.delete(&path, hub).await.status, StatusCode::NO_CONTENT);
    let key = started.body["key"].as_str().expect("key");
    assert_eq!(common::objects_of("cluster-c", key), Vec::<String>::new());
}

/// Only the hub gives a server its route and its environment, and even the hub may route a
/// user's server only under that user's own path: never another user's path or `/` (an
/// ingress picks the longest matching prefix, so alice's pod would get bob's traffic).
#[tokio::test]
async fn only_the_hub_sets_url_prefix_and_env_and_only_to_the_users_own_path() {
    let api = Api::start();
    let alice = server_path("alice", "x");
    for body in [json!({ "profile": "a", "url_prefix": "/user/alice/x/" }), json!({ "profile": "a", "env": { "JUPYTERHUB_API_TOKEN": "forged" } })] {
        api.put(&alice, As::Token(ALICE_TOKEN), body.clone()).await.expect_error(403, "forbidden");
        api.put(&alice, As::Proxy { user: "alice", groups: "" }, body).await.expect_error(403, "forbidden");
    }
    let user = common::unique("prefix");
    let path = server_path(&user, "lab");
    for foreign in ["/user/bob/api/", "/", "/user/", &format!("/user/{user}/"), &format!("/user/{user}/lab/api/"), "/hub/"] {
        let refused = api.put(&path, As::Token(HUB_TOKEN), json!({ "profile": "a", "url_prefix": foreign })).await;
        refused.expect_error(403, "forbidden");
        assert_eq!(refused.body["field"], "url_prefix", "{}", refused.body);
    }
    assert!(common::objects_of("cluster-a", fleetspawn_core::naming::InstanceKey::new(&user, "lab").key()).is_empty(), "nothing created");
    let own = format!("/user/{user}/lab/");
    let started = api.put(&path, As::Token(HUB_TOKEN), json!({ "profile": "a", "url_prefix": own, "env": { "GREETING": "hi" } })).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    assert!(started.body["url"].as_str().is_some_and(|u| u.ends_with(&own)), "{}", started.body);
    let events = api.progress(&path, As::Token(HUB_TOKEN)).await;
    assert_eq!(events.last().map(|(name, _)| name.as_str()), Some("ready"), "{}", show(&events));
    assert_eq!(api.delete(&path, As::Token(HUB_TOKEN)).await.status, StatusCode::NO_CONTENT);
}

/// A profile's `hub_parameters` (a uid, a project claim): a user cannot send them; a hub's
/// bad value is a 400 naming the parameter with nothing created; good ones reach the Pod (its
/// securityContext, an env var) and the record.
#[tokio::test]
async fn only_the_hub_sends_hub_parameters_and_each_bad_one_is_named() {
    let home = common::home_namespace();
    let profiles = std::path::Path::new("tests/fixtures/hub-parameters-profiles.toml");
    let api = Api::with(DaemonOptions { profiles, home_namespace: Some(&home), ..Default::default() });
    let forged = json!({ "profile": "project", "hub_parameters": { "uid": 0 } });
    api.put(&server_path("alice", "forged"), As::Token(ALICE_TOKEN), forged.clone()).await.expect_error(403, "forbidden");
    api.put(&server_path("alice", "forged"), As::Proxy { user: "alice", groups: "" }, forged).await.expect_error(403, "forbidden");

    let user = common::unique("params");
    let path = server_path(&user, "");
    let hub = As::Token(HUB_TOKEN);
    for (parameters, field) in [
        (json!({ "uid": 999 }), "hub_parameters.uid"),
        (json!({ "uid": 70000 }), "hub_parameters.uid"),
        (json!({ "uid": "1000; rm -rf /" }), "hub_parameters.uid"),
        (json!({ "uid": 1000, "project": "../other" }), "hub_parameters.project"),
        (json!({ "uid": 1000, "project": "x".repeat(300) }), "hub_parameters.project"),
        (json!({ "uid": 1000, "runAsRoot": true }), "hub_parameters.runAsRoot"),
        (json!({}), "hub_parameters.uid"),
    ] {
        let refused = api.put(&path, hub, json!({ "profile": "project", "hub_parameters": parameters })).await;
        refused.expect_error(400, "bad_hub_parameter");
        assert_eq!(refused.body["field"], field, "{parameters}: {}", refused.body);
    }
    let key = fleetspawn_core::naming::InstanceKey::new(&user, "").key().to_string();
    assert!(common::objects_of("cluster-a", &key).is_empty(), "nothing created");
    api.get(&path, hub).await.expect_error(404, "not_found");

    let started = api.put(&path, hub, json!({ "profile": "project", "hub_parameters": { "uid": 4242, "project": "proj-a" } })).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let events = api.progress(&path, hub).await;
    assert_eq!(events.last().map(|(name, _)| name.as_str()), Some("ready"), "{}", show(&events));
    let pod = common::kubectl("cluster-a", &["get", "pods", "-A", "-l", &format!("fleetspawn.io/instance={key}"), "-o", "json"]);
    let pod: Value = serde_json::from_str(&pod).expect("pods JSON");
    let spec = &pod["items"][0]["spec"];
    assert_eq!((&spec["securityContext"]["runAsUser"], &spec["securityContext"]["runAsGroup"]), (&json!(4242), &json!(4242)), "{spec}");
    let env = spec["containers"][0]["env"].as_array().expect("env");
    assert!(env.iter().any(|e| e["name"] == "PROJECT" && e["value"] == "proj-a"), "{env:?}");
    let record = common::kubectl("cluster-a", &["get", "userservers", "-n", &home, &key, "-o", "jsonpath={.spec.hubParameters}"]);
    assert_eq!(serde_json::from_str::<Value>(&record).expect("hubParameters"), json!({ "uid": "4242", "project": "proj-a" }));
    assert_eq!(api.delete(&path, hub).await.status, StatusCode::NO_CONTENT);
}

/// A hub sends a new API token with every spawn of its own (after a hub restart, a failed
/// stop). A server that still holds the old token would fail its OAuth exchange, so a start
/// with a different env replaces it; the same env again answers the running server.
#[tokio::test]
async fn a_start_with_a_new_hub_token_replaces_the_server_holding_the_old_one() {
    let api = Api::start();
    let user = common::unique("token");
    let path = server_path(&user, "");
    let key = fleetspawn_core::naming::InstanceKey::new(&user, "");
    let body = |token: &str| json!({ "profile": "a", "env": { "JUPYTERHUB_API_TOKEN": token } });
    let pod_uid = || common::kubectl("cluster-a", &["get", "pod", "-n", "fleetspawn-test", &key.object_name(), "-o", "jsonpath={.metadata.uid}"]);
    let token_given = || {
        common::kubectl(
            "cluster-a",
            &["get", "secret", "-n", "fleetspawn-test", &key.object_name(), "-o", "go-template={{.data.JUPYTERHUB_API_TOKEN | base64decode}}"],
        )
    };
    assert_eq!(api.put(&path, As::Token(HUB_TOKEN), body("first")).await.status, StatusCode::ACCEPTED);
    let events = api.progress(&path, As::Token(HUB_TOKEN)).await;
    assert_eq!(events.last().map(|(name, _)| name.as_str()), Some("ready"), "{}", show(&events));
    let (first_pod, first_token) = (pod_uid(), token_given());
    assert_eq!(first_token, "first");

    let again = api.put(&path, As::Token(HUB_TOKEN), body("first")).await;
    assert_eq!(again.status, StatusCode::OK, "the same env: the running server, as it is: {}", again.body);
    assert_eq!(pod_uid(), first_pod);

    let renewed = api.put(&path, As::Token(HUB_TOKEN), body("second")).await;
    assert_eq!(renewed.status, StatusCode::ACCEPTED, "{}", renewed.body);
    let events = api.progress(&path, As::Token(HUB_TOKEN)).await;
    assert_eq!(events.last().map(|(name, _)| name.as_str()), Some("ready"), "{}", show(&events));
    assert_ne!(pod_uid(), first_pod, "the server holding the old token was replaced");
    assert_eq!(token_given(), "second");
    assert_eq!(api.delete(&path, As::Token(HUB_TOKEN)).await.status, StatusCode::NO_CONTENT);
}

/// One client cannot hold the daemon's streams: a user's servers may have at most 8 progress
/// streams open at once; the 9th gets 429 and a closed one frees its place.
#[tokio::test]
async fn progress_streams_are_limited_per_user() {
    let api = Api::start();
    let user = common::unique("streams");
    let path = server_path(&user, "");
    // A spawn that stays pending for a while (it cannot be scheduled; it fails after its grace).
    assert_eq!(api.put(&path, As::Token(HUB_TOKEN), json!({ "profile": "huge" })).await.status, StatusCode::ACCEPTED);
    let open = |_| async { api.request(Method::GET, &format!("{path}/progress"), As::Token(HUB_TOKEN)).send().await.expect("progress answers") };
    let streams = futures::future::join_all((0..8).map(open)).await;
    assert!(streams.iter().all(|r| r.status() == StatusCode::OK), "{:?}", streams.iter().map(|r| r.status()).collect::<Vec<_>>());
    let ninth = api.request(Method::GET, &format!("{path}/progress"), As::Token(HUB_TOKEN)).send().await.expect("answers");
    assert_eq!(ninth.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = ninth.json().await.expect("JSON");
    assert_eq!(body["error"], "too_many_streams", "{body}");
    drop(streams);
    let mut again = StatusCode::TOO_MANY_REQUESTS;
    for _ in 0..20 {
        again = api.request(Method::GET, &format!("{path}/progress"), As::Token(HUB_TOKEN)).send().await.expect("answers").status();
        if again == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(again, StatusCode::OK, "closed streams free their places");
    let _ = api.delete(&path, As::Token(HUB_TOKEN)).await;
}

/// One user's spawns that never become ready hold at most `max_spawns_per_user` of the slots:
/// other users still get theirs.
#[tokio::test]
async fn one_user_cannot_take_every_spawn_slot() {
    let api = Api::with(DaemonOptions { max_concurrent_spawns: 4, settings: "max_spawns_per_user = 2", ..Default::default() });
    let hog = common::unique("hog");
    let api = &api;
    let start = |user: &str, server: &str| {
        let path = server_path(user, server);
        async move { api.put(&path, As::Token(HUB_TOKEN), json!({ "profile": "huge" })).await }
    };
    assert_eq!(start(&hog, "").await.status, StatusCode::ACCEPTED);
    assert_eq!(start(&hog, "two").await.status, StatusCode::ACCEPTED);
    let third = start(&hog, "three").await;
    third.expect_error(429, "too_many_spawns_for_user");
    assert!(third.headers.contains_key("retry-after"), "{:?}", third.headers);
    let others = [common::unique("fair"), common::unique("fair")];
    for user in &others {
        assert_eq!(start(user, "").await.status, StatusCode::ACCEPTED, "{user} gets a slot while {hog} holds its share");
    }
    for (user, server) in [(hog.as_str(), ""), (hog.as_str(), "two"), (others[0].as_str(), ""), (others[1].as_str(), "")] {
        let _ = api.delete(&server_path(user, server), As::Token(HUB_TOKEN)).await;
    }
}

/// Identity headers sent twice (a client adding its own next to the proxy's) are not believed.
#[tokio::test]
async fn identity_headers_sent_twice_are_refused() {
    let api = Api::start();
    let twice = api.request(Method::GET, "/api/v1/instances", As::Nobody).header("X-Forwarded-User", "root").header("X-Forwarded-User", "alice");
    api.send(twice).await.expect_error(401, "unauthorized");
    let groups = api
        .request(Method::GET, "/api/v1/instances", As::Nobody)
        .header("X-Forwarded-User", "mallory")
        .header("X-Forwarded-Groups", "data")
        .header("X-Forwarded-Groups", "platform");
    api.send(groups).await.expect_error(401, "unauthorized");
    // Once is fine (root is an admin of the test daemon).
    assert_eq!(api.get("/api/v1/instances", As::Proxy { user: "root", groups: "" }).await.status, StatusCode::OK);
}

/// `local_user` lets browsers on this machine in without a login; a page elsewhere that
/// rebinds its DNS name to 127.0.0.1 must not get that: its requests carry its own `Host`.
#[tokio::test]
async fn local_user_is_refused_to_a_rebinding_host() {
    let api = Api::with(DaemonOptions { extra_auth: "local_user = \"dev\"\n", ..Default::default() });
    assert_eq!(api.get("/api/v1/profiles", As::Nobody).await.status, StatusCode::OK, "a local browser is let in");
    let rebound = api.request(Method::GET, "/api/v1/profiles", As::Nobody).header("Host", "rebind.evil:8080");
    api.send(rebound).await.expect_error(401, "unauthorized");
}

/// Names that look like another user's (a zero-width space, a byte order mark), read
/// differently than they are (a right-to-left override) or walk paths (a backslash) are
/// refused with 400 naming the field, before anything is created. (A `..` segment never
/// reaches the daemon through an HTTP client, which resolves it; the unit tests refuse it.)
#[tokio::test]
async fn look_alike_and_path_like_names_are_400_naming_the_field() {
    let api = Api::start();
    for (user, server, field) in [
        ("\u{feff}alice", "", "user"),
        ("ali\u{200b}ce", "", "user"),
        ("\u{202e}ecila", "", "user"),
        ("alice", "a\\b", "server"),
        ("alice", "x\u{2066}", "server"),
    ] {
        let refused = api.put(&server_path(user, server), As::Token(HUB_TOKEN), json!({ "profile": "a" })).await;
        refused.expect_error(400, "invalid_input");
        assert_eq!(refused.body["field"], field, "{user:?}/{server:?}: {}", refused.body);
    }
}

#[tokio::test]
async fn the_app_routes_requests() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    let loaded = fleetspawn::kube::fleet::load(Some(&common::kubeconfig())).expect("kubeconfig");
    let fleet = fleetspawn::kube::fleet::Fleet::connect(&loaded).await;
    let renderer = fleetspawn_core::bundle::Renderer::builtin().unwrap();
    let set = renderer.parse_profiles("profiles.toml", "[defaults]\nimage = \"quay.io/jupyter/base-notebook:latest\"\ningress_public_url = \"http://x.example.org\"\n[[profiles]]\nslug = \"cpu\"\ndisplay_name = \"CPU\"\ncontext = \"cluster-a\"\n").unwrap();
    let settings = fleetspawn::service::SpawnerSettings { home_namespace: common::home_namespace(), ..Default::default() };
    let spawner = fleetspawn::service::Spawner::start(fleet, set, renderer, settings, fleetspawn::metrics::Metrics::new()).await.expect("spawner");
    let token = fleetspawn::config::TokenConfig {
        name: "hub".into(),
        // sha256("t")
        sha256: "e3b98a4da31a127d4bde6e43033f66ba274cab0eb7eb1c70ec41402bf6273dd8".into(),
        role: fleetspawn::config::Role::Hub,
    };
    let auth = std::sync::Arc::new(fleetspawn::http::auth::Auth::new(&fleetspawn::config::AuthConfig { tokens: vec![token], ..Default::default() }).unwrap());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let state = fleetspawn::http::state::AppState::new(
        spawner,
        auth,
        fleetspawn::metrics::Metrics::new(),
        fleetspawn::reload::ReloadStatus::default(),
        fleetspawn::http::state::ShutdownSignal::new(rx),
    )
    .unwrap();
    let app = fleetspawn::http::app(state, &fleetspawn::config::HttpConfig::default());
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
    let big = Request::put("/api/v1/users/a/server")
        .header("content-type", "application/json")
        .header("content-length", "71680")
        .header("authorization", "Bearer t")
        .body(Body::from(vec![b' '; 70 * 1024]))
        .unwrap();
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
