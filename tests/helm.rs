//! The Helm chart (`deploy/helm/fleetspawn`) and the target RBAC (`deploy/target-rbac`): they
//! lint and render, the schema refuses wrong values, the chart's CRD is `fleetspawn crd`'s, the
//! rendered chart is accepted by a real API server (cluster-a, restricted Pod Security) and its
//! home Role grants what it says; on cluster-b the target RBAC grants exactly fleetspawn's
//! rights in the listed namespaces, `kubeconfig-for-target` mints a token context that
//! reaches them and nothing else, and `fleetspawn check --rbac` with that context names a right
//! taken away. helm and kubectl are the ones `deploy/local/build-binaries`
//! caches.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const CHART: &str = "deploy/helm/fleetspawn";
const TARGET_CHART: &str = "deploy/target-rbac";
const CRD_FILE: &str = "deploy/helm/fleetspawn/crds/userservers.fleetspawn.io.yaml";
/// The kubeconfig Secret every rendering needs.
const KUBECONFIG_SECRET: &str = "kubeconfig.existingSecret=fleetspawn-kubeconfig";

/// The cached binaries' directory (helm, kubectl), built when missing.
fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new(common::repo().join("deploy/local/build-binaries")).output().expect("run deploy/local/build-binaries");
        assert!(out.status.success(), "deploy/local/build-binaries failed:\n{}", text(&out.stderr));
        PathBuf::from(text(&out.stdout).trim())
    })
    .clone()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// `cmd` with `stdin` as its input; the output whatever the exit status.
fn run(mut cmd: Command, stdin: &str) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("output")
}

/// helm in the repository, with its own (throw-away) config, cache and data directories.
fn helm_cmd(args: &[&str]) -> Command {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm-home");
    let mut cmd = Command::new(bin_dir().join("helm"));
    cmd.current_dir(common::repo())
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .args(args);
    cmd
}

fn helm(args: &[&str]) -> Output {
    run(helm_cmd(args), "")
}

/// helm against a local cluster (`--kube-context`, the local kubeconfig).
fn helm_on(context: &str, args: &[&str]) -> Output {
    let kubeconfig = common::kubeconfig();
    let mut cmd = helm_cmd(args);
    cmd.arg("--kubeconfig").arg(kubeconfig).args(["--kube-context", context]);
    run(cmd, "")
}

/// The cached kubectl on a local cluster, with `stdin`; the output whatever the exit status.
fn kubectl_with(context: &str, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(bin_dir().join("kubectl"));
    cmd.arg("--kubeconfig").arg(common::kubeconfig()).args(["--context", context]).args(args);
    run(cmd, stdin)
}

/// kubectl on a local cluster; stdout, panics with stderr on failure.
fn kubectl(context: &str, args: &[&str]) -> String {
    let out = kubectl_with(context, args, "");
    assert!(out.status.success(), "kubectl {args:?} failed: {}", text(&out.stderr));
    text(&out.stdout)
}

/// `helm template` of the chart with `--set` values; panics when it fails.
fn render(chart: &str, namespace: &str, sets: &[&str]) -> String {
    let mut args = vec!["template", "t", chart, "-n", namespace];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = helm(&args);
    assert!(out.status.success(), "helm template {sets:?} failed:\n{}", text(&out.stderr));
    text(&out.stdout)
}

/// The documents of a multi-document YAML stream, as JSON values (empty ones skipped).
fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).expect("YAML as JSON"))
        .collect()
}

fn kinds(docs: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = docs.iter().map(|d| d["kind"].as_str().unwrap_or_default().to_string()).collect();
    kinds.sort();
    kinds
}

fn the<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind} in {:?}", kinds(docs));
    found[0]
}

/// The `--set` list plus the required kubeconfig Secret.
fn with_kubeconfig<'a>(sets: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![KUBECONFIG_SECRET];
    all.extend_from_slice(sets);
    all
}

