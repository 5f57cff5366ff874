//! A real `fleetspawn serve` process for the API, web and fuzz tests: the binary built by
//! cargo, on a free loopback port, against the local clusters, with a settings file of the
//! test's own (tokens for each role, a small spawn limit when asked).

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Tokens the test daemon accepts, one per role.
pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const HUB_TOKEN: &str = "test-hub-token";
/// Acts only as user `alice`.
pub const ALICE_TOKEN: &str = "test-alice-token";

/// A running daemon; killed on drop. Its log is kept in `dir/daemon.log`.
pub struct Daemon {
    pub url: String,
    pub dir: tempfile::TempDir,
    child: Child,
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Settings for a test daemon; `extra` is appended to the TOML (top-level keys first).
pub struct DaemonOptions<'a> {
    pub profiles: &'a Path,
    pub max_concurrent_spawns: usize,
    pub extra_auth: &'a str,
    /// The home namespace (its records); `None`: one of its own. A daemon started again on
    /// the same one finds the servers of the one before.
    pub home_namespace: Option<&'a str>,
    /// Top-level settings added to the test's own (keys it does not set already).
    pub settings: &'a str,
}

impl Default for DaemonOptions<'_> {
    fn default() -> Self {
        DaemonOptions { profiles: Path::new("tests/fixtures/profiles.toml"), max_concurrent_spawns: 64, extra_auth: "", home_namespace: None, settings: "" }
    }
}

impl Daemon {
    /// Starts `fleetspawn serve` and waits until `/readyz` answers 200.
    pub fn start(options: DaemonOptions<'_>) -> Daemon {
        let kubeconfig = super::kubeconfig();
        let dir = tempfile::tempdir().expect("tempdir");
        // The profiles are copied, so tests may edit them (hot reload).
        let profiles = dir.path().join("profiles.toml");
        std::fs::copy(super::repo().join(options.profiles), &profiles).expect("copy profiles");
        let port = free_port();
        let config = format!(
            r#"listen = "127.0.0.1:{port}"
kubeconfig = "{kubeconfig}"
profiles = "{profiles}"
max_concurrent_spawns = {max}
max_servers_per_user = 3
home_namespace = "{home}"
{settings}

[auth]
tokens = [
  {{ name = "admin", sha256 = "{admin}", role = "admin" }},
  {{ name = "hub", sha256 = "{hub}", role = "hub" }},
  {{ name = "alice", sha256 = "{alice}", role = {{ user = "alice" }} }},
]
trusted_proxies = ["127.0.0.1/32"]
admin_users = ["root"]
secure_cookies = false
cookie_secret = "a-test-cookie-secret-of-at-least-32-bytes"
{extra}
"#,
            kubeconfig = kubeconfig.display(),
            profiles = profiles.display(),
            max = options.max_concurrent_spawns,
            home = options.home_namespace.map_or_else(super::home_namespace, str::to_string),
            admin = sha256_hex(ADMIN_TOKEN),
            hub = sha256_hex(HUB_TOKEN),
            alice = sha256_hex(ALICE_TOKEN),
            extra = options.extra_auth,
            settings = options.settings,
        );
        let config_path = dir.path().join("fleetspawn.toml");
        std::fs::File::create(&config_path).and_then(|mut f| f.write_all(config.as_bytes())).expect("write config");
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_fleetspawn"))
            .args(["--config"])
            .arg(&config_path)
            .args(["--log-format", "json", "serve"])
            .env("FLEETSPAWN_LOG", "info,fleetspawn=debug")
            .env_remove("FLEETSPAWN_KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start fleetspawn serve");
        let daemon = Daemon { url: format!("http://127.0.0.1:{port}"), dir, child };
        daemon.wait_ready(Duration::from_secs(60));
        daemon
    }

    fn wait_ready(&self, timeout: Duration) {
        let started = Instant::now();
        while started.elapsed() < timeout {
            let ok = std::net::TcpStream::connect(self.url.trim_start_matches("http://"))
                .ok()
                .and_then(|mut s| {
                    s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").ok()?;
                    let mut buf = String::new();
                    std::io::Read::read_to_string(&mut s, &mut buf).ok()?;
                    Some(buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200"))
                })
                .unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("fleetspawn serve not ready after {timeout:?}; log:\n{}", self.log());
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's (editable) copy of the profiles.
    pub fn profiles_path(&self) -> PathBuf {
        self.dir.path().join("profiles.toml")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(started.elapsed() < Duration::from_secs(90), "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
