//! Checks `strategic_merge` against kubectl on every case of `tests/smp_corpus`.
//!
//! Each corpus file is a YAML document with:
//!
//! * `description`: what the case shows;
//! * `original`: the full object; `patch`: the strategic merge patch;
//! * `kubectl_type` (optional, default `strategic`): `merge` for kinds kubectl
//!   has no strategic merge schema for. kubectl then refuses
//!   `--type strategic` (checked) and our fallback must equal its
//!   `--type merge`;
//! * `expect_error` (optional, default `false`): both kubectl and
//!   `strategic_merge` must reject the patch.
//!
//! For every case the test runs `strategic_merge` and
//! `kubectl patch --local -f original.json --patch-file patch.json --type <type> -o json`
//! and requires the two JSON results to be identical. Both sides are fed the
//! same JSON (the YAML is parsed once, here), and kubectl's output is compared
//! as is: for a local patch kubectl prints the patched document without adding
//! or defaulting anything, so no normalisation is needed. kubectl must be on
//! `PATH`; without it the test fails. It runs with a throwaway kubeconfig, so
//! the user's clusters are never consulted (`--local` makes no requests).

use fleetspawn_core::merge_patch::strategic_merge;
use serde::Deserialize;
use serde_json::Value;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A corpus file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    description: String,
    original: Value,
    patch: Value,
    #[serde(default)]
    kubectl_type: PatchType,
    #[serde(default)]
    expect_error: bool,
}

/// The `--type` kubectl is run with.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PatchType {
    #[default]
    Strategic,
    Merge,
}

impl PatchType {
    fn as_arg(self) -> &'static str {
        match self {
            Self::Strategic => "strategic",
            Self::Merge => "merge",
        }
    }
}

/// kubectl, run in a scratch directory with a throwaway kubeconfig.
struct Kubectl {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

const KUBECONFIG: &str = "\
apiVersion: v1
kind: Config
clusters:
- name: unused
  cluster: {server: \"https://127.0.0.1:1\"}
users:
- name: unused
  user: {}
contexts:
- name: unused
  context: {cluster: unused, user: unused}
current-context: unused
";

impl Kubectl {
    fn new() -> Self {
        match Command::new("kubectl").args(["version", "--client"]).output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => panic!("`kubectl version --client` failed; kubectl is required to check the SMP corpus: {}", String::from_utf8_lossy(&output.stderr)),
            Err(err) => panic!("kubectl is required to check the SMP corpus but could not be run ({err}); install kubectl on PATH"),
        }
        let dir = tempfile::tempdir().expect("create a scratch directory");
        let kubeconfig = dir.path().join("kubeconfig");
        fs::write(&kubeconfig, KUBECONFIG).expect("write the scratch kubeconfig");
        Self { dir, kubeconfig }
    }

    /// Runs `kubectl patch --local`; `Err` holds kubectl's error output.
    fn patch(&self, name: &str, case: &Case, patch_type: PatchType) -> Result<Value, String> {
        let original = self.write(&format!("{name}.original.json"), &case.original);
        let patch = self.write(&format!("{name}.patch.json"), &case.patch);
        let output = Command::new("kubectl")
            .arg("patch")
            .arg("--local")
            .arg("-f")
            .arg(&original)
            .arg("--patch-file")
            .arg(&patch)
            .args(["--type", patch_type.as_arg(), "-o", "json"])
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .expect("run kubectl");
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        serde_json::from_slice(&output.stdout).map_err(|err| format!("kubectl printed invalid JSON ({err})"))
    }

    fn write(&self, file: &str, value: &Value) -> PathBuf {
        let path = self.dir.path().join(file);
        fs::write(&path, value.to_string()).expect("write a scratch file");
        path
    }
}

fn load_corpus() -> Vec<(String, Case)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smp_corpus");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("read {}: {err}", dir.display()))
        .map(|entry| entry.expect("list the corpus").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.file_stem().and_then(|stem| stem.to_str()).expect("corpus file names are UTF-8").to_owned();
            let text = fs::read_to_string(&path).expect("read a corpus file");
            let case = serde_yaml::from_str(&text).unwrap_or_else(|err| panic!("{}: invalid corpus file: {err}", path.display()));
            (name, case)
        })
        .collect()
}

/// The first path at which `ours` and `theirs` differ, for the report.
fn first_difference(ours: &Value, theirs: &Value, path: &str) -> Option<String> {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => a.keys().chain(b.keys()).find_map(|key| match (a.get(key), b.get(key)) {
            (Some(x), Some(y)) => first_difference(x, y, &format!("{path}.{key}")),
            _ => Some(format!("{path}.{key} (present on one side only)")),
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            a.iter().zip(b).enumerate().find_map(|(i, (x, y))| first_difference(x, y, &format!("{path}[{i}]")))
        }
        _ => (ours != theirs).then(|| path.to_owned()),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// Checks one case; `Err` describes the mismatch.
fn check(kubectl: &Kubectl, name: &str, case: &Case) -> Result<(), String> {
    let ours = strategic_merge(&case.original, &case.patch);
    let theirs = kubectl.patch(name, case, case.kubectl_type);
    if case.kubectl_type == PatchType::Merge {
        if let Ok(strategic) = kubectl.patch(name, case, PatchType::Strategic) {
            return Err(format!("kubectl applies a strategic merge patch to this kind, so `kubectl_type: merge` is wrong:\n{}", pretty(&strategic)));
        }
    }
    match (ours, theirs) {
        (Ok(ours), Ok(theirs)) if case.expect_error => {
            Err(format!("expected both to fail, both succeeded\n--- ours\n{}\n--- kubectl\n{}", pretty(&ours), pretty(&theirs)))
        }
        (Ok(ours), Ok(theirs)) if ours == theirs => Ok(()),
        (Ok(ours), Ok(theirs)) => Err(format!(
            "results differ at {}\n--- ours\n{}\n--- kubectl\n{}",
            first_difference(&ours, &theirs, "").unwrap_or_default(),
            pretty(&ours),
            pretty(&theirs)
        )),
        (Err(ours), Err(theirs)) if case.expect_error => {
            println!("{name}: both reject the patch\n  ours:    {ours}\n  kubectl: {theirs}");
            Ok(())
        }
        (Err(ours), Err(theirs)) => Err(format!("both failed, but the case expects a result\n  ours:    {ours}\n  kubectl: {theirs}")),
        (Ok(ours), Err(theirs)) => Err(format!("kubectl failed ({theirs}), ours succeeded:\n{}", pretty(&ours))),
        (Err(ours), Ok(theirs)) => Err(format!("ours failed ({ours}), kubectl succeeded:\n{}", pretty(&theirs))),
    }
}

#[test]
fn corpus_matches_kubectl() {
    let corpus = load_corpus();
    assert!(corpus.len() >= 40, "the SMP corpus must have at least 40 cases, found {}", corpus.len());
    let kubectl = Kubectl::new();
    let mut report = String::new();
    let mut failures = 0;
    for (name, case) in &corpus {
        if let Err(mismatch) = check(&kubectl, name, case) {
            failures += 1;
            let _ = writeln!(report, "=== {name}: {}\n{mismatch}\n", case.description.trim());
        }
    }
    assert!(failures == 0, "{failures} of {} SMP corpus cases disagree with kubectl:\n\n{report}", corpus.len());
    println!("{} SMP corpus cases agree with kubectl", corpus.len());
}