#[test]
fn the_chart_lints_and_renders_a_restricted_deployment_with_its_settings() {
    // Both charts lint clean (warnings are errors with --strict).
    let out = helm(&["lint", "--strict", CHART, "--set", KUBECONFIG_SECRET]);
    assert!(out.status.success() && text(&out.stdout).contains("0 chart(s) failed"), "{}{}", text(&out.stdout), text(&out.stderr));
    let out = helm(&["lint", "--strict", TARGET_CHART, "--set", "namespaces={jupyter}"]);
    assert!(out.status.success() && text(&out.stdout).contains("0 chart(s) failed"), "{}{}", text(&out.stdout), text(&out.stderr));

    // Defaults: exactly these objects (no PDB with one replica, no Ingress, no ServiceMonitor).
    let docs = documents(&render(CHART, "fs-home", &with_kubeconfig(&[])));
    assert_eq!(kinds(&docs), ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"]);

    // The image defaults to the chart's appVersion, which is the daemon's version.
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(common::repo().join(CHART).join("Chart.yaml")).expect("Chart.yaml")).expect("YAML");
    assert_eq!(chart["appVersion"].as_str(), Some(env!("CARGO_PKG_VERSION")), "Chart.yaml's appVersion is not Cargo.toml's version");
    let deployment = the(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(container["image"], format!("fleetspawn:{}", env!("CARGO_PKG_VERSION")));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["requests"]["memory"].is_string() && container["resources"]["limits"]["memory"].is_string(), "{container}");
    // The restricted profile.
    let sc = &container["securityContext"];
    assert_eq!(
        (&sc["runAsNonRoot"], &sc["readOnlyRootFilesystem"], &sc["allowPrivilegeEscalation"]),
        (&Value::Bool(true), &Value::Bool(true), &Value::Bool(false))
    );
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    // The kubeconfig comes from the Secret; no mount uses subPath (ConfigMap updates, and so
    // the profiles' hot reload, would never reach such a file).
    let secret_volume = pod["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == "kubeconfig").expect("kubeconfig volume");
    assert_eq!(secret_volume["secret"]["secretName"], "fleetspawn-kubeconfig");
    assert!(container["volumeMounts"].as_array().expect("mounts").iter().all(|m| m.get("subPath").is_none()), "{container}");
    let service = the(&docs, "Service");
    assert_eq!(service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"]);

    // The settings: home namespace = the release namespace, the CRD left to Helm, never the
    // development token or local_user; and the daemon itself accepts them.
    let config = the(&docs, "ConfigMap");
    let settings = config["data"]["fleetspawn.toml"].as_str().expect("fleetspawn.toml");
    let profiles = config["data"]["profiles.toml"].as_str().expect("profiles.toml");
    assert!(settings.contains("home_namespace = \"fs-home\"") && settings.contains("install_crd = false"), "{settings}");
    assert!(settings.contains("listen = \"0.0.0.0:8080\""), "{settings}");
    assert!(!settings.contains("local_user") && !settings.contains(fleetspawn::config::DEV_TOKEN_SHA256), "{settings}");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("fleetspawn.toml"), settings).expect("write settings");
    std::fs::write(dir.path().join("profiles.toml"), profiles).expect("write profiles");
    let out = Command::new(env!("CARGO_BIN_EXE_fleetspawn"))
        .arg("--config")
        .arg(dir.path().join("fleetspawn.toml"))
        .arg("--profiles")
        .arg(dir.path().join("profiles.toml"))
        .arg("check")
        .env_remove("FLEETSPAWN_LOG")
        .env_remove("FLEETSPAWN_KUBECONFIG")
        .env_remove("FLEETSPAWN_CONFIG")
        .output()
        .expect("run fleetspawn check");
    assert!(
        out.status.success() && text(&out.stdout).contains("profiles OK"),
        "fleetspawn check refuses the chart's settings:\n{}\n{settings}",
        text(&out.stderr)
    );

    // Settings roll the Pods (read at start), profiles do not (hot-reloaded).
    let checksum = |sets: &[&str]| {
        let docs = documents(&render(CHART, "fs-home", &with_kubeconfig(sets)));
        the(&docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/settings"].clone()
    };
    let base = checksum(&[]);
    assert_eq!(checksum(&["profiles=# edited"]), base, "a profiles edit must not restart the daemon");
    assert_ne!(checksum(&["settings.maxServersPerUser=5"]), base, "a settings change must roll the Pods");

    // Everything optional, switched on.
    let sets = with_kubeconfig(&[
        "replicas=2",
        "ingress.enabled=true",
        "serviceMonitor.enabled=true",
        "installCRD=true",
        "settings.homeContext=home",
        "existingProfilesConfigMap=my-profiles",
        "auth.existingSecret=fleetspawn-auth",
    ]);
    let docs = documents(&render(CHART, "fs-home", &sets));
    assert_eq!(
        kinds(&docs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "Ingress",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ServiceMonitor"
        ]
    );
    let deployment = the(&docs, "Deployment");
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pdb = the(&docs, "PodDisruptionBudget");
    assert_eq!((&pdb["spec"]["minAvailable"], &pdb["spec"]["selector"]["matchLabels"]), (&Value::from(1), selector));
    let service = the(&docs, "Service");
    let ingress = the(&docs, "Ingress");
    assert_eq!(
        ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"],
        serde_json::json!({"name": service["metadata"]["name"], "port": {"name": "http"}})
    );
    let monitor = the(&docs, "ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let service_labels = service["metadata"]["labels"].as_object().expect("labels");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"].as_object().expect("matchLabels") {
        assert_eq!(service_labels.get(k), Some(v), "the ServiceMonitor does not select the Service");
    }
    let crd_rule = the(&docs, "ClusterRole")["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["resources"] == serde_json::json!(["customresourcedefinitions"]))
        .cloned()
        .expect("installCRD adds a CRD rule");
    assert_eq!(crd_rule["resourceNames"], serde_json::json!(["userservers.fleetspawn.io"]));
    // Profiles from the existing ConfigMap, tokens and cookie secret from the existing Secret.
    let config = the(&docs, "ConfigMap");
    let settings = config["data"]["fleetspawn.toml"].as_str().expect("fleetspawn.toml");
    assert!(config["data"].get("profiles.toml").is_none(), "{config}");
    assert!(settings.contains("profiles = \"/etc/fleetspawn/profiles/profiles.toml\"") && settings.contains("install_crd = true"), "{settings}");
    assert!(settings.contains("home_context = \"home\"") && settings.contains("cookie_secret_file = \"/etc/fleetspawn/auth/cookie-secret\""), "{settings}");
    let pod = &deployment["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_array().expect("volumes");
    assert!(volumes.iter().any(|v| v["configMap"]["name"] == "my-profiles"), "{volumes:?}");
    assert!(volumes.iter().any(|v| v["secret"]["secretName"] == "fleetspawn-auth"), "{volumes:?}");
    let env = pod["containers"][0]["env"].as_array().expect("env");
    let tokens = env.iter().find(|e| e["name"] == "FLEETSPAWN_AUTH__TOKENS").expect("FLEETSPAWN_AUTH__TOKENS");
    assert_eq!(tokens["valueFrom"]["secretKeyRef"], serde_json::json!({"name": "fleetspawn-auth", "key": "tokens"}));
    let profiles_env = env.iter().find(|e| e["name"] == "FLEETSPAWN_PROFILES").expect("FLEETSPAWN_PROFILES");
    assert_eq!(profiles_env["value"], "/etc/fleetspawn/profiles/profiles.toml");
}

#[test]
fn wrong_values_fail_with_the_schema_error_or_a_clear_message() {
    // The same command passes with a right value: the failures below are the values'.
    let ok = helm(&["template", "t", CHART, "--set", KUBECONFIG_SECRET, "--set", "replicas=2"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    for (set, expected) in [
        ("replicas=two", "/replicas': got string, want integer"),
        ("replicas=0", "/replicas': minimum"),
        ("installCRD=yes", "/installCRD': got string, want boolean"),
        ("service.port=http", "/service/port': got string, want integer"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy'"),
        ("auth.trustedProxies=10.0.0.0/8", "/auth/trustedProxies': got string, want array"),
        ("kubeconfig.content=apiVersion", "additional properties 'content' not allowed"),
    ] {
        for command in ["template", "lint"] {
            let out = helm(&[command, CHART, "--set", KUBECONFIG_SECRET, "--set", set]);
            let output = text(&out.stderr) + &text(&out.stdout);
            assert!(!out.status.success(), "helm {command} accepted {set}");
            assert!(output.contains("values don't meet the specifications of the schema"), "not a schema error for {set}: {output}");
            assert!(output.contains(expected), "{expected:?} not named for {set}: {output}");
        }
    }
    // Without the kubeconfig Secret: the required message says what to do.
    let out = helm(&["template", "t", CHART]);
    assert!(!out.status.success(), "rendered without a kubeconfig Secret");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("kubeconfig.existingSecret is required") && stderr.contains("kubectl create secret generic"), "{stderr}");
    // The target RBAC: a namespace list of the wrong type, a bad name, or none at all.
    for (set, expected) in [("namespaces=jupyter", "/namespaces': got string, want array"), ("namespaces={Jupyter_Lab}", "/namespaces/0'")] {
        let out = helm(&["template", "t", TARGET_CHART, "--set", set]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success() && stderr.contains(expected), "{set}: {stderr}");
    }
    let out = helm(&["template", "t", TARGET_CHART]);
    assert!(!out.status.success() && text(&out.stderr).contains("namespaces is empty"), "{}", text(&out.stderr));
}

#[test]
fn the_charts_crd_is_what_fleetspawn_crd_prints() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetspawn")).arg("crd").env_remove("FLEETSPAWN_LOG").output().expect("run fleetspawn crd");
    assert!(out.status.success(), "fleetspawn crd failed: {}", text(&out.stderr));
    let printed = text(&out.stdout);
    let chart = std::fs::read_to_string(common::repo().join(CRD_FILE)).expect("the chart's CRD");
    if chart != printed {
        let line = chart.lines().zip(printed.lines()).position(|(a, b)| a != b).unwrap_or_else(|| chart.lines().count().min(printed.lines().count()));
        panic!(
            "{CRD_FILE} differs from `fleetspawn crd` at line {}: {:?} vs {:?}; regenerate it: cargo run -q -- crd > {CRD_FILE}",
            line + 1,
            chart.lines().nth(line),
            printed.lines().nth(line)
        );
    }
    // And it is what Helm installs: the crds/ directory, with --include-crds.
    let rendered = render(CHART, "fs-home", &with_kubeconfig(&[]));
    assert!(!rendered.contains("kind: CustomResourceDefinition"), "CRDs belong in crds/, not templates/");
    let out = helm(&["template", "t", CHART, "--include-crds", "--set", KUBECONFIG_SECRET]);
    let docs = documents(&text(&out.stdout));
    assert_eq!(the(&docs, "CustomResourceDefinition")["metadata"]["name"], "userservers.fleetspawn.io");
}

/// Namespaces on one cluster, deleted when the test ends (even when it fails).
struct Namespaces {
    context: &'static str,
    names: Vec<String>,
}

impl Namespaces {
    fn create(context: &'static str, prefixes: &[&str]) -> Namespaces {
        let names: Vec<String> = prefixes.iter().map(|p| common::unique(p)).collect();
        let ns = Namespaces { context, names };
        for name in &ns.names {
            kubectl(context, &["create", "namespace", name]);
        }
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = kubectl_with(self.context, &["delete", "namespace", name, "--wait=false", "--ignore-not-found"], "");
        }
    }
}

/// Cluster-scoped objects applied by a test, deleted when it ends.
struct Applied {
    context: &'static str,
    manifest: String,
}

impl Drop for Applied {
    fn drop(&mut self) {
        let _ = kubectl_with(self.context, &["delete", "--ignore-not-found", "--wait=false", "-f", "-"], &self.manifest);
    }
}

/// A release of the target RBAC chart in a namespace of its own: uninstalled (its
/// cluster-scoped objects with it), then its namespace deleted, when the test ends.
struct Release {
    context: &'static str,
    name: String,
    namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm_on(self.context, &["uninstall", &self.name, "-n", &self.namespace]);
        let _ = kubectl_with(self.context, &["delete", "namespace", &self.namespace, "--wait=false", "--ignore-not-found"], "");
    }
}

/// `kubectl auth can-i` as `subject`: whether it may (`args`: verb, resource, flags).
fn can(context: &str, subject: &str, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let impersonate = format!("--as={subject}");
    all.push(&impersonate);
    let out = kubectl_with(context, &all, "");
    match text(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl auth can-i {args:?}: {other} {}", text(&out.stderr)),
    }
}

/// Waits (RBAC reaches the authorizer's cache a moment after it is written) until `subject` may
/// do `args`.
fn wait_until_can(context: &str, subject: &str, args: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !can(context, subject, args) {
        assert!(Instant::now() < deadline, "{subject} still may not {args:?} after 20 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_rendered_chart_is_accepted_by_the_api_server_and_its_home_role_grants_the_records() {
    const CONTEXT: &str = "cluster-a";
    let ns = Namespaces::create(CONTEXT, &["helm-home"]);
    let home = ns.names[0].as_str();
    // Pods there must meet the restricted Pod Security Standard; the API server warns (and
    // would refuse the Pods) otherwise.
    kubectl(CONTEXT, &["label", "namespace", home, "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/warn=restricted"]);
    let sets = ["replicas=2", "ingress.enabled=true", "installCRD=true", "auth.existingSecret=fleetspawn-auth"];
    let mut args = vec!["template", "t", CHART, "-n", home, "--include-crds", "--set", KUBECONFIG_SECRET];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let out = helm(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let manifest = text(&out.stdout);
    let applied = kubectl_with(CONTEXT, &["apply", "--dry-run=server", "-f", "-"], &manifest);
    let (stdout, stderr) = (text(&applied.stdout), text(&applied.stderr));
    assert!(applied.status.success(), "the API server refused the chart: {stderr}");
    assert!(!stderr.contains("PodSecurity"), "not restricted: {stderr}");
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/userservers.fleetspawn.io",
        "deployment.apps/t-fleetspawn",
        "poddisruptionbudget.policy/t-fleetspawn",
        "role.rbac.authorization.k8s.io/t-fleetspawn",
        "ingress.networking.k8s.io/t-fleetspawn",
    ] {
        assert!(stdout.lines().any(|l| l.starts_with(object) && l.ends_with("(server dry run)")), "{object} not applied: {stdout}");
    }

    // The ServiceAccount and its RBAC for real: the home rights, and nothing more.
    let crd = Command::new(env!("CARGO_BIN_EXE_fleetspawn")).arg("crd").env_remove("FLEETSPAWN_LOG").output().expect("fleetspawn crd");
    let out = kubectl_with(CONTEXT, &["apply", "-f", "-"], &text(&crd.stdout));
    assert!(out.status.success(), "installing the CRD: {}", text(&out.stderr));
    let mut args = vec!["template", "t", CHART, "-n", home, "--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml"];
    args.extend(["--set", KUBECONFIG_SECRET, "--set", "installCRD=true"]);
    let out = helm(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rbac = Applied { context: CONTEXT, manifest: text(&out.stdout) };
    let out = kubectl_with(CONTEXT, &["apply", "-f", "-"], &rbac.manifest);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sa = format!("system:serviceaccount:{home}:t-fleetspawn");
    let own_namespace = format!("namespaces/{home}");
    // The Role and the ClusterRole reach the authorizer each in its own time.
    wait_until_can(CONTEXT, &sa, &["create", "userservers.fleetspawn.io", "-n", home]);
    wait_until_can(CONTEXT, &sa, &["get", own_namespace.as_str()]);
    for (args, expected) in [
        (vec!["watch", "userservers.fleetspawn.io", "-n", home], true),
        (vec!["delete", "userservers.fleetspawn.io", "-n", home], true),
        (vec!["patch", "userservers.fleetspawn.io", "--subresource=status", "-n", home], true),
        (vec!["update", "leases.coordination.k8s.io", "-n", home], true),
        (vec!["create", "events", "-n", home], true),
        (vec!["create", "events.events.k8s.io", "-n", home], true),
        (vec!["get", "secrets", "-n", home], true),
        (vec!["delete", "secrets", "-n", home], true),
        (vec!["get", own_namespace.as_str()], true),
        (vec!["patch", "customresourcedefinitions.apiextensions.k8s.io/userservers.fleetspawn.io"], true),
        // Not: other namespaces, listing Secrets, other CRDs, other namespaces' objects, Pods.
        (vec!["list", "secrets", "-n", home], false),
        (vec!["create", "userservers.fleetspawn.io", "-n", "default"], false),
        (vec!["get", "namespaces/default"], false),
        (vec!["patch", "customresourcedefinitions.apiextensions.k8s.io/ingressroutes.traefik.io"], false),
        (vec!["create", "pods", "-n", home], false),
        (vec!["delete", "leases.coordination.k8s.io", "-n", home], false),
        (vec!["create", "clusterroles"], false),
    ] {
        assert_eq!(can(CONTEXT, &sa, &args), expected, "{sa} may {args:?}: expected {expected}");
    }
    drop(rbac);
}

/// Installs the target RBAC for `namespaces` on cluster-b, the ServiceAccount in the release's
/// own new namespace, with more `--set` values.
fn install_target_rbac(namespaces: &[String], sets: &[&str]) -> Release {
    let release = Release { context: "cluster-b", name: common::unique("target"), namespace: common::unique("helm-fs") };
    let list = format!("namespaces={{{}}}", namespaces.join(","));
    let mut args = vec!["install", &release.name, TARGET_CHART, "-n", &release.namespace, "--create-namespace", "--set", &list];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = helm_on("cluster-b", &args);
    assert!(out.status.success(), "helm install of the target RBAC failed: {}", text(&out.stderr));
    release
}

/// `deploy/target-rbac/kubeconfig-for-target` on cluster-b with `args`.
fn mint(args: &[&str]) -> Output {
    let path = format!("{}:{}", bin_dir().display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new(common::repo().join("deploy/target-rbac/kubeconfig-for-target"));
    cmd.arg("--kubeconfig").arg(common::kubeconfig()).args(["--context", "cluster-b"]).args(args).env("PATH", &path);
    run(cmd, "")
}

#[test]
fn target_rbac_grants_exactly_fleetspawns_rights_in_the_listed_namespaces() {
    const CONTEXT: &str = "cluster-b";
    let ns = Namespaces::create(CONTEXT, &["helm-users", "helm-other"]);
    let (users, other) = (ns.names[0].as_str(), ns.names[1].as_str());
    let release = install_target_rbac(&ns.names[..1], &[]);
    let sa = format!("system:serviceaccount:{}:fleetspawn", release.namespace);
    wait_until_can(CONTEXT, &sa, &["create", "pods", "-n", users]);
    for (args, expected) in [
        // What a spawn, a stop and garbage collection do in the listed namespace.
        (vec!["patch", "pods", "-n", users], true),
        (vec!["watch", "pods", "-n", users], true),
        (vec!["delete", "pods", "-n", users], true),
        (vec!["patch", "ingresses.networking.k8s.io", "-n", users], true),
        (vec!["list", "ingresses.networking.k8s.io", "-n", users], true),
        (vec!["create", "services", "-n", users], true),
        (vec!["patch", "secrets", "-n", users], true),
        (vec!["create", "serviceaccounts", "-n", users], true),
        (vec!["patch", "configmaps", "-n", users], true),
        (vec!["delete", "persistentvolumeclaims", "-n", users], true),
        (vec!["watch", "events", "-n", users], true),
        (vec!["create", "events", "-n", users], true),
        (vec!["create", "events.events.k8s.io", "-n", users], true),
        // Nothing elsewhere, nothing it does not do.
        (vec!["get", "secrets", "-n", other], false),
        (vec!["create", "pods", "-n", other], false),
        (vec!["list", "pods", "-n", "kube-system"], false),
        (vec!["get", "secrets", "-n", "kube-system"], false),
        (vec!["create", "pods", "--subresource=exec", "-n", users], false),
        (vec!["update", "pods", "-n", users], false),
        (vec!["create", "roles.rbac.authorization.k8s.io", "-n", users], false),
        (vec!["create", "clusterroles"], false),
        (vec!["list", "nodes"], false),
        (vec!["create", "namespaces"], false),
        (vec!["list", "pods", "--all-namespaces"], false),
    ] {
        assert_eq!(can(CONTEXT, &sa, &args), expected, "{sa} may {args:?}: expected {expected}");
    }

    // Profiles that create namespaces, and reads across namespaces: only what those values add.
    let out = helm_on(
        CONTEXT,
        &[
            "upgrade",
            &release.name,
            TARGET_CHART,
            "-n",
            &release.namespace,
            "--reuse-values",
            "--set",
            "createNamespaces=true",
            "--set",
            "listAllNamespaces=true",
        ],
    );
    assert!(out.status.success(), "helm upgrade: {}", text(&out.stderr));
    wait_until_can(CONTEXT, &sa, &["create", "namespaces"]);
    for (args, expected) in [
        (vec!["patch", "namespaces"], true),
        (vec!["list", "pods", "--all-namespaces"], true),
        (vec!["watch", "pods", "--all-namespaces"], true),
        (vec!["delete", "namespaces"], false),
        (vec!["get", "secrets", "-n", other], false),
        (vec!["create", "pods", "-n", other], false),
        (vec!["delete", "services", "-n", other], false),
    ] {
        assert_eq!(can(CONTEXT, &sa, &args), expected, "{sa} may {args:?}: expected {expected}");
    }
    drop(release);
}

#[test]
fn kubeconfig_for_target_mints_a_token_context_that_reaches_only_those_namespaces() {
    const CONTEXT: &str = "cluster-b";
    let ns = Namespaces::create(CONTEXT, &["helm-kc"]);
    let users = ns.names[0].as_str();
    let release = install_target_rbac(&ns.names, &[]);
    let sa_namespace = release.namespace.as_str();
    let out = mint(&["--name", "b-as-fleetspawn", "--namespace", sa_namespace]);
    assert!(out.status.success(), "kubeconfig-for-target failed: {}", text(&out.stderr));
    let minted = text(&out.stdout);
    let config: Value = serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(&minted).expect("a YAML kubeconfig")).expect("JSON");
    assert_eq!(config["current-context"], "b-as-fleetspawn");
    assert_eq!(config["contexts"].as_array().map(Vec::len), Some(1), "{config}");
    assert_eq!(config["contexts"][0]["name"], "b-as-fleetspawn");
    assert!(config["users"][0]["user"]["token"].as_str().is_some_and(|t| !t.is_empty()), "no token");
    assert!(!minted.contains("client-key-data") && !minted.contains("client-certificate-data"), "the admin credentials leaked");
    let admin: Value = serde_json::from_str(&kubectl(CONTEXT, &["config", "view", "--raw", "--minify", "-o", "json"])).expect("JSON");
    assert_eq!(config["clusters"][0]["cluster"]["server"], admin["clusters"][0]["cluster"]["server"]);
    // A second run reuses the Secret: the same token.
    let again = mint(&["--name", "b-as-fleetspawn", "--namespace", sa_namespace]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout), minted, "a second run minted another token");

    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), &minted).expect("write kubeconfig");
    let with_minted = |args: &[&str]| {
        Command::new(bin_dir().join("kubectl")).arg("--kubeconfig").arg(file.path()).args(args).env_remove("KUBECONFIG").output().expect("kubectl")
    };
    let whoami = with_minted(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]);
    assert_eq!(text(&whoami.stdout), format!("system:serviceaccount:{sa_namespace}:fleetspawn"), "{}", text(&whoami.stderr));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = with_minted(&["get", "pods", "-n", users]);
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "the minted kubeconfig cannot list pods in {users}: {}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = with_minted(&["get", "pods", "-n", "kube-system"]);
    assert!(!out.status.success(), "the minted kubeconfig lists pods in kube-system");
    assert!(text(&out.stderr).contains("Forbidden"), "not a 403: {}", text(&out.stderr));

    // A ServiceAccount that is not there: a clear error, no kubeconfig.
    let out = mint(&["--name", "x", "--namespace", sa_namespace, "--service-account", "nobody"]);
    assert!(!out.status.success() && out.stdout.is_empty(), "minted for a missing ServiceAccount");
    assert!(text(&out.stderr).contains("install deploy/target-rbac"), "{}", text(&out.stderr));
    drop(release);
}

/// `fleetspawn check --rbac` with the target identity on cluster-b (and cluster-a, the admin, as
/// the home): every right first; then, with a right taken from the Role, that right by name,
/// in its namespace, and a failing exit.
#[test]
fn check_rbac_names_each_missing_right_per_context_and_namespace() {
    const CONTEXT: &str = "cluster-b";
    let ns = Namespaces::create(CONTEXT, &["helm-rbac"]);
    let users = ns.names[0].as_str();
    let release = install_target_rbac(&ns.names, &["listAllNamespaces=true"]);
    let sa = format!("system:serviceaccount:{}:fleetspawn", release.namespace);
    wait_until_can(CONTEXT, &sa, &["list", "pods", "--all-namespaces"]);
    let out = mint(&["--name", "b-checked", "--namespace", &release.namespace]);
    assert!(out.status.success(), "kubeconfig-for-target failed: {}", text(&out.stderr));
    let work = tempfile::tempdir().expect("tempdir");
    let minted = work.path().join("b-checked.kubeconfig");
    std::fs::write(&minted, &out.stdout).expect("write kubeconfig");
    let profiles = work.path().join("profiles.toml");
    std::fs::write(
        &profiles,
        format!(
            "[[profiles]]\nimage = \"quay.io/jupyter/base-notebook:latest\"\nslug = \"checked\"\ndisplay_name = \"Checked\"\ncontext = \"b-checked\"\nnamespace = \"{users}\"\n\
             ingress_public_url = \"http://127.0.0.1:18082\"\n"
        ),
    )
    .expect("write profiles");
    let config = work.path().join("fleetspawn.toml");
    std::fs::write(&config, "home_context = \"cluster-a\"\n").expect("write config");
    let kubeconfig = format!("{}:{}", common::kubeconfig().display(), minted.display());
    let check = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleetspawn"));
        cmd.arg("--config").arg(&config).arg("--profiles").arg(&profiles).args(["check", "--rbac"]);
        cmd.env("KUBECONFIG", &kubeconfig).env_remove("FLEETSPAWN_KUBECONFIG");
        run(cmd, "")
    };

    let out = check();
    let report = text(&out.stdout);
    assert!(out.status.success(), "check --rbac failed with every right granted:\n{report}{}", text(&out.stderr));
    assert!(report.contains("b-checked: every right"), "{report}");
    assert!(report.contains("cluster-a: every right"), "the home context: {report}");

    // Take Services from the Role: a spawn could no longer create the user's Service.
    let role = format!("role/{}", release.name);
    let rules: Value = serde_json::from_str(&kubectl(CONTEXT, &["get", &role, "-n", users, "-o", "jsonpath={.rules}"])).expect("the Role's rules");
    let index = rules
        .as_array()
        .expect("rules")
        .iter()
        .position(|r| r["resources"].as_array().is_some_and(|l| l.iter().any(|x| x == "services")))
        .expect("a rule for services");
    let kept: Vec<&Value> = rules[index]["resources"].as_array().expect("resources").iter().filter(|r| *r != "services").collect();
    let patch = serde_json::json!([{ "op": "replace", "path": format!("/rules/{index}/resources"), "value": kept }]).to_string();
    kubectl(CONTEXT, &["patch", &role, "-n", users, "--type=json", "-p", &patch]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while can(CONTEXT, &sa, &["create", "services", "-n", users]) {
        assert!(Instant::now() < deadline, "{sa} still may create services after 20 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = check();
    let report = text(&out.stdout);
    assert!(!out.status.success(), "check --rbac passed with a right missing:\n{report}");
    let line =
        report.lines().find(|l| l.trim_start().starts_with(&format!("in namespace {users}:"))).unwrap_or_else(|| panic!("no line for {users}:\n{report}"));
    for verb in ["create", "patch", "get", "delete"] {
        assert!(line.contains(&format!("{verb} services")), "{verb} services not named: {line}");
    }
    assert!(!line.contains("pods"), "a right it has is reported missing: {line}");
    assert!(report.contains("b-checked: 4 of "), "{report}");
    assert!(report.contains("cluster-a: every right"), "{report}");
    drop(release);
}
