//! `fleetspawn import kubespawner` on a corpus of real-world shaped Zero to JupyterHub values
//! files and a `jupyterhub_config.py` (tests/fixtures/kubespawner/): each converts, with what
//! it leaves out listed at its lines (`expected/<file>.stderr`); `fleetspawn check` accepts
//! the result; and each profile's Pod, as `fleetspawn render` prints it, matches field by
//! field (image, resources, env, volumes, node selection, security context) the Pod that
//! KubeSpawner 7.1 itself builds for the same profile (tests/kubespawner_pod.py). And
//! `naming = "kubespawner"` names things as KubeSpawner itself does, on thousands of awkward
//! names (tests/kubespawner_names.py).
//!
//! KubeSpawner comes from PyPI (tests/requirements-kubespawner.txt): `./dev test` installs it
//! in the test venv and sets `FLEETSPAWN_TEST_VENV`. Without it the comparison fails, never
//! passes silently. No cluster is needed: `check` and `render` only read the kubeconfig.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::{json, Value};

const CONTEXT: &str = "cluster-a";
const INGRESS: &str = "http://cluster-a.127.0.0.1.nip.io:18081";
const USER: &str = "alice";

/// Differences the importer reports (so an admin knows of them), per file, profile index and
/// compared field.
const REPORTED_DIFFERENCES: &[(&str, usize, &str)] = &[
    // {userid} has no fleetspawn variable: MY_ID is left out (reported at its line).
    ("03-env.values.yaml", 0, "env"),
    // "Bad_Slug" is no DNS-1123 label: the profile is "bad-slug" (reported).
    ("10-unconvertible.values.yaml", 0, "slug"),
    // The image is a lambda: not converted (reported), the default image stays.
    ("11-jupyterhub_config.py", 2, "image"),
];

fn corpus() -> Vec<PathBuf> {
    let dir = common::repo().join("tests/fixtures/kubespawner");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).expect("the corpus").flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    assert!(files.len() >= 10, "the corpus has at least ten files: {files:?}");
    files
}

fn name(file: &Path) -> String {
    file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fleetspawn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetspawn")).current_dir(common::repo()).args(args).env_remove("FLEETSPAWN_LOG").output().expect("run fleetspawn")
}

/// A kubeconfig with the target context (check and render read it, and call no cluster).
fn kubeconfig(dir: &Path) -> PathBuf {
    let path = dir.join("kubeconfig");
    let yaml = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: {CONTEXT}\nclusters: [{{name: a, cluster: {{server: 'https://127.0.0.1:9'}}}}]\nusers: [{{name: a, user: {{token: t}}}}]\ncontexts: [{{name: {CONTEXT}, context: {{cluster: a, user: a}}}}]\n"
    );
    std::fs::write(&path, yaml).expect("write the kubeconfig");
    path
}

/// Converts `file` into `dir`; returns the profiles file and the stderr.
fn import(file: &Path, dir: &Path) -> (PathBuf, String) {
    let out_path = dir.join(format!("{}.toml", name(file)));
    let relative = file.strip_prefix(common::repo()).unwrap_or(file);
    let out = fleetspawn(&[
        "import",
        "kubespawner",
        relative.to_str().expect("utf-8 path"),
        "--context",
        CONTEXT,
        "--ingress-url",
        INGRESS,
        "-o",
        out_path.to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "{}: {}", name(file), text(&out.stderr));
    (out_path, text(&out.stderr))
}

#[test]
fn every_file_converts_lists_what_it_leaves_out_and_passes_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = kubeconfig(dir.path());
    for file in corpus() {
        let (profiles, stderr) = import(&file, dir.path());
        let expected_path = common::repo().join("tests/fixtures/kubespawner/expected").join(format!("{}.stderr", name(&file)));
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        assert_eq!(stderr, expected, "{}: what is not converted, each at its line", name(&file));
        let out = fleetspawn(&["--kubeconfig", kubeconfig.to_str().expect("utf-8"), "--profiles", profiles.to_str().expect("utf-8"), "check"]);
        assert!(out.status.success() && text(&out.stderr).is_empty(), "{}: check: {}{}", name(&file), text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stdout).ends_with("profiles OK\n"), "{}", text(&out.stdout));
    }
}

