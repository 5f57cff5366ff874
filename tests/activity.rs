//! Idle culling with a real JupyterHub as the activity source: a server whose user the hub
//! sees active runs on, one whose user is idle past the profile's `idle_timeout` is stopped
//! with reason `Idle`. The hub is JupyterHub from the test virtualenv (with
//! configurable-http-proxy from npm), on loopback ports of its own.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetspawn::hub::HubApi;
use fleetspawn::kube::fleet::{self, Fleet};
use fleetspawn::service::{ActivitySource, SpawnError, SpawnRequest, Spawner, SpawnerSettings};
use fleetspawn_core::bundle::Renderer;
use fleetspawn_core::instance::InstanceState;
use fleetspawn_core::naming::InstanceKey;

const TOKEN: &str = "fleetspawn-activity-test-token-0123456789";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn cache() -> std::path::PathBuf {
    std::env::var_os("FLEETSPAWN_CACHE")
        .map(Into::into)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/fleetspawn"))
}

/// A JupyterHub process, killed on drop.
struct Hub {
    child: Child,
    api: String,
    _dir: tempfile::TempDir,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_hub() -> Hub {
    let venv = std::env::var_os("FLEETSPAWN_TEST_VENV").map(std::path::PathBuf::from).unwrap_or_else(|| cache().join("venv"));
    let chp =
        std::env::var_os("FLEETSPAWN_CHP").map(std::path::PathBuf::from).unwrap_or_else(|| cache().join("node/node_modules/.bin/configurable-http-proxy"));
    let dir = tempfile::tempdir().expect("tempdir");
    let (proxy, proxy_api, hub) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {proxy}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api}"
c.ConfigurableHTTPProxy.command = ["{chp}"]
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.db_url = "sqlite:///{dir}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{dir}/cookie_secret"
c.JupyterHub.services = [{{"name": "fleetspawn", "api_token": "{TOKEN}"}}]
c.JupyterHub.load_roles = [{{"name": "fleetspawn", "services": ["fleetspawn"],
    "scopes": ["list:users", "read:users", "read:servers", "admin:users", "users:activity"]}}]
"#,
        chp = chp.display(),
        dir = dir.path().display(),
    );
    std::fs::write(dir.path().join("jupyterhub_config.py"), config).expect("hub config");
    let log = std::fs::File::create(dir.path().join("hub.log")).expect("hub log");
    let child = Command::new(venv.join("bin/jupyterhub"))
        .args(["-f", "jupyterhub_config.py"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}/bin/jupyterhub: {e}", venv.display()));
    Hub { child, api: format!("http://127.0.0.1:{hub}/hub/api"), _dir: dir }
}

async fn hub_call(http: &reqwest::Client, method: reqwest::Method, url: &str, body: Option<serde_json::Value>) -> reqwest::StatusCode {
    let mut r = http.request(method, url).header("Authorization", format!("token {TOKEN}"));
    if let Some(body) = body {
        r = r.json(&body);
    }
    r.send().await.map(|r| r.status()).unwrap_or(reqwest::StatusCode::SERVICE_UNAVAILABLE)
}

#[tokio::test]
async fn idle_servers_are_culled_with_reason_idle_and_active_ones_run_on() {
    let hub = start_hub();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let until = Instant::now() + Duration::from_secs(60);
    while hub_call(&http, reqwest::Method::GET, &format!("{}/users", hub.api), None).await != reqwest::StatusCode::OK {
        assert!(Instant::now() < until, "JupyterHub did not answer at {}", hub.api);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (active, idle) = (common::unique("active"), common::unique("idle"));
    for user in [&active, &idle] {
        assert_eq!(hub_call(&http, reqwest::Method::POST, &format!("{}/users/{user}", hub.api), None).await, reqwest::StatusCode::CREATED);
    }

    let home = common::home_namespace();
    let loaded = fleet::load(Some(&common::kubeconfig())).expect("kubeconfig");
    let profiles = fleetspawn::sources::profiles_builtin(&common::repo().join("tests/fixtures/lifecycle-profiles.toml")).expect("profiles");
    let activity = ActivitySource { hub: HubApi::new(&hub.api, TOKEN).expect("hub client"), interval: Duration::from_secs(2) };
    let settings = SpawnerSettings { home_namespace: home.clone(), activity: Some(activity), resync: Duration::from_secs(3), ..Default::default() };
    let s = Spawner::start(Fleet::connect(&loaded).await, profiles, Renderer::builtin().expect("templates"), settings, fleetspawn::metrics::Metrics::new())
        .await
        .expect("spawner");
    for user in [&active, &idle] {
        s.spawn(SpawnRequest { user: user.clone(), profile: "idle-short".into(), ..Default::default() }).await.expect("spawn");
    }
    let running = |u: &str| s.status(u, "").is_ok_and(|v| v.state == InstanceState::Running);
    let until = Instant::now() + Duration::from_secs(60);
    while !(running(&active) && running(&idle)) {
        assert!(Instant::now() < until, "not both running: {:?} {:?}", s.status(&active, ""), s.status(&idle, ""));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The active user keeps using the hub; the idle one does nothing. Past the idle timeout
    // (20 s) and a few activity reads and reconciles, only the idle one is stopped.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let body = serde_json::json!({ "last_activity": now });
        assert_eq!(hub_call(&http, reqwest::Method::POST, &format!("{}/users/{active}/activity", hub.api), Some(body)).await, reqwest::StatusCode::OK);
        if matches!(s.status(&idle, ""), Err(SpawnError::NotFound)) {
            break;
        }
        assert!(Instant::now() < until, "the idle server was not culled: {:?}", s.status(&idle, ""));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let name = InstanceKey::new(&idle, "").key().to_string();
    let reason = common::kubectl("cluster-a", &["get", "userserver", "-n", &home, &name, "-o", "jsonpath={.status.failure.reason}"]);
    assert_eq!(reason, "Idle");
    assert!(running(&active), "the active server was culled: {:?}", s.status(&active, ""));
    let active_name = InstanceKey::new(&active, "").key().to_string();
    let seen = common::kubectl("cluster-a", &["get", "userserver", "-n", &home, &active_name, "-o", "jsonpath={.status.lastActivity}"]);
    assert!(!seen.is_empty(), "the active server's record has the hub's activity");
    s.stop(&active, "", false).await.expect("stop");
}
