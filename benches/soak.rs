//! The soak of issue 11 (`./bench soak`, see docs/security.md; never part of `cargo test`): a
//! real `fleetspawn serve` on the local clusters, for FSSOAK_SECONDS (600):
//! - FSSOAK_USERS (50) users, each spawning a server of profile `spread` (least loaded of
//!   three clusters) as the hub would, following its progress to the end, stopping it, and
//!   again;
//! - FSSOAK_READS (500) status reads per second, offered on a fixed schedule whatever the
//!   answers take, of random users' servers: 6 in 10 with the hub's token, 2 with a user's
//!   token for another user's server (403), 1 with a token no one has (401), 1 with none (401);
//! - every 15 s, the Pods of the daemon's servers on every cluster, by kubectl: two live Pods
//!   for one server would be a duplicate; and the daemon's RSS.
//!
//! At the end every server is stopped and nothing of the daemon's may be left on any cluster.
//! It prints what it saw (and `RESULT {json}`); a 5xx, a lost or duplicated server, a spawn
//! that ended without ready or a cause, or a leftover object fails the run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, DaemonOptions, ALICE_TOKEN, HUB_TOKEN};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn user(i: u64) -> String {
    format!("soak-{i}")
}

/// What the spawning users saw.
#[derive(Default, serde::Serialize)]
struct Spawns {
    /// Starts the daemon accepted (202).
    accepted: u64,
    ready: u64,
    /// Spawns that ended failed, with the cause the user was shown.
    failed_with_cause: BTreeMap<String, u64>,
    /// Accepted spawns whose progress ended with neither ready nor a cause.
    lost: u64,
    /// 429 answers to a start (the user tried again a second later).
    busy: u64,
    stops: u64,
    /// Answers that were none of the above (status and body), with a count.
    unexpected: BTreeMap<String, u64>,
    server_errors: u64,
}

impl Spawns {
    fn unexpected(&mut self, what: String) {
        *self.unexpected.entry(what).or_default() += 1;
    }
}