#[test]
fn stdout_is_the_profiles_file_and_bad_input_fails_with_its_line() {
    let out = fleetspawn(&["import", "kubespawner", "tests/fixtures/kubespawner/01-minimal.values.yaml", "--context", CONTEXT, "--ingress-url", INGRESS]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file: toml::Table = toml::from_str(&text(&out.stdout)).expect("stdout is TOML");
    assert_eq!(file["defaults"]["image"].as_str(), Some("quay.io/jupyter/base-notebook:2024-12-02"));
    assert_eq!(file["defaults"]["context"].as_str(), Some(CONTEXT));

    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("values.yaml");
    std::fs::write(&bad, "singleuser:\n  image: [unclosed\n").expect("write");
    let out = fleetspawn(&["import", "kubespawner", bad.to_str().expect("utf-8"), "--context", CONTEXT, "--ingress-url", INGRESS]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("values.yaml: line 3: invalid YAML"), "{}", text(&out.stderr));
}

fn python() -> PathBuf {
    let venv = std::env::var_os("FLEETSPAWN_TEST_VENV").unwrap_or_else(|| {
        panic!("FLEETSPAWN_TEST_VENV is not set: a venv with tests/requirements-kubespawner.txt installed is needed (./dev test does this)")
    });
    let bin = PathBuf::from(venv).join("bin/python");
    assert!(bin.is_file(), "{} does not exist: pip install -r tests/requirements-kubespawner.txt in FLEETSPAWN_TEST_VENV", bin.display());
    bin
}

/// KubeSpawner's slug for the profile at `index` (none without a profile list) and its Pod.
fn kubespawner_pod(file: &Path, index: usize) -> (Option<String>, Value) {
    let out = Command::new(python())
        .arg(common::repo().join("tests/kubespawner_pod.py"))
        .arg(file)
        .arg(USER)
        .arg(index.to_string())
        .output()
        .expect("run tests/kubespawner_pod.py");
    assert!(out.status.success(), "kubespawner_pod.py {}: {}", name(file), text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    (v["slug"].as_str().map(str::to_owned), v["pod"].clone())
}

fn rendered_pod(profiles: &Path, slug: &str) -> Value {
    let out = fleetspawn(&["--profiles", profiles.to_str().expect("utf-8"), "render", "--profile", slug, "--user", USER]);
    assert!(out.status.success(), "render {slug}: {}", text(&out.stderr));
    let yaml = text(&out.stdout);
    let pod = serde_yaml::Deserializer::from_str(&yaml).map(|doc| Value::deserialize(doc).expect("a YAML document")).find(|doc| doc["kind"] == "Pod");
    pod.unwrap_or_else(|| panic!("no Pod in the bundle of {slug}:\n{yaml}"))
}

/// A Kubernetes quantity as a number (`500m` → 0.5, `2Gi` → 2147483648).
fn quantity(v: &Value) -> f64 {
    if let Some(n) = v.as_f64() {
        return n;
    }
    let s = v.as_str().unwrap_or_default();
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, factor) in suffixes {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().expect("a quantity") * factor;
        }
    }
    s.parse().unwrap_or_else(|_| panic!("not a quantity: {v}"))
}

fn notebook(pod: &Value) -> &Value {
    pod["spec"]["containers"].as_array().and_then(|cs| cs.iter().find(|c| c["name"] == "notebook")).unwrap_or_else(|| panic!("no notebook container: {pod}"))
}

fn resources(pod: &Value) -> Value {
    let r = &notebook(pod)["resources"];
    let numbers = |m: &Value| Value::Object(m.as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), json!(quantity(v)))).collect()).unwrap_or_default());
    json!({"limits": numbers(&r["limits"]), "requests": numbers(&r["requests"])})
}

/// The environment an admin configured: everything but what JupyterHub, KubeSpawner or
/// fleetspawn set themselves (the hub's URLs and token, `MEM_LIMIT`...), plus the default URL.
fn env(pod: &Value) -> Value {
    let own = |name: &str| ["JPY_", "JUPYTERHUB_", "JUPYTER_IMAGE", "MEM_", "CPU_"].iter().any(|p| name.starts_with(p)) && name != "JUPYTERHUB_DEFAULT_URL";
    let mut out = serde_json::Map::new();
    for e in notebook(pod)["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default();
        if !own(name) {
            let mut e = e.clone();
            e.as_object_mut().map(|m| m.remove("name"));
            out.insert(name.to_owned(), e);
        }
    }
    Value::Object(out)
}

