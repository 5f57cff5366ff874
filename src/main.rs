//! The `fleetspawn` command line: the edge where errors get their context and become exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use std::collections::BTreeMap;
use std::path::Path;

use futures::StreamExt;

use fleetspawn::config::Config;
use fleetspawn::http::{self, wire};
use fleetspawn::kube::fleet::{self, Fleet, Health};
use fleetspawn::kube::userserver;
use fleetspawn::metrics::Metrics;
use fleetspawn::service::{SpawnRequest, Spawner, SpawnerSettings};
use fleetspawn::sources;
use fleetspawn_core::bundle::{self, Renderer, SpawnInput};
use fleetspawn_core::import;
use fleetspawn_core::instance::InstanceView;
use fleetspawn_core::profiles::ProfileSet;

/// fleetspawn: spawn per-user servers across many Kubernetes clusters.
#[derive(Parser)]
#[command(name = "fleetspawn", version, about, long_about = None)]
struct Cli {
    /// Daemon settings file (default: config/fleetspawn.toml if present, else built-in
    /// defaults); `FLEETSPAWN_*` environment variables override it.
    #[arg(long, global = true, env = "FLEETSPAWN_CONFIG")]
    config: Option<PathBuf>,
    /// Profiles file (default: the `profiles` setting).
    #[arg(long, global = true)]
    profiles: Option<PathBuf>,
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config). One context per cluster.
    #[arg(long, global = true, env = "FLEETSPAWN_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// List the kubeconfig's contexts with their API server version and health.
    Clusters {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate the settings and profiles (and, when the clusters answer, that every profile's
    /// contexts exist); exits non-zero listing every error.
    Check {
        /// Also ask each context's API server (a SelfSubjectAccessReview per right) whether its
        /// credentials have every right its profiles need, and the home context whether it has
        /// the records' and Leases' rights; lists what is missing per context and namespace.
        #[arg(long)]
        rbac: bool,
    },
    /// Print the objects a spawn would apply, as multi-document YAML (like `helm template`).
    Render {
        #[arg(long)]
        profile: String,
        #[arg(long)]
        user: String,
        /// Named server (default: the user's default server).
        #[arg(long, default_value = "")]
        server: String,
        /// The kubeconfig context to render for (default: the profile's first).
        #[arg(long)]
        context: Option<String>,
        /// A user option, `key=value`; repeatable.
        #[arg(long = "option", value_parser = parse_key_value)]
        options: Vec<(String, String)>,
        /// A hub parameter the profile declares, `name=value`; repeatable.
        #[arg(long = "hub-parameter", value_parser = parse_key_value)]
        hub_parameters: Vec<(String, String)>,
    },
    /// Start a server, print its progress, then its URL.
    Spawn {
        #[arg(long)]
        user: String,
        /// Profile slug (default: the default profile).
        #[arg(long)]
        profile: Option<String>,
        /// Named server (default: the user's default server).
        #[arg(long, default_value = "")]
        server: String,
        /// A user option, `key=value`; repeatable.
        #[arg(long = "option", value_parser = parse_key_value)]
        options: Vec<(String, String)>,
    },
    /// List the live instances on every cluster.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the daemon: REST API, web form, metrics; profiles reload on change.
    Serve,
    /// Stop a server (its PVC survives unless --remove-storage).
    Stop {
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "")]
        server: String,
        /// Also delete the server's PersistentVolumeClaim ("delete forever").
        #[arg(long)]
        remove_storage: bool,
    },
    /// Print the UserServer CustomResourceDefinition (userservers.fleetspawn.io) as YAML, for
    /// GitOps: `fleetspawn crd | kubectl apply -f -`. Reads no settings and no cluster.
    Crd,
    /// Convert another spawner's configuration to a profiles file. Reads no settings and no
    /// cluster.
    #[command(subcommand)]
    Import(Import),
}

