//! fleetspawn without a hub, driving a real configurable-http-proxy itself (`[proxy]`): a
//! person in headless Chromium starts the example profile `lab` in fleetspawn's own form and
//! lands in JupyterLab served by a real pod on cluster-b's real node, through the proxy and
//! cluster-b's Traefik. The route is there before the spawn says ready, comes back when the
//! proxy restarts, goes when the server stops; a route fleetspawn did not add is left alone;
//! the routes' activity reaches the server's record.
//!
//! Needs configurable-http-proxy (`FLEETSPAWN_CHP`, or `./dev test`'s npm install in the
//! cache), Chromium, and the local clusters with their real nodes.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::browser::{free_port, Browser};
use common::daemon::{Daemon, DaemonOptions, ADMIN_TOKEN};
use serde_json::{json, Value};

const PROXY_TOKEN: &str = "a-proxy-token-for-the-hubless-test";

fn chp() -> PathBuf {
    let path = std::env::var_os("FLEETSPAWN_CHP").map(PathBuf::from).unwrap_or_else(|| {
        let cache =
            std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
        cache.join("fleetspawn/node/node_modules/.bin/configurable-http-proxy")
    });
    assert!(path.is_file(), "configurable-http-proxy is missing at {} (./dev test installs it with npm)", path.display());
    path
}

/// A configurable-http-proxy on fixed ports: dropping it (or `restart`) kills it.
struct Proxy {
    child: Child,
    port: u16,
    api_port: u16,
}

impl Proxy {
    fn start(port: u16, api_port: u16) -> Proxy {
        let child = Command::new(chp())
            .args(["--ip", "127.0.0.1", "--port", &port.to_string(), "--api-ip", "127.0.0.1", "--api-port", &api_port.to_string()])
            .env("CONFIGPROXY_AUTH_TOKEN", PROXY_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start configurable-http-proxy");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", api_port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "configurable-http-proxy's API not listening after 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Proxy { child, port, api_port }
    }

    fn api(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/api/routes{path}", self.api_port)
    }

    async fn routes(&self) -> Value {
        let r = reqwest::Client::new().get(self.api("")).header("Authorization", format!("token {PROXY_TOKEN}")).send().await.expect("routes");
        assert!(r.status().is_success(), "{}", r.status());
        r.json().await.expect("routes JSON")
    }

    /// Adds a route as someone else would (no fleetspawn mark).
    async fn add_foreign(&self) {
        let added = reqwest::Client::new()
            .post(self.api("/not-fleetspawns"))
            .header("Authorization", format!("token {PROXY_TOKEN}"))
            .json(&json!({ "target": "http://127.0.0.1:9" }))
            .send()
            .await
            .expect("add a route");
        assert!(added.status().is_success(), "{}", added.status());
    }

    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = Proxy::start(self.port, self.api_port);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn eventually<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_hub_fleetspawn_routes_its_proxy_to_a_real_jupyterlab() {
    let mut proxy = Proxy::start(free_port(), free_port());
    let user = common::unique("hubless");
    let public = format!("http://127.0.0.1:{}", proxy.port);
    let settings =
        format!("[proxy]\napi_url = \"http://127.0.0.1:{}\"\nauth_token = \"{PROXY_TOKEN}\"\npublic_url = \"{public}\"\ninterval = \"1s\"\n", proxy.api_port);
    let extra = format!("local_user = {user:?}\n");
    let home = common::home_namespace();
    let in_home = home.clone();
    let d = tokio::task::spawn_blocking(move || {
        let profiles = std::path::Path::new("profiles/example.toml");
        Daemon::start(DaemonOptions { profiles, extra_auth: &extra, settings: &settings, home_namespace: Some(&in_home), ..Default::default() })
    })
    .await
    .expect("daemon");
    let prefix = format!("/user/{user}");

    // A route fleetspawn did not add stays.
    proxy.add_foreign().await;

    // The person starts `lab` in fleetspawn's own form and follows the progress.
    let b = Browser::start().await;
    b.goto(&format!("{}/", d.url)).await;
    let mut started = false;
    for card in b.find_all("form.card").await {
        if card.text().await.unwrap_or_default().contains("JupyterLab (cluster B, real node)") {
            card.find(fantoccini::Locator::Css("button[type='submit']")).await.expect("its start button").click().await.expect("start");
            started = true;
            break;
        }
    }
    assert!(started, "no card for profile lab");
    b.wait_for_url("the progress page", |u| u.contains("/progress")).await;
    let link = b.wait_for(".ready-link").await;
    let href =
        eventually("the ready link's address", Duration::from_secs(240), async || link.attr("href").await.ok().flatten().filter(|h| h.contains("/user/")))
            .await;
    b.screenshot("hubless-01-ready").await;
    assert_eq!(href, format!("{public}{prefix}/"), "users go through the proxy");
    // The route was added before the spawn said ready.
    let routes = proxy.routes().await;
    assert_eq!(routes[&prefix]["target"], "http://127.0.0.1:18082", "{routes}");
    assert!(routes[&prefix]["fleetspawn"].is_string(), "marked as fleetspawn's: {routes}");

    // JupyterLab, through the proxy, Traefik and the pod.
    b.goto(&href).await;
    b.wait_for(".jp-LauncherCard").await;
    assert!(b.url().await.starts_with(&format!("{public}{prefix}/lab")), "{}", b.url().await);
    b.screenshot("hubless-02-jupyterlab").await;

    // A restarted proxy gets the route back within seconds; the foreign route is its own loss.
    proxy.restart();
    eventually("the route back after a proxy restart", Duration::from_secs(15), async || proxy.routes().await.get(&prefix).map(drop)).await;
    let status = reqwest::get(format!("{public}{prefix}/api/status")).await.expect("through the proxy");
    assert!(status.status().is_success(), "{}", status.status());

    // The routes' activity reaches the record (idle culling's source).
    let key = fleetspawn_core::naming::InstanceKey::new(&user, "").key().to_string();
    eventually("activity in the record", Duration::from_secs(30), async || {
        let got = common::kubectl("cluster-a", &["get", "userservers", "-n", &home, &key, "-o", "jsonpath={.status.lastActivity}"]);
        (!got.trim().is_empty()).then_some(())
    })
    .await;

    // Another foreign route, then the stop: fleetspawn's route goes, the foreign one stays.
    proxy.add_foreign().await;
    let stop = reqwest::Client::new().delete(format!("{}/api/v1/users/{user}/server", d.url)).bearer_auth(ADMIN_TOKEN).send().await.expect("stop");
    assert!(stop.status().is_success(), "{}", stop.status());
    eventually("the route gone after the stop", Duration::from_secs(30), async || proxy.routes().await.get(&prefix).is_none().then_some(())).await;
    assert!(proxy.routes().await.get("/not-fleetspawns").is_some(), "a route fleetspawn did not add stays");
}
