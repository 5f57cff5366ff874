//! The OpenAPI document, fuzzed: schemathesis generates requests (valid and invalid) for every
//! documented operation and sends them to a real daemon on the local clusters, as the admin.
//! Not one may answer with a server error (5xx).
//!
//! schemathesis comes from PyPI (tests/requirements.txt): `./dev test` installs it in a venv and
//! sets `FLEETSPAWN_TEST_VENV`; without it, `schemathesis` on PATH is used. Missing both is a
//! failure, never a silent pass.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, DaemonOptions, ADMIN_TOKEN};
use serde_json::Value;

/// Bound on the whole schemathesis run.
const FUZZ_TIMEOUT: Duration = Duration::from_secs(120);
/// Test cases per operation and phase: enough to find the classic crashes, quick enough to
/// stay well inside the time bound.
const MAX_EXAMPLES: &str = "100";

fn schemathesis() -> PathBuf {
    if let Some(venv) = std::env::var_os("FLEETSPAWN_TEST_VENV") {
        let bin = PathBuf::from(venv).join("bin/schemathesis");
        assert!(bin.is_file(), "FLEETSPAWN_TEST_VENV is set but {} does not exist: pip install -r tests/requirements.txt in that venv", bin.display());
        return bin;
    }
    let on_path = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).map(|d| d.join("schemathesis")).find(|b| b.is_file())).unwrap_or_default();
    on_path.unwrap_or_else(|| {
        panic!(
            "schemathesis not found: set FLEETSPAWN_TEST_VENV to a venv with tests/requirements.txt installed \
             (./dev test does this), or put schemathesis on PATH"
        )
    })
}

/// A path segment, percent-encoded.
fn seg(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// Profiles of this run only: one cheap default profile with a slug no one else uses, so the
/// servers the fuzzer starts are found (and stopped) by that slug.
fn fuzz_profiles(dir: &std::path::Path, slug: &str) -> PathBuf {
    let path = dir.join("fuzz-profiles.toml");
    let text = format!(
        r#"[defaults]
image = "quay.io/jupyter/base-notebook:latest"
namespace = "fleetspawn-test"
create_namespace = true
cpu_guarantee = 0.01
mem_guarantee = "16Mi"
start_timeout = "60s"
scheduling_grace = "3s"

[[profiles]]
slug = "{slug}"
display_name = "Fuzzing"
default = true
context = "cluster-a"
ingress_public_url = "http://cluster-a.127.0.0.1.nip.io:8080"
"#
    );
    std::fs::write(&path, text).expect("write the fuzz profiles");
    path
}

/// Stops every server the fuzzer started (they all use this run's profile, and only they do:
/// other tests' servers on the same clusters are left alone). Returns how many there were.
async fn stop_fuzzed_servers(daemon: &Daemon, slug: &str) -> usize {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
    let list = || async {
        let r = http.get(format!("{}/api/v1/instances?profile={slug}", daemon.url)).bearer_auth(ADMIN_TOKEN).send().await.expect("instances");
        r.json::<Vec<Value>>().await.expect("a list of instances")
    };
    let started = Instant::now();
    let mut stopped = std::collections::BTreeSet::new();
    loop {
        let left = list().await;
        if left.is_empty() {
            return stopped.len();
        }
        assert!(started.elapsed() < Duration::from_secs(90), "servers left after stopping: {left:?}");
        for i in &left {
            let (user, server) = (i["user"].as_str().unwrap_or_default(), i["server"].as_str().unwrap_or_default());
            let path =
                if server.is_empty() { format!("/api/v1/users/{}/server", seg(user)) } else { format!("/api/v1/users/{}/servers/{}", seg(user), seg(server)) };
            let r = http.delete(format!("{}{path}", daemon.url)).bearer_auth(ADMIN_TOKEN).send().await.expect("stop");
            assert_eq!(r.status(), reqwest::StatusCode::NO_CONTENT, "stopping {user:?}/{server:?}: {}", r.text().await.unwrap_or_default());
            stopped.insert(i["key"].to_string());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_openapi_document_fuzzed_gets_no_server_error() {
    let bin = schemathesis();
    let work = tempfile::tempdir().expect("tempdir");
    let slug = common::unique("fuzz");
    let profiles = fuzz_profiles(work.path(), &slug);
    let daemon = Daemon::start(DaemonOptions { profiles: &profiles, ..Default::default() });

    let output_path = work.path().join("schemathesis.out");
    let output = std::fs::File::create(&output_path).expect("output file");
    let mut child = Command::new(&bin)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", daemon.url))
        .args(["--url", &daemon.url])
        .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args(["--checks", "not_a_server_error"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--request-timeout", "30"])
        .args(["--generation-database", "none"])
        .arg("--no-color")
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("output file"))
        .stderr(output)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("schemathesis status") {
            break Some(status);
        }
        if started.elapsed() > FUZZ_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let report = std::fs::read_to_string(&output_path).unwrap_or_default();

    // Whatever the outcome, stop what the fuzzer started before judging.
    let stopped = stop_fuzzed_servers(&daemon, &slug).await;

    let log = daemon.log();
    let failed_requests: Vec<&str> = log.lines().filter(|l| l.contains("request failed")).collect();
    match status {
        None => panic!("schemathesis did not finish within {FUZZ_TIMEOUT:?}:\n{report}"),
        Some(s) => assert!(s.success(), "schemathesis found problems ({s}):\n{report}\n\nserver errors in the daemon's log:\n{}", failed_requests.join("\n")),
    }
    assert!(report.contains("passed"), "schemathesis ran no test:\n{report}");
    println!("{report}\n{stopped} server(s) the fuzzer started were stopped");
}
