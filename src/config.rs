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
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::profiles::spans::{Document, KeyPath, Seg};

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
    /// Servers one user may run at once (default 3).
    pub max_servers_per_user: usize,
    /// How long an object without a known owner survives before garbage
    /// collection deletes it (default 60 s).
    #[serde(with = "duration")]
    pub gc_grace: Duration,
    /// Who may call the daemon: API tokens, trusted proxies, admins (see `auth`).
    pub auth: crate::auth::AuthConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            kubeconfig: None,
            profiles: PathBuf::from("profiles/example.toml"),
            templates_dir: None,
            max_concurrent_spawns: 64,
            max_servers_per_user: 3,
            gc_grace: Duration::from_secs(60),
            auth: crate::auth::AuthConfig::default(),
        }
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
    "max_servers_per_user",
    "gc_grace",
    "auth",
];

/// A setting that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Where the value came from: a file path or an environment variable.
    pub source: String,
    /// 1-based line in the file, when the value came from one.
    pub line: Option<usize>,
    /// The setting's key path (`listen`, `gc_grace`...), empty for the file.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

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
    Invalid(Vec<ConfigIssue>),
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
        Self::from_sources(
            file.as_ref().map(|(p, t)| (p.as_path(), t.as_str())),
            ENV_PREFIX,
        )
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
                ConfigError::Invalid(vec![ConfigIssue {
                    source: path.display().to_string(),
                    line: Some(err.line),
                    key: String::new(),
                    message: err.message,
                }])
            })?;
            figment = figment.merge(Toml::string(text));
            return figment
                .merge(env)
                .extract::<Config>()
                .map_err(|err| invalid(err, env_prefix, Some((path, &doc))));
        }
        figment
            .merge(env)
            .extract::<Config>()
            .map_err(|err| invalid(err, env_prefix, None))
    }
}

fn read(path: &Path) -> Result<(PathBuf, String), ConfigError> {
    std::fs::read_to_string(path)
        .map(|text| (path.to_owned(), text))
        .map_err(|err| ConfigError::Unreadable {
            path: path.to_owned(),
            message: err.to_string(),
        })
}

/// Turns figment's errors into issues naming the file, line and key, or the
/// environment variable.
fn invalid(err: figment::Error, env_prefix: &str, file: Option<(&Path, &Document)>) -> ConfigError {
    let issues = err
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let from_env = e
                .metadata
                .as_ref()
                .is_some_and(|m| m.name.contains("environment"));
            let (source, line) = match file {
                Some((path, doc)) if !from_env => {
                    let keypath = KeyPath(e.path.iter().map(|k| Seg::Key(k.clone())).collect());
                    (path.display().to_string(), doc.line(&keypath))
                }
                _ if from_env => (
                    format!(
                        "environment {env_prefix}{}",
                        e.path.join("__").to_uppercase()
                    ),
                    None,
                ),
                _ => ("built-in defaults".to_owned(), None),
            };
            ConfigIssue {
                source,
                line,
                key,
                message: e.kind.to_string(),
            }
        })
        .collect();
    ConfigError::Invalid(issues)
}

/// Durations written as whole seconds (`90`) or with units (`"90s"`, `"5m"`,
/// `"1h30m"`, `"500ms"`); serialized as whole seconds.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Parses `"1h30m"`, `"90s"`, `"500ms"` or `"90"` (seconds).
    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        if let Ok(secs) = text.parse::<u64>() {
            return Ok(Duration::from_secs(secs));
        }
        let mut total = Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit_len = rest[digits..]
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len() - digits);
            let (number, unit) = (&rest[..digits], &rest[digits..digits + unit_len]);
            let n: u64 = number.parse().map_err(|_| {
                format!("invalid duration {text:?}: expected e.g. 90, \"90s\", \"5m\", \"1h30m\"")
            })?;
            let part = match unit {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n * 60),
                "h" => Duration::from_secs(n * 3600),
                _ => {
                    return Err(format!(
                        "invalid duration unit {unit:?} in {text:?}: use ms, s, m or h"
                    ))
                }
            };
            total += part;
            rest = &rest[digits + unit_len..];
        }
        if text.is_empty() {
            return Err("empty duration".to_owned());
        }
        Ok(total)
    }

    #[derive(Deserialize)]
    #[serde(
        untagged,
        expecting = "a duration: whole seconds or a string such as \"90s\", \"5m\", \"1h30m\""
    )]
    enum Raw {
        Secs(u64),
        Text(String),
    }

    /// Deserializes a duration (see [`parse`]).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Secs(secs) => Ok(Duration::from_secs(secs)),
            Raw::Text(text) => parse(&text).map_err(serde::de::Error::custom),
        }
    }

    /// Serializes a duration as whole seconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    /// The same for optional durations.
    pub mod option {
        use std::time::Duration;

        use serde::{Deserializer, Serializer};

        /// Deserializes an optional duration.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }

        /// Serializes an optional duration as whole seconds.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
    fn errors_name_file_line_and_key() {
        let text = "# settings\nlisten = \"x\"\n\nmax_concurrent_spawns = \"many\"\nbogus = 1\n";
        let err = Config::from_sources(Some((Path::new("c.toml"), text)), NO_ENV)
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.toml:"), "{err}");
        let first = err.lines().next().unwrap_or_default();
        assert!(first.starts_with("c.toml:"), "{err}");
        let text = "listen = 5\n";
        let err = Config::from_sources(Some((Path::new("c.toml"), text)), NO_ENV)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml:1: listen: "), "{err}");
        let err = Config::from_sources(Some((Path::new("c.toml"), "\nbogus = 1\n")), NO_ENV)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("c.toml:2: bogus: ") || err.contains("bogus"),
            "{err}"
        );
        let err = Config::from_sources(Some((Path::new("c.toml"), "a = [\n")), NO_ENV)
            .unwrap_err()
            .to_string();
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
        let err = Config::from_sources(None, "FLEETSPAWN_TEST_BAD_")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("environment FLEETSPAWN_TEST_BAD_LISTEN: listen: "),
            "{err}"
        );
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let err = Config::load(Some(Path::new("/nonexistent/fleetspawn.toml"))).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("/nonexistent/fleetspawn.toml: cannot read"));
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

    #[test]
    fn durations() {
        assert_eq!(duration::parse("90").unwrap(), Duration::from_secs(90));
        assert_eq!(duration::parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            duration::parse("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert!(duration::parse("5 parsecs").is_err());
        assert!(duration::parse("").is_err());
        assert!(duration::parse("m").is_err());
    }
}
