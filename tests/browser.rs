//! The web form in a real browser: headless Chromium driven over WebDriver (chromedriver on a
//! free port, `fantoccini` as the client) against a real `fleetspawn serve` on the local
//! clusters.
//!
//! - pick a profile, set its options (a choice and a free-text image), start it, watch the live
//!   progress reach 100 and land on the server's URL, then stop it from the home page;
//! - a profile whose image cannot be pulled: the cause in words and a way back;
//! - a tampered form (CSRF) is refused; cookies are HttpOnly and SameSite;
//! - the administrators' page: every instance, cluster health.
//!
//! The server URL points at a tiny HTTP server the test runs (standing in for the ingress), so
//! the landing page really loads. Screenshots of every step go to `target/screenshots/`
//! (kept as CI artifacts).
//!
//! Needs Debian's `chromium` and `chromium-driver` (`./dev test` installs them): without them
//! the test fails, it never skips.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::browser::{Browser, WAIT};
use common::daemon::{Daemon, DaemonOptions, ADMIN_TOKEN};
use fleetspawn_core::naming::InstanceKey;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

// ---------------------------------------------------------------------------------------------
// The stand-in for the ingress, and the daemon
// ---------------------------------------------------------------------------------------------

/// A tiny HTTP server answering every path with a page saying "hello from the server". The
/// daemon's readiness probes (`ready_check_url`) get 503 for `hold` after the first one, so the
/// spawn waits there and the browser sees the progress page live.
struct Landing {
    url: String,
    probes: Arc<AtomicUsize>,
    pages: Arc<Mutex<Vec<String>>>,
}

