//! Loading a multi-context kubeconfig and keeping one Kubernetes client per context.
//!
//! fleetspawn talks to many clusters at once: each kubeconfig context is one cluster. The
//! kubeconfig comes from an explicit path, from `KUBECONFIG` (several files, merged the way
//! kubectl merges them: the first file to set a name wins), or from `~/.kube/config`.
//!
//! Clients are built concurrently, each on a blocking thread, so a slow exec credential plugin
//! (gcloud, aws, az...) never stalls the async runtime or the other contexts. A context whose
//! credentials or server are bad does not stop the others: it is kept with its error and
//! reported by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::future::join_all;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Serialize;

/// How long a health probe of one API server may take before the cluster counts as unhealthy.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors loading the kubeconfig itself; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("kubeconfig {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kubeconfig {path}: invalid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("no kubeconfig found: set --kubeconfig or KUBECONFIG, or create ~/.kube/config")]
    NotFound,
    #[error("kubeconfig {paths}: defines no contexts")]
    NoContexts { paths: String },
}

/// A kubeconfig merged from one or more files, remembering where it came from.
#[derive(Clone)]
pub struct LoadedKubeconfig {
    pub paths: Vec<PathBuf>,
    pub config: Kubeconfig,
}

impl LoadedKubeconfig {
    /// The context names, sorted.
    pub fn contexts(&self) -> Vec<String> {
        let mut names: Vec<String> = self.config.contexts.iter().map(|c| c.name.clone()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// The API server URL a context points at, if the kubeconfig says.
    pub fn server_of(&self, context: &str) -> Option<String> {
        let ctx = self.config.contexts.iter().find(|c| c.name == context)?;
        let cluster_name = &ctx.context.as_ref()?.cluster;
        let cluster = self.config.clusters.iter().find(|c| &c.name == cluster_name)?;
        cluster.cluster.as_ref()?.server.clone()
    }
}

/// The files to read: `explicit`, else `$KUBECONFIG` (path-list), else `~/.kube/config`.
pub fn resolve_paths(explicit: Option<&Path>) -> Result<Vec<PathBuf>, KubeconfigError> {
    if let Some(p) = explicit {
        return Ok(vec![p.to_path_buf()]);
    }
    if let Some(list) = std::env::var_os("KUBECONFIG") {
        let paths: Vec<PathBuf> = std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()).collect();
        if !paths.is_empty() {
            return Ok(paths);
        }
    }
    let home = std::env::var_os("HOME").ok_or(KubeconfigError::NotFound)?;
    let default = PathBuf::from(home).join(".kube").join("config");
    if default.exists() {
        Ok(vec![default])
    } else {
        Err(KubeconfigError::NotFound)
    }
}

/// Reads and merges the kubeconfig files. A missing file or invalid YAML is an error naming it.
pub fn load(explicit: Option<&Path>) -> Result<LoadedKubeconfig, KubeconfigError> {
    let paths = resolve_paths(explicit)?;
    let mut merged: Option<Kubeconfig> = None;
    for path in &paths {
        let text = std::fs::read_to_string(path).map_err(|source| KubeconfigError::Read { path: path.clone(), source })?;
        let one = Kubeconfig::from_yaml(&text).map_err(|e| KubeconfigError::Invalid { path: path.clone(), message: e.to_string() })?;
        merged = Some(match merged {
            None => one,
            Some(acc) => acc.merge(one).map_err(|e| KubeconfigError::Invalid { path: path.clone(), message: e.to_string() })?,
        });
    }
    let config = merged.ok_or(KubeconfigError::NotFound)?;
    let loaded = LoadedKubeconfig { paths, config };
    if loaded.contexts().is_empty() {
        return Err(KubeconfigError::NoContexts { paths: loaded.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":") });
    }
    Ok(loaded)
}

/// One cluster: a kubeconfig context and its client, or why there is none.
#[derive(Clone)]
pub struct Cluster {
    pub context: String,
    pub server: Option<String>,
    pub client: Result<kube::Client, String>,
}

/// Every context of the kubeconfig, each with its own client.
#[derive(Clone)]
pub struct Fleet {
    clusters: BTreeMap<String, Cluster>,
}