/// Each mount of the notebook container: its path, sub-path and read-only flag, and its
/// volume as written but its name (the home claim included: with `naming = "kubespawner"`
/// both name it alike).
fn volumes(pod: &Value) -> Value {
    let volumes = pod["spec"]["volumes"].as_array().cloned().unwrap_or_default();
    let mut out = serde_json::Map::new();
    for m in notebook(pod)["volumeMounts"].as_array().into_iter().flatten() {
        let volume = volumes.iter().find(|v| v["name"] == m["name"]).cloned().unwrap_or(Value::Null);
        let mut source = volume;
        source.as_object_mut().map(|s| s.remove("name"));
        out.insert(
            m["mountPath"].as_str().unwrap_or_default().to_owned(),
            json!({"subPath": m["subPath"], "readOnly": m["readOnly"].as_bool().unwrap_or(false), "volume": source}),
        );
    }
    Value::Object(out)
}

fn node_selection(pod: &Value) -> Value {
    let spec = &pod["spec"];
    let mut tolerations: Vec<Value> = spec["tolerations"].as_array().cloned().unwrap_or_default();
    tolerations.sort_by_key(|t| t.to_string());
    let empty_is_null = |v: &Value| if v.as_object().is_some_and(|m| m.is_empty()) { Value::Null } else { v.clone() };
    json!({"nodeSelector": empty_is_null(&spec["nodeSelector"]), "tolerations": tolerations, "affinity": empty_is_null(&spec["affinity"])})
}

/// The user, groups and privileges the notebook runs with (a container's setting wins over
/// the Pod's, as in Kubernetes).
fn security(pod: &Value) -> Value {
    let psc = &pod["spec"]["securityContext"];
    let csc = &notebook(pod)["securityContext"];
    let pick = |key: &str| if csc[key].is_null() { psc[key].clone() } else { csc[key].clone() };
    json!({"runAsUser": pick("runAsUser"), "runAsGroup": pick("runAsGroup"), "fsGroup": psc["fsGroup"], "allowPrivilegeEscalation": csc["allowPrivilegeEscalation"]})
}

/// Other containers, pull secrets and hooks (Z2JH's extraContainers, initContainers,
/// imagePullSecrets, lifecycleHooks).
fn extras(pod: &Value) -> Value {
    let names = |key: &str| -> Vec<Value> {
        pod["spec"][key].as_array().into_iter().flatten().filter(|c| c["name"] != "notebook").map(|c| json!([c["name"], c["image"]])).collect()
    };
    let lifecycle = notebook(pod)["lifecycle"].clone();
    json!({
        "containers": names("containers"),
        "initContainers": names("initContainers"),
        "imagePullSecrets": pod["spec"]["imagePullSecrets"].as_array().cloned().unwrap_or_default(),
        "lifecycle": if lifecycle.as_object().is_some_and(|m| m.is_empty()) { Value::Null } else { lifecycle },
    })
}

#[test]
fn each_profiles_pod_matches_the_pod_kubespawner_builds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut compared = 0;
    let mut mismatches = Vec::new();
    for file in corpus() {
        let (profiles, _) = import(&file, dir.path());
        let table: toml::Table = toml::from_str(&std::fs::read_to_string(&profiles).expect("read")).expect("TOML");
        let slugs: Vec<String> = table["profiles"].as_array().expect("profiles").iter().map(|p| p["slug"].as_str().expect("slug").to_owned()).collect();
        for (i, slug) in slugs.iter().enumerate() {
            let (ks_slug, theirs) = kubespawner_pod(&file, i);
            let ours = rendered_pod(&profiles, slug);
            let fields: [(&str, Value, Value); 7] = [
                ("slug", json!(slug), json!(ks_slug.clone().unwrap_or_else(|| "default".to_owned()))),
                ("image", notebook(&ours)["image"].clone(), notebook(&theirs)["image"].clone()),
                ("resources", resources(&ours), resources(&theirs)),
                ("env", env(&ours), env(&theirs)),
                ("volumes", volumes(&ours), volumes(&theirs)),
                ("node selection", node_selection(&ours), node_selection(&theirs)),
                ("security context", security(&ours), security(&theirs)),
            ];
            for (field, ours, theirs) in fields.iter().cloned().chain([("extras", extras(&ours), extras(&theirs))]) {
                let reported = REPORTED_DIFFERENCES.contains(&(name(&file).as_str(), i, field));
                if reported && ours == theirs {
                    mismatches.push(format!("{} profile {slug}: {field} is listed as a reported difference but matches", name(&file)));
                } else if !reported && ours != theirs {
                    mismatches.push(format!("{} profile {slug}: {field}:\n  fleetspawn render: {ours}\n  KubeSpawner:       {theirs}", name(&file)));
                }
                compared += 1;
            }
        }
    }
    assert!(mismatches.is_empty(), "{} of {compared} fields differ:\n{}", mismatches.len(), mismatches.join("\n"));
    assert!(compared >= 8 * 15, "compared only {compared} fields");
}

