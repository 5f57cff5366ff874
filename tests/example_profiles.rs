//! The embedded default (config/fleetspawn.toml + profiles/example.toml) works on the local
//! clusters: it checks, every profile renders to objects the API servers accept, and every
//! profile spawns a server that becomes ready.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;

fn fleetspawn(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fleetspawn"))
        .current_dir(common::repo())
        .arg("--kubeconfig")
        .arg(common::kubeconfig())
        .args(args)
        .output()
        .expect("run fleetspawn")
}

#[test]
fn check_passes_on_the_embedded_default() {
    let out = fleetspawn(&["--config", "config/fleetspawn.toml", "check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("profiles/example.toml: 7 profiles OK"));
    assert!(!stderr.contains("warning"), "every context exists on the local clusters: {stderr}");
}

#[test]
fn check_fails_listing_every_error_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[profiles]]\nslug = \"x\"\ndisplay_name = \"X\"\ncontext = \"cluster-a\"\nimagee = \"typo\"\n\n[[profiles]]\nslug = \"x\"\ndisplay_name = \"Again\"\ncontext = \"cluster-a\"\n").expect("write");
    let out = fleetspawn(&["--profiles", bad.to_str().expect("utf-8"), "check"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:5:") && stderr.contains("imagee"), "{stderr}");
    assert!(stderr.lines().count() >= 2, "every error is listed: {stderr}");
}

/// `render` output is accepted by each cluster's API server (server-side dry run), for every
/// example profile on every context it may be placed on, and for every option choice.
#[test]
fn render_output_applies_cleanly_with_a_server_side_dry_run() {
    let set = fleetspawn::sources::profiles_builtin(&common::repo().join("profiles/example.toml")).expect("example profiles");
    let mut runs = 0;
    for profile in set.iter() {
        let mut variants: Vec<(Vec<String>, std::collections::BTreeMap<String, String>)> = vec![(vec![], Default::default())];
        for (key, option) in &profile.options {
            for choice in option.choices.keys() {
                variants.push((vec!["--option".into(), format!("{key}={choice}")], [(key.clone(), choice.clone())].into()));
            }
        }
        for (extra, chosen) in &variants {
            // A choice may move the profile to other contexts.
            let contexts = profile.resolve_options(chosen).expect("the choice resolves").profile.contexts;
            for context in &contexts {
                let mut args = vec![
                    "--config",
                    "config/fleetspawn.toml",
                    "render",
                    "--profile",
                    &profile.slug,
                    "--user",
                    "Zoë.Dupont@example.org",
                    "--server",
                    "Ünicode",
                    "--context",
                    context,
                ];
                args.extend(extra.iter().map(String::as_str));
                let out = fleetspawn(&args);
                assert!(out.status.success(), "render {args:?}: {}", String::from_utf8_lossy(&out.stderr));
                // A dry run persists nothing, but the API server admits a Pod only if its
                // ServiceAccount exists: create the Namespace and ServiceAccount for real first.
                let yaml = String::from_utf8_lossy(&out.stdout).to_string();
                let prerequisites: Vec<&str> =
                    yaml.split("\n---\n").filter(|d| d.contains("\nkind: ServiceAccount\n") || d.contains("\nkind: Namespace\n")).collect();
                assert_eq!(prerequisites.len(), 2, "{yaml}");
                kubectl_stdin(context, &["apply", "-f", "-"], &prerequisites.join("\n---\n"));
                kubectl_stdin(context, &["apply", "--dry-run=server", "-f", "-"], &yaml);
                kubectl_stdin(context, &["delete", "-f", "-"], prerequisites.iter().find(|d| d.contains("kind: ServiceAccount")).copied().unwrap_or_default());
                runs += 1;
            }
        }
    }
    assert!(runs >= 8, "{runs} renders checked");
}

fn kubectl_stdin(context: &str, args: &[&str], input: &str) {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(common::kubeconfig())
        .args(["--context", context])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("pipe");
    let result = child.wait_with_output().expect("kubectl ran");
    assert!(result.status.success(), "kubectl {args:?} on {context}:\n{}\n{input}", String::from_utf8_lossy(&result.stderr));
}

#[tokio::test]
async fn every_example_profile_spawns_a_ready_server() {
    use fleetspawn::service::{SpawnRequest, Spawner, SpawnerSettings};
    let loaded = fleetspawn::kube::fleet::load(Some(&common::kubeconfig())).expect("kubeconfig");
    let set = fleetspawn::sources::profiles_builtin(&common::repo().join("profiles/example.toml")).expect("example profiles");
    let slugs: Vec<String> = set.iter().map(|p| p.slug.clone()).collect();
    let renderer = fleetspawn_core::bundle::Renderer::builtin().expect("templates");
    let fleet = fleetspawn::kube::fleet::Fleet::connect(&loaded).await;
    let s = Spawner::start(
        fleet,
        set,
        renderer,
        SpawnerSettings { max_servers_per_user: 10, home_namespace: common::home_namespace(), ..Default::default() },
        fleetspawn::metrics::Metrics::new(),
    )
    .await
    .expect("spawner");
    let user = common::unique("example");
    for slug in &slugs {
        let req = SpawnRequest { user: user.clone(), server: slug.clone(), profile: slug.clone(), ..Default::default() };
        s.spawn(req).await.unwrap_or_else(|e| panic!("{slug}: {e}"));
    }
    // The web app once more, behind cluster C's Gateway with the prefix stripped.
    let stripped = SpawnRequest {
        user: user.clone(),
        server: "echo-stripped".into(),
        profile: "echo".into(),
        options: [("route".to_string(), "stripped".to_string())].into(),
        ..Default::default()
    };
    s.spawn(stripped).await.unwrap_or_else(|e| panic!("echo, stripped: {e}"));
    let mut servers = slugs.clone();
    servers.push("echo-stripped".into());
    for server in &servers {
        let progress = s.progress(&user, server).expect("progress");
        let events = tokio::time::timeout(Duration::from_secs(90), progress.subscribe().collect::<Vec<_>>()).await.expect("ends");
        let last = events.last().expect("events");
        assert_eq!(last.ready, Some(true), "{server}: {events:?}");
    }
    // What the web app got, through the real ingress: the whole path under the prefix, or the
    // path with the prefix stripped by the HTTPRoute.
    for (server, expected_path) in [("echo", format!("{}any/path?x=1", prefix(&user, "echo"))), ("echo-stripped", "/any/path?x=1".to_string())] {
        let url = s.status(&user, server).expect("status").url.unwrap_or_default();
        let answer: serde_json::Value = reqwest::get(format!("{url}any/path?x=1")).await.expect("through the ingress").json().await.expect("the echo's JSON");
        assert_eq!(answer["path"], expected_path.as_str(), "{server}: {answer}");
        assert!(answer["headers"]["Host"].as_str().is_some_and(|h| h.starts_with("127.0.0.1:")), "{server}: {answer}");
    }
    s.stop(&user, "echo-stripped", true).await.expect("stop echo-stripped");
    for slug in &slugs {
        // The PVC of the persistent profile goes too ("delete forever").
        s.stop(&user, slug, true).await.unwrap_or_else(|e| panic!("stop {slug}: {e}"));
    }
}

fn prefix(user: &str, server: &str) -> String {
    fleetspawn_core::naming::url_prefix(user, server)
}