impl Fleet {
    /// Builds one client per context, concurrently. Never fails as a whole: a context whose
    /// client cannot be built is kept with the cause.
    pub async fn connect(kubeconfig: &LoadedKubeconfig) -> Fleet {
        let tasks = kubeconfig.contexts().into_iter().map(|context| {
            let config = kubeconfig.config.clone();
            let server = kubeconfig.server_of(&context);
            async move {
                let client = build_client(config, context.clone()).await;
                (context.clone(), Cluster { context, server, client })
            }
        });
        Fleet { clusters: join_all(tasks).await.into_iter().collect() }
    }

    /// A fleet of clusters whose clients were built by the caller (e.g. with extra tower
    /// layers, as the benchmarks do to count API requests).
    pub fn from_clusters(clusters: impl IntoIterator<Item = Cluster>) -> Fleet {
        Fleet { clusters: clusters.into_iter().map(|c| (c.context.clone(), c)).collect() }
    }

    /// The clusters, by context name.
    pub fn clusters(&self) -> impl Iterator<Item = &Cluster> {
        self.clusters.values()
    }

    /// One cluster by context name.
    pub fn get(&self, context: &str) -> Option<&Cluster> {
        self.clusters.get(context)
    }

    /// The context names, sorted.
    pub fn contexts(&self) -> Vec<&str> {
        self.clusters.keys().map(String::as_str).collect()
    }

    /// Probes every cluster concurrently.
    pub async fn health(&self) -> Vec<Health> {
        join_all(self.clusters.values().map(Cluster::probe)).await
    }
}

async fn build_client(config: Kubeconfig, context: String) -> Result<kube::Client, String> {
    // Building a config may run an exec credential plugin: keep it off the async workers.
    let runtime = tokio::runtime::Handle::current();
    let built = tokio::task::spawn_blocking(move || {
        runtime.block_on(async move {
            let options = KubeConfigOptions { context: Some(context), ..Default::default() };
            let config = kube::Config::from_custom_kubeconfig(config, &options).await.map_err(|e| e.to_string())?;
            kube::Client::try_from(config).map_err(|e| e.to_string())
        })
    })
    .await;
    match built {
        Ok(result) => result,
        Err(join) => Err(format!("building the client failed: {join}")),
    }
}

/// The health of one cluster (kubeconfig context) at one moment.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Health {
    pub context: String,
    pub server: Option<String>,
    pub healthy: bool,
    /// The API server's version (`v1.34.4`), when reachable.
    pub version: Option<String>,
    /// Round-trip time of the version request, in milliseconds.
    pub latency_ms: Option<u64>,
    /// Why the cluster is unhealthy.
    pub cause: Option<String>,
}

impl Cluster {
    /// Asks the API server for its version, with [`HEALTH_TIMEOUT`].
    pub async fn probe(&self) -> Health {
        let mut health = Health { context: self.context.clone(), server: self.server.clone(), healthy: false, version: None, latency_ms: None, cause: None };
        let client = match &self.client {
            Ok(c) => c,
            Err(cause) => {
                health.cause = Some(cause.clone());
                return health;
            }
        };
        let started = Instant::now();
        match tokio::time::timeout(HEALTH_TIMEOUT, client.apiserver_version()).await {
            Ok(Ok(info)) => {
                health.healthy = true;
                health.version = Some(info.git_version);
                health.latency_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
            }
            Ok(Err(e)) => health.cause = Some(describe_kube_error(&e)),
            Err(_) => health.cause = Some(format!("no answer within {}s", HEALTH_TIMEOUT.as_secs())),
        }
        health
    }
}

/// A one-line, human-readable cause for a client error (the innermost source is usually the
/// useful part: "Connection refused", "certificate verify failed", "Unauthorized"...).
pub fn describe_kube_error(e: &kube::Error) -> String {
    use std::error::Error as _;
    if let kube::Error::Api(status) = e {
        return format!("{} ({}): {}", status.reason, status.code, status.message);
    }
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg = format!("{msg}: {text}");
        }
        source = s.source();
    }
    msg
}