/// Follows one user's servers until `until`.
async fn user_loop(http: reqwest::Client, url: String, name: String, until: Instant, spawns: Arc<Mutex<Spawns>>) {
    let path = format!("{url}/api/v1/users/{name}/server");
    let note = |f: &mut dyn FnMut(&mut Spawns)| f(&mut spawns.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    while Instant::now() < until {
        let started = http.put(&path).bearer_auth(HUB_TOKEN).json(&json!({ "profile": "spread" })).send().await;
        let status = match started {
            Ok(r) => r.status(),
            Err(e) => {
                note(&mut |s| s.unexpected(format!("start: {e}")));
                continue;
            }
        };
        match status {
            StatusCode::ACCEPTED => note(&mut |s| s.accepted += 1),
            StatusCode::TOO_MANY_REQUESTS => {
                note(&mut |s| s.busy += 1);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            other => {
                note(&mut |s| {
                    s.server_errors += u64::from(other.is_server_error());
                    s.unexpected(format!("start: {other}"));
                });
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        let end = progress_end(&http, &path).await;
        note(&mut |s| match &end {
            End::Ready => s.ready += 1,
            End::Failed(cause) => *s.failed_with_cause.entry(cause.clone()).or_default() += 1,
            End::Nothing(why) => {
                s.lost += 1;
                s.unexpected(format!("progress: {why}"));
            }
        });
        match http.delete(&path).bearer_auth(HUB_TOKEN).send().await.map(|r| r.status()) {
            Ok(StatusCode::NO_CONTENT) => note(&mut |s| s.stops += 1),
            Ok(other) => note(&mut |s| {
                s.server_errors += u64::from(other.is_server_error());
                s.unexpected(format!("stop: {other}"));
            }),
            Err(e) => note(&mut |s| s.unexpected(format!("stop: {e}"))),
        }
    }
}

enum End {
    Ready,
    Failed(String),
    Nothing(String),
}

/// Reads a spawn's progress stream to its end (at most 5 minutes).
async fn progress_end(http: &reqwest::Client, path: &str) -> End {
    let response = match http.get(format!("{path}/progress")).bearer_auth(HUB_TOKEN).send().await {
        Ok(r) if r.status() == StatusCode::OK => r,
        Ok(r) => return End::Nothing(format!("{}", r.status())),
        Err(e) => return End::Nothing(e.to_string()),
    };
    let text = match tokio::time::timeout(Duration::from_secs(300), response.text()).await {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => return End::Nothing(e.to_string()),
        Err(_) => return End::Nothing("no end within 5 minutes".into()),
    };
    let last = text.split("\n\n").filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data:"))).last();
    match last.and_then(|data| serde_json::from_str::<Value>(data.trim()).ok()) {
        Some(e) if e["ready"] == true => End::Ready,
        Some(e) if e["failed"] == true && e["message"].as_str().is_some_and(|m| !m.is_empty()) => {
            End::Failed(e["message"].as_str().unwrap_or_default().chars().take(120).collect())
        }
        other => End::Nothing(format!("the stream ended with {other:?}")),
    }
}

/// What the readers saw: answers by (kind of caller, status), and latencies.
#[derive(Default)]
struct Reads {
    answers: BTreeMap<(String, u16), u64>,
    failed: u64,
    latencies_ms: Vec<f64>,
}

/// Offers `rate` reads per second until `until`, never more than 256 in flight.
async fn readers(http: reqwest::Client, url: String, users: u64, rate: u64, until: Instant, reads: Arc<Mutex<Reads>>, held_back: Arc<AtomicU64>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n: u64 = 0;
    while Instant::now() < until {
        tick.tick().await;
        n += 1;
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                held_back.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let (http, url, reads) = (http.clone(), url.clone(), reads.clone());
        tokio::spawn(async move {
            let name = user(n.wrapping_mul(7919) % users);
            let r = http.get(format!("{url}/api/v1/users/{name}/server"));
            let (kind, r) = match n % 10 {
                0..=5 => ("hub", r.bearer_auth(HUB_TOKEN)),
                6 | 7 => ("other user's token", r.bearer_auth(ALICE_TOKEN)),
                8 => ("unknown token", r.bearer_auth("not-a-token-anyone-has")),
                _ => ("no token", r),
            };
            let t0 = Instant::now();
            let answer = r.send().await;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            let mut reads = reads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match answer {
                Ok(a) => {
                    *reads.answers.entry((kind.to_string(), a.status().as_u16())).or_default() += 1;
                    reads.latencies_ms.push(ms);
                }
                Err(_) => reads.failed += 1,
            }
            drop(permit);
        });
    }
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0
}

/// Live (not terminating) Pods of the daemon's servers, by server, on every cluster.
fn live_pods(home: &str) -> BTreeMap<String, Vec<String>> {
    let mut by_server: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for context in ["cluster-a", "cluster-b", "cluster-c"] {
        let out = common::kubectl(context, &["get", "pods", "-A", "-l", &format!("fleetspawn.io/home={home}"), "-o", "json"]);
        let list: Value = serde_json::from_str(&out).unwrap_or_default();
        let pods = list["items"].as_array().cloned().unwrap_or_default();
        for pod in pods.iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()) {
            let key = pod["metadata"]["labels"]["fleetspawn.io/instance"].as_str().unwrap_or_default();
            by_server.entry(key.to_string()).or_default().push(context.to_string());
        }
    }
    by_server
}

fn leftovers(home: &str) -> Vec<String> {
    let kinds = "pods,services,ingresses.networking.k8s.io,secrets,serviceaccounts,configmaps,networkpolicies";
    ["cluster-a", "cluster-b", "cluster-c"]
        .iter()
        .flat_map(|c| {
            common::kubectl(c, &["get", kinds, "-A", "-l", &format!("fleetspawn.io/home={home}"), "-o", "name"])
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| format!("{c}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let seconds = env_u64("FSSOAK_SECONDS", 600);
    let users = env_u64("FSSOAK_USERS", 50);
    let rate = env_u64("FSSOAK_READS", 500);
    let home = common::unique("fs-soak");
    let daemon = Daemon::start(DaemonOptions { home_namespace: Some(&home), ..DaemonOptions::default() });
    let pid = daemon.pid();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("client");
    eprintln!("fssoak: {users} users spawning and stopping, {rate} reads/s offered, for {seconds} s (daemon pid {pid}, home {home})");

    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(seconds);
    let spawns = Arc::new(Mutex::new(Spawns::default()));
    let reads = Arc::new(Mutex::new(Reads::default()));
    let held_back = Arc::new(AtomicU64::new(0));
    let mut tasks: Vec<tokio::task::JoinHandle<()>> =
        (0..users).map(|i| tokio::spawn(user_loop(http.clone(), daemon.url.clone(), user(i), until, spawns.clone()))).collect();
    tasks.push(tokio::spawn(readers(http.clone(), daemon.url.clone(), users, rate, until, reads.clone(), held_back.clone())));

    let mut rss = vec![(0u64, rss_mib(pid))];
    let mut duplicates: BTreeMap<String, Vec<String>> = BTreeMap::new();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(15).min(until.saturating_duration_since(Instant::now()))).await;
        let live = tokio::task::spawn_blocking({
            let home = home.clone();
            move || live_pods(&home)
        })
        .await
        .expect("kubectl");
        duplicates.extend(live.into_iter().filter(|(_, where_)| where_.len() > 1));
        let at = t0.elapsed().as_secs();
        rss.push((at, rss_mib(pid)));
        let s = spawns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        eprintln!("fssoak: {at:>4} s: {} spawns ready, {} stops, RSS {:.1} MiB", s.ready, s.stops, rss.last().map_or(0.0, |r| r.1));
    }
    let read_seconds = t0.elapsed().as_secs_f64();
    for t in tasks {
        t.await.expect("a soak task");
    }
    // Every user stopped its last server; nothing may be left of them.
    let mut left = leftovers(&home);
    for _ in 0..60 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        left = leftovers(&home);
    }
    let listed: Vec<Value> = match http.get(format!("{}/api/v1/instances", daemon.url)).bearer_auth(common::daemon::ADMIN_TOKEN).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => Vec::new(),
    };

    let spawns = Arc::try_unwrap(spawns).ok().expect("the users are done").into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut reads = Arc::try_unwrap(reads).ok().expect("the readers are done").into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    reads.latencies_ms.sort_by(f64::total_cmp);
    let answered: u64 = reads.answers.values().sum();
    let read_5xx: u64 = reads.answers.iter().filter(|((_, s), _)| *s >= 500).map(|(_, n)| n).sum();
    let wrong: Vec<String> = reads
        .answers
        .iter()
        .filter(|((kind, status), _)| match kind.as_str() {
            "hub" => !matches!(status, 200 | 404),
            "other user's token" => *status != 403,
            _ => *status != 401,
        })
        .map(|((kind, status), n)| format!("{kind}: {status} ×{n}"))
        .collect();
    let steady = rss.iter().find(|(at, _)| *at >= 60).map_or(0.0, |r| r.1);
    let result = json!({
        "seconds": seconds,
        "users": users,
        "reads_offered_per_s": rate,
        "spawns": spawns,
        "reads": {
            "answered": answered,
            "per_s": answered as f64 / read_seconds,
            "by_caller_and_status": reads.answers.iter().map(|((k, s), n)| (format!("{k} {s}"), *n)).collect::<BTreeMap<_, _>>(),
            "transport_errors": reads.failed,
            "held_back_at_256_in_flight": held_back.load(Ordering::Relaxed),
            "p50_ms": percentile(&reads.latencies_ms, 0.5),
            "p99_ms": percentile(&reads.latencies_ms, 0.99),
            "max_ms": percentile(&reads.latencies_ms, 1.0),
            "wrong_answers": wrong,
        },
        "duplicates": duplicates,
        "leftovers": left,
        "servers_listed_at_end": listed.len(),
        "rss_mib": rss,
        "rss_start_end_mib": [rss.first().map_or(0.0, |r| r.1), steady, rss.last().map_or(0.0, |r| r.1)],
    });
    println!("RESULT {result}");
    let lost = spawns.lost + u64::try_from(listed.len()).unwrap_or(u64::MAX);
    println!(
        "fssoak: {} s, {users} users: {} spawns accepted, {} ready, {} failed with a cause, {lost} lost, {} duplicated, {} left over; \
         {:.0} reads/s answered (p50 {:.1} ms, p99 {:.1} ms), {} 5xx; RSS {:.1} MiB at start, {:.1} MiB at 60 s, {:.1} MiB at the end",
        seconds,
        spawns.accepted,
        spawns.ready,
        spawns.failed_with_cause.values().sum::<u64>(),
        duplicates.len(),
        left.len(),
        answered as f64 / read_seconds,
        percentile(&reads.latencies_ms, 0.5),
        percentile(&reads.latencies_ms, 0.99),
        spawns.server_errors + read_5xx,
        rss.first().map_or(0.0, |r| r.1),
        steady,
        rss.last().map_or(0.0, |r| r.1),
    );
    let ok = spawns.server_errors + read_5xx == 0 && lost == 0 && duplicates.is_empty() && left.is_empty() && wrong.is_empty() && spawns.unexpected.is_empty();
    if !ok {
        let log = daemon.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!("fssoak: FAILED: unexpected answers {:?}; the daemon's log ends:", spawns.unexpected);
        for line in tail.iter().rev() {
            eprintln!("{line}");
        }
        std::process::exit(1);
    }
}
