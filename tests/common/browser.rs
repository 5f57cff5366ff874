//! Headless Chromium driven over WebDriver (chromedriver on a free port, `fantoccini` as the
//! client), for the tests where a person would click. Needs Debian's `chromium` and
//! `chromium-driver` (`./dev test` installs them): without them a test fails, it never skips.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// How long a page may take to show what a test waits for.
pub const WAIT: Duration = Duration::from_secs(60);

/// `name` on PATH (or in /usr/bin), or a failing test that says what to install.
pub fn program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]).map(|dir| dir.join(name)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "the browser test needs `{name}`, which is not installed: install Debian's chromium and \
                 chromium-driver (`apt-get install -y chromium chromium-driver`; `./dev test` does it)"
        )
    })
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// chromedriver on a free port and a headless Chromium session; both end on drop.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Browser {
        let chromium = program("chromium");
        let chromedriver = program("chromedriver");
        let port = free_port();
        let log = std::fs::File::create(std::env::temp_dir().join(format!("chromedriver-{port}.log"))).expect("chromedriver log");
        let mut driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = driver.try_wait() {
                panic!("chromedriver exited at start: {status}");
            }
            assert!(started.elapsed() < Duration::from_secs(20), "chromedriver not listening on {port} after 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("a Chromium profile dir");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            "--lang=en-US",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), json!({ "binary": chromium, "args": args }));
        let client = match ClientBuilder::native().capabilities(caps).connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(c) => c,
            Err(e) => {
                let _ = driver.kill();
                panic!("no Chromium session through chromedriver: {e}");
            }
        };
        client.update_timeouts(TimeoutConfiguration::new(Some(WAIT), Some(WAIT), None)).await.expect("set WebDriver timeouts");
        Browser { client, driver, _profile: profile }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    pub async fn url(&self) -> String {
        self.client.current_url().await.expect("current URL").to_string()
    }

    pub async fn find(&self, css: &str) -> Element {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e,
            Err(e) => panic!("no {css:?} on {}: {e}", self.url().await),
        }
    }

    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client.find_all(Locator::Css(css)).await.unwrap_or_else(|e| panic!("find {css:?}: {e}"))
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    /// Waits until `css` exists (after a navigation, say).
    pub async fn wait_for(&self, css: &str) -> Element {
        match self.client.wait().at_most(WAIT).for_element(Locator::Css(css)).await {
            Ok(e) => e,
            Err(e) => {
                let shot = self.screenshot("failure").await;
                let body = self.client.find(Locator::Css("body")).await.ok();
                let text = match body {
                    Some(b) => b.text().await.unwrap_or_default(),
                    None => String::new(),
                };
                panic!("{css:?} never appeared (at {}, see {}): {e}\npage text:\n{text}", self.url().await, shot.display())
            }
        }
    }

    /// Waits until an element `css` shows text containing `needle` (a page that replaces one
    /// with the same element, say the home page after a refused form); returns its text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let started = Instant::now();
        let mut last = String::new();
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                last = e.text().await.unwrap_or_default();
                if last.contains(needle) {
                    return last;
                }
            }
            if started.elapsed() > WAIT {
                let shot = self.screenshot("failure").await;
                panic!("{css:?} never said {needle:?} (last: {last:?}; see {})", shot.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the current URL satisfies `ok`.
    pub async fn wait_for_url(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let url = self.url().await;
            if ok(&url) {
                return url;
            }
            if started.elapsed() > WAIT {
                let shot = self.screenshot("failure").await;
                panic!("never reached {what}; still at {url} (see {})", shot.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a screenshot of the viewport as `target/screenshots/browser-NAME.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).expect("create target/screenshots");
        let path = dir.join(format!("browser-{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// The page's whole height as the window's, for a full-page screenshot; back after.
    pub async fn screenshot_full(&self, name: &str) -> PathBuf {
        let height = self.client.execute("return document.documentElement.scrollHeight", vec![]).await.ok().and_then(|v| v.as_u64()).unwrap_or(900);
        let _ = self.client.set_window_size(1280, (height as u32 + 140).clamp(900, 4000)).await;
        let path = self.screenshot(name).await;
        let _ = self.client.set_window_size(1280, 900).await;
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session dies with chromedriver (it ends its browsers).
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

pub fn screenshots_dir() -> PathBuf {
    super::repo().join("target/screenshots")
}