#[derive(Subcommand)]
enum Import {
    /// A Zero to JupyterHub values.yaml (or a jupyterhub_config.py, by its `.py` name) as a
    /// profiles.toml on stdout; what could not be converted goes to stderr, each at its line.
    Kubespawner {
        /// The values file or jupyterhub_config.py.
        file: PathBuf,
        /// The kubeconfig context the profiles run on.
        #[arg(long)]
        context: String,
        /// The public URL of that cluster's ingress controller.
        #[arg(long)]
        ingress_url: String,
        /// Write the profiles here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("expected key=value, got {s:?}"))
}

/// Logs go to stderr; `FLEETSPAWN_LOG` sets the filter (default: info for the daemon, warnings
/// for one-shot commands, whose stdout and progress lines are the output).
fn init_logging(format: LogFormat, daemon: bool) {
    let default = if daemon { "warn,fleetspawn=info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLEETSPAWN_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, matches!(cli.command, Command::Serve));
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once (many messages already quote theirs).
fn describe(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if matches!(cli.command, Command::Crd) {
        print!("{}", userserver::crd_yaml().context("encoding the CRD as YAML")?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Import(Import::Kubespawner { file, context, ingress_url, output }) = &cli.command {
        return import_kubespawner(file, context, ingress_url, output.as_deref());
    }
    let config = Config::load(cli.config.as_deref())?;
    let kubeconfig_path = cli.kubeconfig.clone().or_else(|| config.kubeconfig.clone());
    let profiles_path = cli.profiles.clone().unwrap_or_else(|| config.profiles.clone());
    match cli.command {
        Command::Clusters { json } => clusters(kubeconfig_path, json).await,
        Command::Check { rbac } => check(&config, kubeconfig_path.as_deref(), &profiles_path, rbac).await,
        Command::Render { profile, user, server, context, options, hub_parameters } => {
            let renderer = sources::renderer(config.templates_dir.as_deref())?;
            let set = load_profiles(&profiles_path, &renderer)?;
            let p = set.get(&profile).with_context(|| format!("unknown profile {profile:?} in {}", profiles_path.display()))?;
            let options: BTreeMap<String, String> = options.into_iter().collect();
            // The options may move the profile to other contexts: its first one after them.
            let context = match context {
                Some(c) => c,
                None => p.resolve_options(&options)?.profile.contexts.first().cloned().unwrap_or_default(),
            };
            let secret_env = BTreeMap::new();
            let hub_parameters = fleetspawn_core::profiles::hub_parameters::resolve_text(&p.hub_parameters, &hub_parameters.into_iter().collect())?;
            let input = SpawnInput {
                user: &user,
                server: &server,
                profile: p,
                options: &options,
                context: &context,
                secret_env: &secret_env,
                url_prefix: None,
                hub_parameters: &hub_parameters,
                owner: None,
            };
            print!("{}", bundle::to_yaml(&renderer.render(&input)?));
            Ok(ExitCode::SUCCESS)
        }
        Command::Spawn { user, profile, server, options } => {
            let spawner = start_spawner(&config, kubeconfig_path.as_deref(), &profiles_path, Metrics::new(), false).await?;
            let profile = match profile {
                Some(p) => p,
                None => spawner.profiles().default_profile().map(|p| p.slug.clone()).context("no --profile given and no default profile")?,
            };
            let req = SpawnRequest { user: user.clone(), server: server.clone(), profile, options: options.into_iter().collect(), ..Default::default() };
            let started = spawner.spawn(req).await?;
            eprintln!("spawning {} on {}", started.key, started.cluster);
            let progress = spawner.progress(&user, &server).context("the spawn has no progress")?;
            let mut events = progress.subscribe();
            let mut code = ExitCode::FAILURE;
            while let Some(e) = events.next().await {
                if e.ready == Some(true) {
                    println!("{}", e.url.unwrap_or_default());
                    code = ExitCode::SUCCESS;
                    if spawner.held_clusters().contains(&started.cluster) {
                        eprintln!(
                            "warning: no fleetspawn daemon holds cluster {}'s Lease: this command carried the spawn, and nothing follows the server (lifespans, a lost Pod) until a daemon runs",
                            started.cluster
                        );
                    }
                } else if e.failed == Some(true) {
                    eprintln!("failed: {}", e.message);
                } else {
                    eprintln!("[{:3}%] {}", e.progress, e.message);
                }
            }
            spawner.shutdown(CLI_DRAIN).await;
            Ok(code)
        }
        Command::List { json } => {
            let spawner = start_spawner(&config, kubeconfig_path.as_deref(), &profiles_path, Metrics::new(), false).await?;
            let list = spawner.list();
            if json {
                let wire: Vec<wire::InstanceView> = list.iter().cloned().map(wire::InstanceView::from).collect();
                println!("{}", serde_json::to_string_pretty(&wire).context("encoding JSON")?);
            } else {
                print!("{}", instances_table(&list));
            }
            let unsynced = spawner.unsynced_clusters();
            if !unsynced.is_empty() {
                eprintln!("warning: not synced (instances there show as unknown): {}", unsynced.join(", "));
            }
            spawner.shutdown(CLI_DRAIN).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => {
            let exposed = config.unsafe_exposure();
            if !exposed.is_empty() {
                let list: Vec<String> = exposed.iter().map(ToString::to_string).collect();
                anyhow::bail!("refusing to start:\n{}", list.join("\n"));
            }
            for (trusted, pods) in config.auth.trusted_ranges_over_pod_networks() {
                tracing::warn!(%trusted, %pods, "auth.trusted_proxies holds a common pod network: pods there could send identity headers and be believed; trust only your proxy's addresses");
            }
            let metrics = Metrics::new();
            let spawner = start_spawner(&config, kubeconfig_path.as_deref(), &profiles_path, metrics.clone(), true).await?;
            let mut config = config.clone();
            config.profiles = profiles_path;
            http::serve(&config, config.auth.clone(), spawner, metrics, http::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Stop { user, server, remove_storage } => {
            let spawner = start_spawner(&config, kubeconfig_path.as_deref(), &profiles_path, Metrics::new(), false).await?;
            spawner.stop(&user, &server, remove_storage).await?;
            spawner.shutdown(CLI_DRAIN).await;
            eprintln!("stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd | Command::Import(_) => unreachable!("handled before the settings are read"),
    }
}

/// `fleetspawn import kubespawner`: the profiles on stdout (or `output`), what was left out on
/// stderr as `FILE:LINE: key: reason`.
fn import_kubespawner(file: &Path, context: &str, ingress_url: &str, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let source = if file.extension().is_some_and(|e| e == "py") { import::Source::Config } else { import::Source::Values };
    let target = import::Target { context: context.to_owned(), ingress_url: ingress_url.to_owned() };
    let imported = import::kubespawner(&text, source, &target).with_context(|| format!("{}", file.display()))?;
    let profiles = format!("# Converted from {} by `fleetspawn import kubespawner`; see docs/migrating.md.\n\n{}", file.display(), imported.profiles_toml);
    match output {
        Some(path) => std::fs::write(path, profiles).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{profiles}"),
    }
    for item in &imported.unconverted {
        eprintln!("{}:{item}", file.display());
    }
    if !imported.unconverted.is_empty() {
        eprintln!("{} settings not converted (listed above); see docs/migrating.md", imported.unconverted.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn load_profiles(path: &Path, renderer: &Renderer) -> anyhow::Result<ProfileSet> {
    // Diagnostics lists every problem, one `file:line: key: message` per line.
    sources::profiles(path, renderer).map_err(|errors| anyhow::anyhow!("invalid profiles:\n{errors}"))
}

/// How long a command waits, when it ends, for what it started to reach a consistent point.
const CLI_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The spawner of a command: a daemon (`member`) shares the clusters' Leases with the other
/// replicas; the CLI's commands are guests, taking only Leases no daemon holds.
async fn start_spawner(config: &Config, kubeconfig_path: Option<&Path>, profiles_path: &Path, metrics: Metrics, member: bool) -> anyhow::Result<Spawner> {
    let renderer = sources::renderer(config.templates_dir.as_deref())?;
    let set = load_profiles(profiles_path, &renderer)?;
    let loaded = fleet::load(kubeconfig_path)?;
    let fleet = Fleet::connect(&loaded).await;
    let activity = activity_source(config)?;
    let proxy = proxy_target(config)?;
    Ok(Spawner::start(fleet, set, renderer, SpawnerSettings { member, activity, proxy, ..SpawnerSettings::from(config) }, metrics).await?)
}

/// A secret setting `key`: given inline, or read from its file (trailing whitespace ignored).
fn secret_setting(key: &str, inline: Option<&fleetspawn::config::Secret>, file: Option<&Path>, needed_by: &str) -> anyhow::Result<String> {
    match (inline, file) {
        (Some(t), _) => Ok(t.0.clone()),
        (None, Some(path)) => Ok(std::fs::read_to_string(path).with_context(|| format!("{key}_file {}", path.display()))?.trim_end().to_string()),
        (None, None) => anyhow::bail!("{needed_by} is set but neither {key} nor {key}_file"),
    }
}

/// The `[activity]` settings as the spawner's activity source (the token read from its file).
fn activity_source(config: &Config) -> anyhow::Result<Option<fleetspawn::service::ActivitySource>> {
    let a = &config.activity;
    let Some(url) = &a.hub_api_url else { return Ok(None) };
    let token = secret_setting("activity.hub_api_token", a.hub_api_token.as_ref(), a.hub_api_token_file.as_deref(), "activity.hub_api_url")?;
    let hub = fleetspawn::hub::HubApi::new(url, &token).with_context(|| format!("activity.hub_api_url {url}"))?;
    Ok(Some(fleetspawn::service::ActivitySource { hub, interval: a.interval }))
}

/// The `[proxy]` settings as the proxy fleetspawn routes users through (no hub).
fn proxy_target(config: &Config) -> anyhow::Result<Option<fleetspawn::service::ProxyTarget>> {
    let p = &config.proxy;
    let Some(url) = &p.api_url else { return Ok(None) };
    let token = secret_setting("proxy.auth_token", p.auth_token.as_ref(), p.auth_token_file.as_deref(), "proxy.api_url")?;
    let public_url = p.public_url.clone().context("proxy.api_url is set but not proxy.public_url (the proxy's address users' browsers reach)")?;
    let api = fleetspawn::proxy::ProxyApi::new(url, &token).with_context(|| format!("proxy.api_url {url}"))?;
    Ok(Some(fleetspawn::service::ProxyTarget { api, public_url, interval: p.interval }))
}

/// Checks the profiles against the operator's templates (`templates_dir`) as the daemon
/// would load them, and their contexts against the kubeconfig.
async fn check(config: &Config, kubeconfig_path: Option<&Path>, profiles_path: &Path, rbac: bool) -> anyhow::Result<ExitCode> {
    let renderer = match sources::renderer(config.templates_dir.as_deref()) {
        Ok(renderer) => renderer,
        Err(e) => {
            eprintln!("{}", describe(&anyhow::Error::new(e)));
            return Ok(ExitCode::FAILURE);
        }
    };
    let set = match sources::profiles(profiles_path, &renderer) {
        Ok(set) => set,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let count = set.iter().count();
    // Contexts: checked against the kubeconfig when there is one (a warning, not an error).
    match fleet::load(kubeconfig_path) {
        Ok(loaded) => {
            let contexts = loaded.contexts();
            let names: Vec<&str> = contexts.iter().map(String::as_str).collect();
            for warning in set.check_contexts(&names) {
                eprintln!("warning: {warning}");
            }
        }
        Err(e) => eprintln!("warning: contexts not checked: {e}"),
    }
    println!("{}: {count} profiles OK", profiles_path.display());
    if rbac {
        return check_rights(config, kubeconfig_path, &renderer, &set).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// `check --rbac`: every context the profiles use, and the home context, asked whether their
/// credentials have the rights fleetspawn needs there (`fleetspawn_core::rights`).
async fn check_rights(config: &Config, kubeconfig_path: Option<&Path>, renderer: &Renderer, set: &ProfileSet) -> anyhow::Result<ExitCode> {
    use fleetspawn::kube::objects::{Access, ClusterApi};
    use fleetspawn_core::rights;
    use kube::Resource as _;
    let loaded = fleet::load(kubeconfig_path)?;
    let mut wanted = rights::target_rights(renderer, set);
    let home = config.home_context.clone().or_else(|| loaded.contexts().first().cloned()).context("the kubeconfig has no context")?;
    let (api_version, plural) = (userserver::UserServer::api_version(&()), userserver::UserServer::plural(&()));
    let crd = config.install_crd.then(<userserver::UserServer as kube::CustomResourceExt>::crd_name);
    let records = rights::Records { api_version: &api_version, plural: &plural, crd };
    wanted.entry(home).or_default().extend(rights::home_rights(&config.home_namespace, records));
    let fleet = Fleet::connect(&loaded).await;
    let mut complete = true;
    for (context, needed) in &wanted {
        let client = match fleet.get(context).map(|c| &c.client) {
            Some(Ok(client)) => client,
            Some(Err(cause)) => {
                println!("{context}: not checked: {cause}");
                complete = false;
                continue;
            }
            None => {
                println!("{context}: not checked: not a context of the kubeconfig");
                complete = false;
                continue;
            }
        };
        let api = ClusterApi::new(client.clone());
        let answers = futures::future::join_all(needed.iter().map(|r| api.review(r))).await;
        let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (right, answer) in needed.iter().zip(answers) {
            let line = match answer {
                Ok((_, Access::Allowed)) => continue,
                Ok((resource, Access::Denied(_))) => match &right.name {
                    Some(name) => format!("{} {resource} {name}", right.verb),
                    None => format!("{} {resource}", right.verb),
                },
                Ok((resource, Access::Unresolved(why))) => format!("{} {resource}: the kind is not served ({why})", right.verb),
                Err(e) => format!("{} {} ({}): not asked: {e}", right.verb, right.kind, right.api_version),
            };
            missing.entry(right.scope.to_string()).or_default().push(line);
        }
        if missing.is_empty() {
            println!("{context}: every right ({})", needed.len());
            continue;
        }
        complete = false;
        println!("{context}: {} of {} rights missing", missing.values().map(Vec::len).sum::<usize>(), needed.len());
        for (scope, lines) in missing {
            println!("  in {scope}: {}", lines.join(", "));
        }
    }
    Ok(if complete { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn instances_table(rows: &[InstanceView]) -> String {
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|i| {
            [
                i.user.clone(),
                if i.server.is_empty() { "(default)".into() } else { i.server.clone() },
                i.profile.clone(),
                i.cluster.clone(),
                i.state.as_str().into(),
                i.started_at.clone().unwrap_or_default(),
                i.cause.clone().or_else(|| i.url.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    table(&["USER", "SERVER", "PROFILE", "CLUSTER", "STATE", "STARTED", "URL / CAUSE"], &cells)
}

async fn clusters(kubeconfig: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let loaded = fleet::load(kubeconfig.as_deref())?;
    let fleet = Fleet::connect(&loaded).await;
    let health = fleet.health().await;
    if json {
        let wire: Vec<wire::Health> = health.iter().cloned().map(wire::Health::from).collect();
        println!("{}", serde_json::to_string_pretty(&wire).context("encoding JSON")?);
    } else {
        print!("{}", health_table(&health));
    }
    Ok(if health.iter().all(|h| h.healthy) { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

fn health_table(rows: &[Health]) -> String {
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|h| {
            [
                h.context.clone(),
                if h.healthy { "healthy".into() } else { "UNHEALTHY".into() },
                h.version.clone().unwrap_or_else(|| "-".into()),
                h.latency_ms.map_or_else(|| "-".into(), |ms| format!("{ms}ms")),
                h.cause.clone().or_else(|| h.server.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    table(&["CONTEXT", "STATUS", "VERSION", "LATENCY", "SERVER / CAUSE"], &cells)
}

/// Left-aligned columns separated by two spaces, like kubectl's tables.
fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}
