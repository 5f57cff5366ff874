//! The daemon's settings: `config/fleetspawn.toml`, then `FLEETSPAWN_*`
//! environment variables (nested keys joined with `__`), read with figment.
//!
//! ```text
//! FLEETSPAWN_LISTEN=0.0.0.0:8080 FLEETSPAWN_MAX_CONCURRENT_SPAWNS=8 fleetspawn serve
//! ```
//!
//! Relative paths are relative to the daemon's working directory.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use fleetspawn_core::diagnostic::Diagnostic;
use fleetspawn_core::duration;
use fleetspawn_core::spans::{Document, KeyPath, Seg};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::net::IpAddr;

/// Where the settings are read from when no path is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/fleetspawn.toml";
/// Prefix of the environment variables that override settings.
pub const ENV_PREFIX: &str = "FLEETSPAWN_";

/// The daemon's settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Kubeconfig file; `None` = `KUBECONFIG`, then `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// The profiles file (default `profiles/example.toml`).
    pub profiles: PathBuf,
    /// A directory of operator templates overriding the built-in ones by file
    /// name (`pod.yaml.j2`, ...).
    pub templates_dir: Option<PathBuf>,
    /// Spawns in flight at once, over all users and clusters (default 64).
    pub max_concurrent_spawns: usize,
    /// Of those, spawns one user may have in flight at once (default 8), so one user's
    /// spawns that never become ready cannot take every slot.
    pub max_spawns_per_user: usize,
    /// Servers one user may run at once (default 3).
    pub max_servers_per_user: usize,
    /// The hub's `base_url` (default `/`): a hub's `url_prefix` must be the user's own path
    /// under it (`<hub_base_url>user/<user>/[<server>/]`).
    pub hub_base_url: String,
    /// How long an object without a known owner survives before garbage
    /// collection deletes it (default 60 s).
    #[serde(with = "duration")]
    pub gc_grace: Duration,
    /// The kubeconfig context of the home cluster, which holds the `UserServer` records
    /// (default: the first context of the kubeconfig, by name).
    pub home_context: Option<String>,
    /// The namespace of the records and of the Leases in the home cluster (default
    /// `fleetspawn`). Installations sharing a target cluster need different ones.
    pub home_namespace: String,
    /// Install or upgrade the `UserServer` CRD at start (default true; needs the right to).
    pub install_crd: bool,
    /// Where users' activity comes from, for idle culling (see `activity`).
    pub activity: ActivityConfig,
    /// A configurable-http-proxy fleetspawn routes users through, without a hub (see `proxy`).
    pub proxy: ProxyConfig,
    /// Limits on HTTP clients: timeouts and connection caps (see `http`).
    pub http: HttpConfig,
    /// Who may call the daemon: API tokens, trusted proxies, admins (see `auth`).
    pub auth: AuthConfig,
}

/// The `[http]` section: how long a client may take and how many connections it may hold, so
/// that slow or idle clients cannot exhaust the daemon's file descriptors or tasks.
///
/// ```toml
/// [http]
/// header_read_timeout = "15s"
/// body_timeout = "15s"
/// request_timeout = "2m"
/// max_connections = 10000
/// max_connections_per_client = 1000
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Longest wait for a request's line and headers, counted from when the connection is
    /// ready for one (so it also closes idle keep-alive connections); default 15 s.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// Longest pause while a request body is being sent; default 15 s.
    #[serde(with = "duration")]
    pub body_timeout: Duration,
    /// Longest time until the answer starts (progress streams then run on); default 2 min.
    /// A stop still waiting then answers 504 `request_timeout` and goes on.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Open connections in all; further ones wait in the listen backlog (default 10,000; keep
    /// it below the open-file limit).
    pub max_connections: NonZeroUsize,
    /// Open connections from one IP address; further ones are closed at once (default 1,000;
    /// a proxy or hub in front of every user counts as one client).
    pub max_connections_per_client: NonZeroUsize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout: Duration::from_secs(15),
            body_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(120),
            max_connections: const { NonZeroUsize::new(10_000).unwrap() },
            max_connections_per_client: const { NonZeroUsize::new(1_000).unwrap() },
        }
    }
}