async fn landing(hold: Duration) -> Landing {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the landing server");
    let url = format!("http://127.0.0.1:{}", listener.local_addr().expect("addr").port());
    let probes = Arc::new(AtomicUsize::new(0));
    let pages = Arc::new(Mutex::new(Vec::new()));
    let first_probe: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (p, g) = (probes.clone(), pages.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { continue };
            let (probes, pages, first_probe) = (p.clone(), g.clone(), first_probe.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let from_browser = head.lines().any(|l| l.to_ascii_lowercase().starts_with("user-agent:") && l.contains("Chrome"));
                let (status, body) = if from_browser {
                    pages.lock().unwrap().push(path.clone());
                    let body = format!(
                        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Notebook</title></head>\
                         <body style=\"font-family:system-ui,sans-serif;margin:4rem\"><h1>hello from the server</h1>\
                         <p>You are at <code>{path}</code>.</p></body></html>"
                    );
                    ("200 OK", body)
                } else {
                    probes.fetch_add(1, Ordering::SeqCst);
                    let first = *first_probe.lock().unwrap().get_or_insert_with(Instant::now);
                    if first.elapsed() < hold {
                        ("503 Service Unavailable", "starting".to_string())
                    } else {
                        ("200 OK", "hello from the server".to_string())
                    }
                };
                let response =
                    format!("HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Landing { url, probes, pages }
}

/// The browser test's profiles with the landing server as every profile's ingress URL.
fn web_profiles(dir: &Path, landing_url: &str) -> PathBuf {
    let text = std::fs::read_to_string(common::repo().join("tests/fixtures/web-profiles.toml")).expect("web-profiles.toml");
    let path = dir.join("web-profiles.toml");
    std::fs::write(&path, text.replace("__LANDING__", landing_url)).expect("write profiles");
    path
}

/// A daemon where loopback browsers act as `local_user`, on the records of `home`.
async fn daemon(profiles: PathBuf, local_user: &str, home: &str) -> Daemon {
    let extra = format!("local_user = {local_user:?}\n");
    let home = home.to_string();
    tokio::task::spawn_blocking(move || {
        Daemon::start(DaemonOptions { profiles: &profiles, extra_auth: &extra, home_namespace: Some(&home), ..Default::default() })
    })
    .await
    .expect("daemon start")
}

/// The daemon's registry view of `user`'s servers (through the admin API).
async fn instances_of(daemon: &Daemon, user: &str) -> Vec<Value> {
    let url = format!("{}/api/v1/instances?user={}", daemon.url, fleetspawn::http::pages::percent_encode(user));
    let response = reqwest::Client::new().get(&url).bearer_auth(ADMIN_TOKEN).send().await.expect("GET instances");
    assert!(response.status().is_success(), "GET {url}: {}", response.status());
    response.json().await.expect("instances JSON")
}

/// Stops `user`'s default server through the API (cleanup when a test fails half-way).
async fn stop_via_api(daemon: &Daemon, user: &str) {
    let url = format!("{}/api/v1/users/{}/server", daemon.url, fleetspawn::http::pages::percent_encode(user));
    let _ = reqwest::Client::new().delete(&url).bearer_auth(ADMIN_TOKEN).send().await;
}

fn kubectl_pod(context: &str, key: &str, jsonpath: &str) -> String {
    common::kubectl(context, &["get", "pods", "-n", "fleetspawn-test", "-l", &format!("fleetspawn.io/instance={key}"), "-o", &format!("jsonpath={jsonpath}")])
}

/// Follows the progress bar in the page until it reaches 100: every value it showed, the
/// messages listed then, and the status line.
const FOLLOW_PROGRESS: &str = r#"
const done = arguments[arguments.length - 1];
const bar = document.querySelector("progress.bar");
if (!bar) { done({ error: "no progress bar at " + location.href }); return; }
const seen = [Number(bar.value)];
const snapshot = () => ({
  seen,
  messages: Array.from(document.querySelectorAll(".log li"), (li) => li.textContent),
  status: (document.querySelector(".status") || {}).textContent || "",
  title: (document.querySelector("h1") || {}).textContent || "",
  label: (document.querySelector(".percent") || {}).textContent || "",
  open: (document.querySelector(".ready-link") || {}).href || "",
});
if (bar.value >= 100) { done(snapshot()); return; }
new MutationObserver(() => {
  seen.push(Number(bar.value));
  if (bar.value >= 100) done(snapshot());
}).observe(bar, { attributes: true, attributeFilter: ["value"] });
"#;

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_a_server_with_options_watch_it_start_land_on_it_and_stop_it() {
    let landing = landing(Duration::from_millis(2500)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let user = common::unique("web");
    let home = common::home_namespace();
    let d = daemon(web_profiles(dir.path(), &landing.url), &user, &home).await;
    let b = Browser::start().await;

    // Home: the profiles as cards, the default first and preselected options.
    b.goto(&format!("{}/", d.url)).await;
    assert_eq!(b.client.title().await.expect("title"), "Your servers · fleetspawn");
    assert!(b.text(".empty").await.contains("You have no servers running"));
    let cards = b.find_all("form.card").await;
    assert_eq!(cards.len(), 3, "one card per profile");
    let first = cards[0].text().await.expect("card text");
    assert!(first.contains("Python notebook") && first.contains("JupyterLab with the scientific Python stack") && first.contains("cluster-b"), "{first}");
    assert!(first.to_lowercase().contains("default"), "the default profile is marked: {first}");
    let any = cards[1].text().await.expect("card text");
    assert!(any.contains("cluster-a") && any.contains("cluster-b") && any.contains("cluster-c"), "{any}");
    assert_eq!(b.find("#notebook--image").await.prop("value").await.expect("value").as_deref(), Some("scipy"), "the default choice is preselected");
    assert_eq!(b.find("#notebook--size").await.prop("value").await.expect("value").as_deref(), Some("small"));
    assert!(first.contains("an image from quay.io/jupyter"), "the free text's hint is shown: {first}");
    let other = b.find("input[name='other.image']").await;
    assert!(!other.is_displayed().await.expect("displayed"), "the free-text field shows only once “Other…” is picked");
    // The session cookie is HttpOnly and SameSite=Strict.
    let cookie = b.client.get_named_cookie("fleetspawn_session").await.expect("session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    b.screenshot_full("01-home").await;

    // Not an administrator: no Instances link, and the admin page says so.
    assert!(b.find_all("a[href='/admin']").await.is_empty());
    b.goto(&format!("{}/admin", d.url)).await;
    assert_eq!(b.text("h1").await, "Not allowed");
    assert!(b.find_all("a.button[href='/']").await.len() == 1, "a way back");
    b.goto(&format!("{}/", d.url)).await;

    // Pick options: a free-text image ("Other…") and the medium size.
    b.find("#notebook--image").await.select_by_value(fleetspawn::http::web::OTHER).await.expect("pick Other");
    let other = b.find("input[name='other.image']").await;
    assert!(other.is_displayed().await.expect("displayed"), "“Other…” shows the free-text field");
    other.send_keys("quay.io/jupyter/r-notebook:latest").await.expect("type an image");
    b.find("#notebook--size").await.select_by_value("medium").await.expect("pick medium");
    b.screenshot("02-options").await;
    b.find("form.card button[type='submit']").await.click().await.expect("start");

    // The progress page, live: the readiness probe is held at the landing server for a while.
    b.wait_for_url("the progress page", |u| u.contains("/progress")).await;
    b.wait_for(".log li").await;
    b.screenshot("03-progress").await;
    let followed = b.client.execute_async(FOLLOW_PROGRESS, vec![]).await.expect("follow the progress bar");
    assert!(followed.get("error").is_none(), "{followed}");
    tokio::time::sleep(Duration::from_millis(250)).await; // the bar's transition
    b.screenshot("04-ready").await;
    let seen: Vec<u64> = followed["seen"].as_array().expect("seen").iter().filter_map(Value::as_u64).collect();
    let messages: Vec<&str> = followed["messages"].as_array().expect("messages").iter().filter_map(Value::as_str).collect();
    assert_eq!(seen.last(), Some(&100), "{followed}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "the bar never goes back: {seen:?}");
    assert!(seen.iter().any(|v| (1..100).contains(v)), "live values were shown on the way: {seen:?}");
    let expected_url = format!("{}/user/{user}/", landing.url);
    assert!(messages.iter().any(|m| m.contains("Waiting for") && m.contains(&expected_url)), "{messages:?}");
    assert_eq!(messages.last().copied(), Some(format!("Server ready at {expected_url}").as_str()), "{messages:?}");
    assert_eq!(followed["title"], "Your server is ready", "{followed}");
    assert_eq!(followed["status"], "Opening your server…", "{followed}");
    assert_eq!(followed["label"], "100%", "{followed}");
    assert_eq!(followed["open"], expected_url, "a link to the server, should the redirect not happen: {followed}");
    assert!(landing.probes.load(Ordering::SeqCst) >= 2, "the daemon probed the URL before reporting ready");

    // Then the browser lands on the server.
    b.wait_for_url("the server's URL", |u| u == expected_url).await;
    let h1 = b.wait_for("h1").await.text().await.expect("h1");
    assert_eq!(h1, "hello from the server");
    assert!(landing.pages.lock().unwrap().contains(&format!("/user/{user}/")));
    b.screenshot("05-landed").await;

    // The options reached the pod.
    let key = InstanceKey::new(&user, "").key().to_string();
    assert_eq!(kubectl_pod("cluster-b", &key, "{.items[0].spec.containers[0].image}"), "quay.io/jupyter/r-notebook:latest");
    assert_eq!(kubectl_pod("cluster-b", &key, "{.items[0].spec.containers[0].resources.limits.cpu}"), "2");

    // Home lists the running server with its URL and a Stop button.
    b.goto(&format!("{}/", d.url)).await;
    let server = b.text(".servers .server").await;
    assert!(server.contains("Default server") && server.contains("Python notebook on cluster-b"), "{server}");
    assert!(server.to_lowercase().contains("running"), "{server}");
    assert_eq!(b.find(".server a.button").await.attr("href").await.expect("href").as_deref(), Some(expected_url.as_str()));
    b.screenshot_full("06-home-running").await;

    // Starting the running server again from the form just opens it.
    b.find("form.card button[type='submit']").await.click().await.expect("start again");
    b.wait_for_url("the server's URL again", |u| u == expected_url).await;
    assert_eq!(b.wait_for("h1").await.text().await.expect("h1"), "hello from the server");

    // Administrators see it among every instance, with the clusters' health.
    let admin = daemon(web_profiles(dir.path(), &landing.url), "root", &home).await;
    b.goto(&format!("{}/admin", admin.url)).await;
    let started = Instant::now();
    while !b.text("main").await.contains(&user) {
        assert!(started.elapsed() < WAIT, "the admin page never listed {user}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.client.refresh().await.expect("reload");
    }
    let clusters = b.find_all(".cluster").await;
    assert!(clusters.len() >= 3, "a card per cluster");
    for c in &clusters {
        let t = c.text().await.expect("cluster text").to_lowercase();
        assert!(t.contains("healthy") || t.contains("down"), "{t}");
    }
    assert!(b.text(".clusters-grid").await.contains("cluster-b"));
    b.screenshot_full("07-admin").await;
    // Filtered with the page's form (the filter lands in the URL): this user's running servers.
    b.find(".filters select[name='state']").await.select_by_value("running").await.expect("pick running");
    b.find(".filters input[name='user']").await.send_keys(&user).await.expect("type the user");
    b.find(".filters button[type='submit']").await.click().await.expect("filter");
    let filtered = b.wait_for_url("the filtered list", |u| u.contains("state=running")).await;
    assert!(filtered.contains(&format!("user={user}")), "{filtered}");
    let rows = b.find_all("tbody tr").await;
    assert_eq!(rows.len(), 1, "exactly this user's one server");
    assert!(rows[0].text().await.expect("row").contains(&user));
    assert!(b.text("h1 .count").await.contains(" of "), "the count says it is filtered");
    b.goto(&format!("{}/admin?state=sleeping", admin.url)).await;
    assert!(b.text("main").await.contains("“state”"), "a wrong filter names its field");
    drop(admin);

    // Stop it from the home page.
    b.goto(&format!("{}/", d.url)).await;
    b.find(".server form[action='/stop'] button").await.click().await.expect("stop");
    b.wait_for(".empty").await;
    assert!(b.text("main").await.contains("You have no servers running"));
    assert_eq!(common::objects_of("cluster-b", &key), Vec::<String>::new(), "every object gone after the stop");
    assert!(instances_of(&d, &user).await.is_empty());
    b.screenshot("08-stopped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_that_fails_says_why_in_words_with_a_way_back() {
    let landing = landing(Duration::ZERO).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let user = common::unique("webfail");
    let home = common::home_namespace();
    let d = daemon(web_profiles(dir.path(), &landing.url), &user, &home).await;
    let b = Browser::start().await;
    b.goto(&format!("{}/", d.url)).await;

    // A form whose CSRF token was tampered with is refused, in words.
    let broken = "form.card:has(input[name='profile'][value='broken-image'])";
    b.client.execute(&format!("document.querySelector(\"{broken} input[name='csrf_token']\").value = 'forged'"), vec![]).await.expect("tamper with the token");
    b.find(&format!("{broken} button[type='submit']")).await.click().await.expect("submit");
    let alert = b.wait_for_text(".alert.error", "expired").await;
    assert!(alert.contains("Your server was not started"), "{alert}");
    assert!(instances_of(&d, &user).await.is_empty(), "nothing started");
    b.screenshot("10-csrf-refused").await;

    // A free-text value that does not match the option's pattern is refused, in words.
    b.find("#notebook--image").await.select_by_value(fleetspawn::http::web::OTHER).await.expect("pick Other");
    b.find("input[name='other.image']").await.send_keys("docker.io/evil:latest").await.expect("type");
    b.find("form.card button[type='submit']").await.click().await.expect("submit");
    b.wait_for_text(".alert.error", "“docker.io/evil:latest” cannot be used as Image: enter an image from quay.io/jupyter").await;
    assert!(instances_of(&d, &user).await.is_empty(), "nothing started");
    b.screenshot("11-bad-option").await;

    // The image cannot be pulled: the progress page explains it and offers a way back.
    b.find(&format!("{broken} button[type='submit']")).await.click().await.expect("start broken-image");
    b.wait_for_url("the progress page", |u| u.contains("/progress")).await;
    let explain = b.wait_for(".failure:not([hidden]) .explain").await;
    let explain = explain.text().await.expect("explanation");
    assert!(explain.contains("could not be downloaded"), "{explain}");
    assert_eq!(b.text("h1").await, "Your server could not start");
    b.find(".failure details summary").await.click().await.expect("open the details");
    let cause = b.text(".failure .cause").await;
    assert!(cause.contains("ErrImagePull") || cause.contains("example.invalid/no-such-image"), "{cause}");
    b.screenshot("12-failed").await;

    // The way back: home, where the failed server is listed with why it failed and can be
    // cleared away.
    b.find(".failure a.button[href='/']").await.click().await.expect("back");
    let home = format!("{}/", d.url);
    b.wait_for_url("the home page", |u| u == home).await;
    let servers = b.find_all(".servers .server").await;
    if let Some(s) = servers.first() {
        let t = s.text().await.expect("text");
        assert!(t.to_lowercase().contains("failed"), "{t}");
        b.screenshot("13-home-after-failure").await;
        b.find(".server form[action='/stop'] button").await.click().await.expect("clear the failed server");
        b.wait_for(".empty").await;
    }
    assert!(b.text("main").await.contains("You have no servers running"));
    stop_via_api(&d, &user).await;
    let key = InstanceKey::new(&user, "").key().to_string();
    assert_eq!(common::objects_of("cluster-a", &key).iter().filter(|o| o.starts_with("pod/")).count(), 0, "no pod left");
}
