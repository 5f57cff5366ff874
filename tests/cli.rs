//! The operator's command line, as a script would use it, against the local clusters.

mod common;

use std::process::{Command, Output};

/// The command, on the records of a home namespace of this test binary's own.
fn fleetspawn(args: &[&str]) -> Output {
    static HOME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    fleetspawn_in(HOME.get_or_init(common::home_namespace), args)
}

/// The command on the records of `home` (the commands of one test share theirs, so no other
/// test's command carries their spawns).
fn fleetspawn_in(home: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetspawn"))
        .env("FLEETSPAWN_HOME_NAMESPACE", home)
        .current_dir(common::repo())
        .arg("--kubeconfig")
        .arg(common::kubeconfig())
        .args(["--profiles", "tests/fixtures/profiles.toml"])
        .args(args)
        .env_remove("FLEETSPAWN_LOG")
        .output()
        .expect("run fleetspawn")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

#[test]
fn spawn_prints_progress_then_the_url_and_list_and_stop_follow() {
    let home = common::home_namespace();
    let fleetspawn = |args: &[&str]| fleetspawn_in(&home, args);
    let user = common::unique("cli");
    let out = fleetspawn(&["spawn", "--user", &user, "--profile", "spread", "--server", "lab"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    // stdout is exactly the URL (scriptable); progress goes to stderr.
    let url = stdout.trim();
    assert!(url.starts_with("http://cluster-") && url.ends_with(&format!("/user/{user}/lab/")), "{stdout}");
    assert!(stderr.contains("Scheduled:") && stderr.contains("Started:"), "{stderr}");

    let out = fleetspawn(&["list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let mine: Vec<&serde_json::Value> = list.as_array().expect("array").iter().filter(|i| i["user"] == user.as_str()).collect();
    assert_eq!(mine.len(), 1, "{list}");
    assert_eq!((mine[0]["server"].as_str(), mine[0]["state"].as_str(), mine[0]["url"].as_str()), (Some("lab"), Some("running"), Some(url)));

    let table = text(&fleetspawn(&["list"]).stdout);
    assert!(table.starts_with("USER") && table.lines().any(|l| l.starts_with(&user) && l.contains("running")), "{table}");

    for _ in 0..2 {
        let out = fleetspawn(&["stop", "--user", &user, "--server", "lab"]);
        assert!(out.status.success(), "stop is idempotent: {}", text(&out.stderr));
    }
    let list: serde_json::Value = serde_json::from_slice(&fleetspawn(&["list", "--json"]).stdout).expect("JSON");
    assert!(!list.as_array().expect("array").iter().any(|i| i["user"] == user.as_str()), "{list}");
}

#[test]
fn a_failing_spawn_exits_non_zero_with_the_cause() {
    let out = fleetspawn(&["spawn", "--user", &common::unique("cli-fail"), "--profile", "broken-image"]);
    assert!(!out.status.success());
    assert_eq!(text(&out.stdout), "", "no URL on failure");
    assert!(text(&out.stderr).contains("ErrImagePull"), "{}", text(&out.stderr));
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let user = common::unique("cli-bad");
    let out = fleetspawn(&["spawn", "--user", &user, "--profile", "nope"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unknown profile \"nope\""), "{}", text(&out.stderr));
    let out = fleetspawn(&["spawn", "--user", &user, "--option", "no-equals-sign"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("key=value"), "{}", text(&out.stderr));
}

#[test]
fn render_prints_the_bundle_as_yaml_documents() {
    let out = fleetspawn(&["render", "--profile", "with-extras", "--user", "{{ 7*7 }}"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    let kinds: Vec<&str> = yaml.lines().filter_map(|l| l.strip_prefix("kind: ")).collect();
    for kind in ["Namespace", "ConfigMap", "Secret", "ServiceAccount", "Pod", "Service", "Ingress"] {
        assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
    }
    assert!(yaml.contains("{{ 7*7 }}") && !yaml.contains(": 49"), "user values stay data");
}

/// `fleetspawn check` validates the profiles against the operator's `templates_dir`, as the
/// daemon will render them: a profile these templates cannot render is reported at its line.
#[test]
fn check_validates_profiles_against_the_operators_templates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).expect("templates dir");
    let config = dir.path().join("fleetspawn.toml");
    std::fs::write(&config, format!("templates_dir = {:?}\n", templates.display().to_string())).expect("config");
    let check = || fleetspawn(&["--config", config.to_str().expect("utf-8 path"), "check"]);

    let out = check();
    assert!(out.status.success(), "no overrides: the built-in templates render every profile: {}", text(&out.stderr));

    std::fs::write(templates.join("pod.yaml.j2"), "kind: {{ no_such_variable }}\n").expect("template");
    let out = check();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "a profile that does not render with templates_dir must fail the check");
    assert!(
        stderr.lines().any(|l| l.starts_with("tests/fixtures/profiles.toml:") && l.contains("profiles[") && l.contains("pod.yaml.j2")),
        "each failing profile named at its line: {stderr}"
    );

    std::fs::remove_file(templates.join("pod.yaml.j2")).expect("remove");
    std::fs::write(templates.join("pods.yaml.j2"), "kind: Pod\n").expect("misspelt template");
    let out = check();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("pods.yaml.j2: not a template fleetspawn knows"), "{}", text(&out.stderr));
}

/// The embedded default's development token and `local_user` make an admin of anyone who
/// reaches the daemon: `serve` refuses them on any address but loopback, naming each setting,
/// and the environment turns each off.
#[test]
fn serve_refuses_the_development_settings_off_loopback() {
    let serve = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleetspawn"));
        cmd.current_dir(common::repo()).args(["--config", "config/fleetspawn.toml", "serve"]).env("FLEETSPAWN_LISTEN", "0.0.0.0:0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run fleetspawn serve")
    };
    let out = serve(&[]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "started with the development settings on 0.0.0.0");
    assert!(stderr.contains("auth.tokens[dev-admin]") && stderr.contains("auth.local_user"), "{stderr}");
    let out = serve(&[("FLEETSPAWN_AUTH__TOKENS", "[]")]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success() && !stderr.contains("auth.tokens[") && stderr.contains("auth.local_user"), "{stderr}");
}