/// The `[activity]` section: where users' last activity comes from (idle culling).
///
/// ```toml
/// [activity]
/// hub_api_url = "http://hub:8081/hub/api"
/// hub_api_token_file = "/etc/fleetspawn/hub-api-token"
/// interval = "1m"
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActivityConfig {
    /// JupyterHub's REST API; unset: no activity source, so no idle culling (lifespans still
    /// apply).
    pub hub_api_url: Option<String>,
    /// A token of a hub service whose role has the scopes `list:users`, `read:users:activity`
    /// and `read:servers`. Prefer `FLEETSPAWN_ACTIVITY__HUB_API_TOKEN` or the file.
    pub hub_api_token: Option<Secret>,
    /// File holding that token (trailing whitespace ignored).
    pub hub_api_token_file: Option<PathBuf>,
    /// How often activity is read (default 60 s).
    #[serde(with = "duration")]
    pub interval: Duration,
}

/// The `[proxy]` section: a configurable-http-proxy that fleetspawn drives itself, for use
/// without JupyterHub (with a hub, the hub's proxy routes users; leave this unset). As a
/// server becomes ready its route (`/user/<name>/[<server>/]` → its cluster's ingress) is
/// added; routes are reconciled every `interval` (a restarted proxy gets them back, stale
/// ones of this installation go, others' are left alone); users are given URLs under
/// `public_url`; the routes' `last_activity` is an activity source for idle culling.
///
/// ```toml
/// [proxy]
/// api_url = "http://127.0.0.1:8001"
/// auth_token_file = "/etc/fleetspawn/proxy-token"
/// public_url = "https://jupyter.example.org"
/// interval = "2s"
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// The proxy's REST API (`--api-ip`/`--api-port`); unset: no proxy.
    pub api_url: Option<String>,
    /// Its `CONFIGPROXY_AUTH_TOKEN`. Prefer `FLEETSPAWN_PROXY__AUTH_TOKEN` or the file.
    pub auth_token: Option<Secret>,
    /// File holding that token (trailing whitespace ignored).
    pub auth_token_file: Option<PathBuf>,
    /// The proxy's public address, as users' browsers reach it.
    pub public_url: Option<String>,
    /// How often routes are reconciled (default 2 s).
    #[serde(with = "duration")]
    pub interval: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig { api_url: None, auth_token: None, auth_token_file: None, public_url: None, interval: Duration::from_secs(2) }
    }
}

impl Default for ActivityConfig {
    fn default() -> Self {
        ActivityConfig { hub_api_url: None, hub_api_token: None, hub_api_token_file: None, interval: Duration::from_secs(60) }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            kubeconfig: None,
            profiles: PathBuf::from("profiles/example.toml"),
            templates_dir: None,
            max_concurrent_spawns: 64,
            max_spawns_per_user: 8,
            max_servers_per_user: 3,
            hub_base_url: "/".into(),
            gc_grace: Duration::from_secs(60),
            home_context: None,
            home_namespace: "fleetspawn".into(),
            install_crd: true,
            activity: ActivityConfig::default(),
            proxy: ProxyConfig::default(),
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
        }
    }
}

/// SHA-256 of `dev-admin-token`, the embedded default's admin token (its value is in the
/// README): refused on any address but loopback.
pub const DEV_TOKEN_SHA256: &str = "1734d503f6aa6a047c36d113cbad769f719c93784b469b771c4c3e7c63adbefd";