/// Awkward user and server names: unicode, `@`, `.`, upper case, digits first, `--`, 200
/// characters, empty server names; then many drawn from a mix of all of those.
fn awkward_pairs() -> Vec<(String, String)> {
    let users = [
        "alice",
        "Alice",
        "first.last@example.com",
        "FIRST.LAST@EXAMPLE.COM",
        "1st",
        "42",
        "a--b",
        "-lead",
        "trail-",
        "a_b",
        "a b",
        "ünïcödé",
        "日本語",
        "İstanbul",
        "\u{212a}elvin",
        "Σίσυφος",
        "straße",
        "🦀",
        "a\u{301}",
        "x",
        "",
    ];
    let servers = ["", "lab", "My Lab", "gpu-1", "--", "Ünï", "9"];
    let mut pairs: Vec<(String, String)> = users.iter().flat_map(|u| servers.iter().map(move |s| (u.to_string(), s.to_string()))).collect();
    for (u, s) in [("a".repeat(200), String::new()), ("a".repeat(47), String::new()), ("a".repeat(46), "b".into()), ("b".repeat(48), "c".repeat(48))] {
        pairs.push((u, s));
    }
    // A fixed sequence of draws (the same every run), from pieces that each break a rule.
    let pieces = ["a", "Z", "0", "9", "-", "--", ".", "@", "_", " ", "ü", "İ", "\u{212a}", "日", "🦀", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "ß", "\u{200b}"];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % n as u64).unwrap_or(0)
    };
    let mut draw = |max: usize| {
        let count = next(max);
        (0..count).map(|_| pieces[next(pieces.len())]).collect::<String>()
    };
    for _ in 0..2000 {
        let user = draw(12);
        let server = if draw(3).is_empty() { String::new() } else { draw(8) };
        pairs.push((user, server));
    }
    pairs
}

/// `naming = "kubespawner"`: fleetspawn's names are KubeSpawner 7.1's own (its `safe` scheme,
/// asked of KubeSpawner itself through tests/kubespawner_names.py) for every awkward pair, so
/// a server moved from KubeSpawner mounts its user's existing claim.
#[test]
fn kubespawner_naming_matches_kubespawner_on_awkward_names() {
    use fleetspawn_core::kubespawner_names::{expand, Fields};
    use std::io::Write as _;
    let pairs = awkward_pairs();
    let mut child = Command::new(python())
        .arg("kubespawner_names.py")
        .current_dir(common::repo().join("tests"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tests/kubespawner_names.py");
    let input: String = pairs.iter().map(|(u, s)| format!("{}\n", json!([u, s]))).collect();
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write the pairs");
    let out = child.wait_with_output().expect("kubespawner_names.py");
    assert!(out.status.success(), "kubespawner_names.py: {}", text(&out.stderr));
    let answers: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(answers.len(), pairs.len(), "one answer per pair");
    let mut wrong = Vec::new();
    for ((user, server), theirs) in pairs.iter().zip(&answers) {
        let f = Fields::new(user, server);
        let ours = json!({
            "username": f.username,
            "servername": f.servername,
            "user_server": f.user_server,
            "z2jh_claim": expand("claim-{username}{servername}", user, server).expect("expands"),
            "default_claim": expand("claim-{user_server}", user, server).expect("expands"),
        });
        if &ours != theirs {
            wrong.push(format!("{user:?}, {server:?}: fleetspawn {ours}, KubeSpawner {theirs}"));
        }
    }
    assert!(wrong.is_empty(), "{} of {} pairs differ:\n{}", wrong.len(), pairs.len(), wrong.iter().take(20).cloned().collect::<Vec<_>>().join("\n"));
}
