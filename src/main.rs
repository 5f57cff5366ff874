//! The `fleetspawn` command line: the edge where errors get their context and become exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use fleetspawn::kubeconfig::{self, Fleet, Health};

/// fleetspawn: spawn per-user servers across many Kubernetes clusters.
#[derive(Parser)]
#[command(name = "fleetspawn", version, about, long_about = None)]
struct Cli {
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
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLEETSPAWN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fleetspawn=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Clusters { json } => clusters(cli.kubeconfig, json).await,
    }
}

async fn clusters(kubeconfig: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let loaded = kubeconfig::load(kubeconfig.as_deref())?;
    let fleet = Fleet::connect(&loaded).await;
    let health = fleet.health().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&health).context("encoding JSON")?);
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