impl Config {
    /// Settings that are only safe on a loopback listen address (a local try-out) but would
    /// give anyone who reaches the daemon admin rights: the development token and
    /// `local_user`. Empty when `listen` is loopback or none is set. `serve` refuses to start
    /// with any; each can be turned off by the environment without editing the file.
    pub fn unsafe_exposure(&self) -> Vec<Diagnostic> {
        if self.listen.ip().is_loopback() {
            return Vec::new();
        }
        let problem = |path: String, message: String| Diagnostic { file: "settings".into(), line: None, path, message };
        let mut problems: Vec<Diagnostic> = self
            .auth
            .tokens
            .iter()
            .filter(|t| t.sha256.eq_ignore_ascii_case(DEV_TOKEN_SHA256))
            .map(|t| {
                problem(
                    format!("auth.tokens[{}]", t.name),
                    format!("the development token (its value is public) with listen = {}: replace the tokens, or set FLEETSPAWN_AUTH__TOKENS=[]", self.listen),
                )
            })
            .collect();
        if self.auth.local_user.as_deref().is_some_and(|u| !u.is_empty()) {
            problems.push(problem(
                "auth.local_user".into(),
                format!("logs in every browser as a user without a login; only on a loopback listen address, not {}: remove it, or set FLEETSPAWN_AUTH__LOCAL_USER=\"\"", self.listen),
            ));
        }
        problems
    }
}

/// Top-level setting names, the only `FLEETSPAWN_*` variables read (others,
/// such as a CLI's own variables, are left alone).
const FIELDS: &[&str] = &[
    "listen",
    "kubeconfig",
    "profiles",
    "templates_dir",
    "max_concurrent_spawns",
    "max_spawns_per_user",
    "max_servers_per_user",
    "hub_base_url",
    "gc_grace",
    "home_context",
    "home_namespace",
    "install_crd",
    "activity",
    "proxy",
    "http",
    "auth",
];

/// Every problem found while reading the settings.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    /// The file given explicitly does not exist or cannot be read.
    #[error("{path}: cannot read: {message}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// Values are missing, of the wrong type or unknown.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

impl Config {
    /// Reads the settings from `path` (which must exist), or, with `None`,
    /// from [`DEFAULT_CONFIG_PATH`] when it exists and built-in defaults
    /// otherwise; then applies `FLEETSPAWN_*` environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let file = match path {
            Some(path) => Some(read(path)?),
            None => {
                let default = Path::new(DEFAULT_CONFIG_PATH);
                if default.is_file() {
                    Some(read(default)?)
                } else {
                    None
                }
            }
        };
        Self::from_sources(file.as_ref().map(|(p, t)| (p.as_path(), t.as_str())), ENV_PREFIX)
    }

    /// Reads settings from the TOML `text` of the file `path`, then the
    /// environment variables starting with `env_prefix`.
    fn from_sources(file: Option<(&Path, &str)>, env_prefix: &str) -> Result<Self, ConfigError> {
        let env = Env::prefixed(env_prefix).split("__").filter(|key| {
            let top = key.as_str().split('.').next().unwrap_or_default();
            FIELDS.iter().any(|field| field.eq_ignore_ascii_case(top))
        });
        let mut figment = Figment::new();
        if let Some((path, text)) = file {
            // Syntax errors are reported with their line by our own parser.
            let doc = Document::parse(text).map_err(|err| {
                ConfigError::Invalid(vec![Diagnostic { file: path.display().to_string(), line: Some(err.line), path: String::new(), message: err.message }])
            })?;
            figment = figment.merge(Toml::string(text));
            return figment.merge(env).extract::<Config>().map_err(|err| invalid(err, env_prefix, Some((path, &doc))));
        }
        figment.merge(env).extract::<Config>().map_err(|err| invalid(err, env_prefix, None))
    }
}

fn read(path: &Path) -> Result<(PathBuf, String), ConfigError> {
    std::fs::read_to_string(path).map(|text| (path.to_owned(), text)).map_err(|err| ConfigError::Unreadable { path: path.to_owned(), message: err.to_string() })
}

/// Turns figment's errors into issues naming the file, line and key, or the
/// environment variable.
fn invalid(err: figment::Error, env_prefix: &str, file: Option<(&Path, &Document)>) -> ConfigError {
    let issues = err
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let from_env = e.metadata.as_ref().is_some_and(|m| m.name.contains("environment"));
            let (source, line) = match file {
                Some((path, doc)) if !from_env => {
                    let keypath = KeyPath(e.path.iter().map(|k| Seg::Key(k.clone())).collect());
                    (path.display().to_string(), doc.line(&keypath))
                }
                _ if from_env => (format!("environment {env_prefix}{}", e.path.join("__").to_uppercase()), None),
                _ => ("built-in defaults".to_owned(), None),
            };
            Diagnostic { file: source, line, path: key, message: e.kind.to_string() }
        })
        .collect();
    ConfigError::Invalid(issues)
}

/// Pod networks Kubernetes distributions use by default (kubeadm with Flannel, Calico, k3s,
/// GKE, EKS's VPC ranges, AKS kubenet): a trusted proxy range that covers one believes pods.
const COMMON_POD_NETWORKS: &[&str] = &["10.244.0.0/16", "192.168.0.0/16", "10.42.0.0/16", "10.4.0.0/14", "10.0.0.0/16", "10.1.0.0/16", "172.16.0.0/12"];

impl AuthConfig {
    /// Trusted proxy ranges wide enough to hold a common default pod network: any pod there
    /// could send identity headers and be believed. `serve` warns of each at start.
    pub fn trusted_ranges_over_pod_networks(&self) -> Vec<(IpNet, IpNet)> {
        let pods = COMMON_POD_NETWORKS.iter().filter_map(|n| n.parse::<IpNet>().ok());
        pods.flat_map(|pod| self.trusted_proxies.iter().filter(move |t| t.contains(&pod) || pod.contains(*t)).map(move |t| (*t, pod)))
            .filter(|(trusted, _)| trusted.prefix_len() < trusted.max_prefix_len())
            .collect()
    }
}

/// The `[auth]` section of the daemon's configuration.
///
/// ```toml
/// [auth]
/// trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]
/// admin_groups = ["platform"]
/// cookie_secret_file = "/etc/fleetspawn/cookie-secret"
///
/// [[auth.tokens]]
/// name = "jupyterhub"
/// sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
/// role = "hub"            # or "admin", or { user = "alice" }
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// API tokens, stored as SHA-256 hashes.
    pub tokens: Vec<TokenConfig>,
    /// Peers whose identity headers are believed: addresses or CIDR ranges.
    #[serde(deserialize_with = "deserialize_nets")]
    pub trusted_proxies: Vec<IpNet>,
    /// Header with the authenticated user's name, set by the proxy.
    pub user_header: String,
    /// Header with the user's groups (comma-separated), set by the proxy.
    pub groups_header: String,
    /// Proxy-authenticated users who are administrators.
    pub admin_users: Vec<String>,
    /// Members of any of these groups are administrators.
    pub admin_groups: Vec<String>,
    /// Secret for signing cookies (at least 32 bytes). Prefer the environment
    /// (`FLEETSPAWN_AUTH__COOKIE_SECRET` or however the config layer maps it) or `cookie_secret_file`.
    pub cookie_secret: Option<Secret>,
    /// File holding the cookie secret (trailing whitespace ignored).
    pub cookie_secret_file: Option<PathBuf>,
    /// Mark cookies `Secure` (sent over HTTPS only). Turn off only for plain-HTTP development.
    pub secure_cookies: bool,
    /// Development only: browser requests from a loopback address that carry neither a token
    /// nor identity headers act as this user. Never set it on a shared machine.
    pub local_user: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            tokens: Vec::new(),
            trusted_proxies: Vec::new(),
            user_header: "X-Forwarded-User".into(),
            groups_header: "X-Forwarded-Groups".into(),
            admin_users: Vec::new(),
            admin_groups: Vec::new(),
            cookie_secret: None,
            cookie_secret_file: None,
            secure_cookies: true,
            local_user: None,
        }
    }
}

/// A secret string that never shows in `Debug` output, logs or serialized settings.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One API token: a name for logs, the SHA-256 of the token (hex), and its role.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Shown in logs and audit lines instead of the token.
    pub name: String,
    /// Lowercase or uppercase hex SHA-256 of the token (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
    /// What the token may do.
    pub role: Role,
}

/// What an API token may do.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including the instance registry of every user.
    Admin,
    /// Acts on behalf of any user (a JupyterHub); not the admin endpoints.
    Hub,
    /// Acts only as this one user.
    User(String),
}

fn deserialize_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter().map(|s| parse_net(s).map_err(serde::de::Error::custom)).collect()
}

/// Parses `10.0.0.0/8`, `::1` or `127.0.0.1` (a bare address is a /32 or /128).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>().or_else(|_| s.parse::<IpAddr>().map(IpNet::from)).map_err(|_| format!("{s:?} is neither an IP address nor a CIDR range"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn wide_trusted_proxy_ranges_are_flagged_when_they_hold_a_pod_network() {
        let auth = |nets: &[&str]| super::AuthConfig { trusted_proxies: nets.iter().map(|n| n.parse().unwrap()).collect(), ..Default::default() };
        let wide = auth(&["10.0.0.0/8"]).trusted_ranges_over_pod_networks();
        assert!(wide.iter().any(|(t, p)| t.to_string() == "10.0.0.0/8" && p.to_string() == "10.244.0.0/16"), "{wide:?}");
        assert!(auth(&["127.0.0.1/32", "10.96.0.10/32", "203.0.113.0/24"]).trusted_ranges_over_pod_networks().is_empty());
    }

    use super::*;

    /// A prefix no variable uses.
    const NO_ENV: &str = "FLEETSPAWN_TEST_NEVER_SET_";

    #[test]
    fn defaults_without_a_file() {
        let config = Config::from_sources(None, NO_ENV).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.profiles, PathBuf::from("profiles/example.toml"));
    }

    #[test]
    fn file_values_and_durations() {
        let text = "listen = \"0.0.0.0:9000\"\ngc_grace = \"2m\"\nmax_servers_per_user = 1\n";
        let config = Config::from_sources(Some((Path::new("c.toml"), text)), NO_ENV).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.gc_grace, Duration::from_secs(120));
        assert_eq!(config.max_servers_per_user, 1);
        assert_eq!(config.max_concurrent_spawns, 64);
    }

    #[test]
    fn the_proxy_section() {
        let text = "[proxy]\napi_url = \"http://127.0.0.1:8001\"\nauth_token = \"t\"\npublic_url = \"http://p\"\ninterval = \"5s\"\n";
        let config = Config::from_sources(Some((Path::new("c.toml"), text)), NO_ENV).unwrap();
        assert_eq!(config.proxy.api_url.as_deref(), Some("http://127.0.0.1:8001"));
        assert_eq!(config.proxy.interval, Duration::from_secs(5));
        assert!(!format!("{config:?}").contains("\"t\""), "the token is never printed");
        assert_eq!(Config::default().proxy.interval, Duration::from_secs(2));
        let err = Config::from_sources(Some((Path::new("c.toml"), "[proxy]\napi_urll = \"x\"\n")), NO_ENV).unwrap_err().to_string();
        assert!(err.contains("c.toml:2") && err.contains("api_urll"), "{err}");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let text = "# settings\nlisten = \"x\"\n\nmax_concurrent_spawns = \"many\"\nbogus = 1\n";
        let err = Config::from_sources(Some((Path::new("c.toml"), text)), NO_ENV).unwrap_err().to_string();
        assert!(err.contains("c.toml:"), "{err}");
        let first = err.lines().next().unwrap_or_default();
        assert!(first.starts_with("c.toml:"), "{err}");
        let text = "listen = 5\n";
        let err = Config::from_sources(Some((Path::new("c.toml"), text)), NO_ENV).unwrap_err().to_string();
        assert!(err.starts_with("c.toml:1: listen: "), "{err}");
        let err = Config::from_sources(Some((Path::new("c.toml"), "\nbogus = 1\n")), NO_ENV).unwrap_err().to_string();
        assert!(err.starts_with("c.toml:2: bogus: ") || err.contains("bogus"), "{err}");
        let err = Config::from_sources(Some((Path::new("c.toml"), "a = [\n")), NO_ENV).unwrap_err().to_string();
        assert!(err.starts_with("c.toml:"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        // A prefix of this test's own, so no other test sees these variables.
        let prefix = "FLEETSPAWN_TEST_ENV_";
        std::env::set_var("FLEETSPAWN_TEST_ENV_MAX_CONCURRENT_SPAWNS", "8");
        std::env::set_var("FLEETSPAWN_TEST_ENV_GC_GRACE", "90s");
        std::env::set_var("FLEETSPAWN_TEST_ENV_CONFIG", "not a setting: ignored");
        let text = "max_concurrent_spawns = 2\nmax_servers_per_user = 5\n";
        let config = Config::from_sources(Some((Path::new("f.toml"), text)), prefix).unwrap();
        assert_eq!(config.max_concurrent_spawns, 8);
        assert_eq!(config.max_servers_per_user, 5);
        assert_eq!(config.gc_grace, Duration::from_secs(90));

        std::env::set_var("FLEETSPAWN_TEST_BAD_LISTEN", "nope");
        let err = Config::from_sources(None, "FLEETSPAWN_TEST_BAD_").unwrap_err().to_string();
        assert!(err.starts_with("environment FLEETSPAWN_TEST_BAD_LISTEN: listen: "), "{err}");
    }

    #[test]
    fn the_development_token_and_local_user_are_refused_off_loopback() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_PATH);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut shipped = Config::from_sources(Some((&path, &text)), NO_ENV).unwrap();
        assert!(shipped.unsafe_exposure().is_empty(), "fine on loopback: {:?}", shipped.unsafe_exposure());
        shipped.listen = "0.0.0.0:8080".parse().unwrap();
        let paths: Vec<String> = shipped.unsafe_exposure().into_iter().map(|d| d.path).collect();
        assert_eq!(paths, ["auth.tokens[dev-admin]", "auth.local_user"]);
        // Each can be turned off from the environment, without editing the file.
        std::env::set_var("FLEETSPAWN_TEST_EXPOSE_LISTEN", "0.0.0.0:8080");
        std::env::set_var("FLEETSPAWN_TEST_EXPOSE_AUTH__TOKENS", "[]");
        std::env::set_var("FLEETSPAWN_TEST_EXPOSE_AUTH__LOCAL_USER", "");
        let fixed = Config::from_sources(Some((&path, &text)), "FLEETSPAWN_TEST_EXPOSE_").unwrap();
        assert_eq!(fixed.unsafe_exposure(), Vec::new());
        assert!(fixed.auth.tokens.is_empty());
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err = Config::load(Some(Path::new("/nonexistent/fleetspawn.toml"))).unwrap_err();
        assert!(err.to_string().starts_with("/nonexistent/fleetspawn.toml: cannot read"));
    }

    #[test]
    fn shipped_file_matches_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_PATH);
        let text = std::fs::read_to_string(&path).unwrap();
        let config = Config::from_sources(Some((&path, &text)), NO_ENV).unwrap();
        assert_eq!(config.profiles, Config::default().profiles);
    }

    #[test]
    fn env_filter_knows_every_field() {
        let value = serde_json::to_value(Config::default()).unwrap();
        let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        let mut fields: Vec<_> = FIELDS.iter().map(|s| s.to_string()).collect();
        fields.sort();
        assert_eq!(keys, fields);
    }
}
