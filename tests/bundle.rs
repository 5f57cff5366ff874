//! Rendering bundles: what a spawn would apply, computed without I/O.

use std::collections::BTreeMap;
use std::path::Path;

use fleetspawn_core::bundle::{to_yaml, Bundle, BundleError, Renderer, SpawnInput, Tier};
use fleetspawn_core::profiles::{Profile, ProfileSet};
use serde_json::{json, Value};

const TOKEN: &str = "s3cr3t-hub-token";

/// A profile exercising templates with user values everywhere.
const PROFILES: &str = r#"
[[profiles]]
slug = "full"
context = ["cluster-a", "cluster-b"]
ingress_public_url = { cluster-a = "http://a.example:8080/", cluster-b = "https://b.example" }
image = "img:1"
environment = { OWNER = "{{ username }}", SERVER = "{{ servername }}" }
storage = { capacity = "1Gi" }
create_namespace = true
namespace = "ns-{{ profile_slug }}"
ingress = { class_name = "nginx", host = "a.example", tls_secret = "tls", annotations = { "x/y" = "z" } }

[profiles.options.size]
default = "s"
[profiles.options.size.choices.s]
[profiles.options.size.choices.l]
override = { cpu_limit = 2 }

[profiles.objects]
cm = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ name ~ "-cm" }}
data:
  owner: {{ username }}
  server: {{ servername }}
  size: {{ options.size }}
"""

[profiles.patches.labels]
target = { kind = "Service" }
patch = """
metadata:
  labels:
    fleetspawn.io/instance: hijacked
    extra: "yes"
  annotations:
    note: {{ "for " ~ username }}
"""

[[profiles]]
slug = "plain"
context = "cluster-a"
ingress_public_url = "http://a.example"
image = "img:1"

[[profiles]]
slug = "free"
context = "cluster-a"
ingress_public_url = "http://a.example"
image = "img:1"
[profiles.options.tag.free_text]
regex = "(?s).*"
override = { node_selector = { tag = "{value}" } }
[profiles.objects]
cm = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ name }}
data:
  tag: {{ options.tag | default("none") }}
"""
"#;

fn set() -> ProfileSet {
    Renderer::builtin().expect("templates").parse_profiles("p.toml", PROFILES).unwrap_or_else(|e| panic!("{e}"))
}

fn render_with(profile: &Profile, user: &str, server: &str, options: &BTreeMap<String, String>) -> Result<Bundle, BundleError> {
    let secrets = BTreeMap::from([("JUPYTERHUB_API_TOKEN".to_owned(), TOKEN.to_owned())]);
    let renderer = Renderer::builtin().unwrap_or_else(|e| panic!("{e}"));
    renderer.render(&SpawnInput {
        user,
        server,
        profile,
        options,
        context: &profile.contexts[0],
        secret_env: &secrets,
        url_prefix: None,
        hub_parameters: &Default::default(),
        owner: None,
    })
}

fn render(slug: &str, user: &str, server: &str) -> Bundle {
    let set = set();
    let profile = set.get(slug).unwrap_or_else(|| panic!("no profile {slug}"));
    render_with(profile, user, server, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"))
}

fn find<'a>(bundle: &'a Bundle, kind: &str) -> &'a Value {
    &bundle.objects.iter().find(|o| o.kind() == kind).unwrap_or_else(|| panic!("no {kind} in {:?}", bundle.objects)).object
}

fn kinds(bundle: &Bundle) -> Vec<&str> {
    bundle.objects.iter().map(|o| o.kind()).collect()
}

#[test]
fn the_bundle_has_every_object_in_apply_order() {
    let bundle = render("full", "alice", "");
    assert_eq!(kinds(&bundle), ["Namespace", "ConfigMap", "NetworkPolicy", "PersistentVolumeClaim", "Secret", "ServiceAccount", "Pod", "Ingress", "Service"]);
    let tiers: Vec<Tier> = bundle.objects.iter().map(|o| o.tier).collect();
    assert!(tiers.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(bundle.namespace, "ns-full");
    assert_eq!(bundle.url, "http://a.example:8080/user/alice/");
    assert_eq!(bundle.key.key(), "alice");

    let plain = render("plain", "alice", "");
    assert_eq!(kinds(&plain), ["NetworkPolicy", "Secret", "ServiceAccount", "Pod", "Ingress", "Service"], "no PVC, no Namespace");
    assert_eq!(plain.namespace, "default");
}

#[test]
fn rendering_is_stable() {
    let a = render("full", "alice", "gpu");
    let b = render("full", "alice", "gpu");
    assert_eq!(to_yaml(&a), to_yaml(&b));
}

#[test]
fn objects_have_the_expected_shape() {
    let bundle = render("full", "alice", "gpu");
    let name = "fs-alice--gpu";
    for o in &bundle.objects {
        if o.kind() != "Namespace" && o.kind() != "ConfigMap" {
            assert_eq!(o.name(), name, "{}", o.kind());
        }
        if o.kind() != "Namespace" {
            assert_eq!(o.object["metadata"]["namespace"], "ns-full", "{}", o.kind());
        }
    }
    assert_eq!(find(&bundle, "ServiceAccount")["automountServiceAccountToken"], false);

    let pod = find(&bundle, "Pod");
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["name"], "notebook");
    assert_eq!(container["image"], "img:1");
    assert_eq!(container["ports"][0]["containerPort"], 8888);
    assert_eq!(container["envFrom"][0]["secretRef"]["name"], name);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/user/alice/gpu/api");
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["spec"]["serviceAccountName"], name);
    assert_eq!(pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], name);
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/home/jovyan");
    let env: BTreeMap<&str, &str> =
        container["env"].as_array().into_iter().flatten().filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?))).collect();
    assert_eq!(env["JUPYTERHUB_SERVICE_PREFIX"], "/user/alice/gpu/");
    assert_eq!(env["OWNER"], "alice");
    assert_eq!(env["SERVER"], "gpu");

    let service = find(&bundle, "Service");
    assert_eq!(service["spec"]["selector"], json!({"fleetspawn.io/instance": "alice--gpu"}));
    let ingress = find(&bundle, "Ingress");
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    assert_eq!(ingress["spec"]["rules"][0]["host"], "a.example");
    assert_eq!(ingress["spec"]["tls"][0], json!({"secretName": "tls", "hosts": ["a.example"]}));
    let path = &ingress["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!(path["path"], "/user/alice/gpu/");
    assert_eq!(path["pathType"], "ImplementationSpecific", "passes ingress-nginx's strict validation for every username");
    assert_eq!(path["backend"]["service"]["name"], name);
    assert_eq!(ingress["metadata"]["annotations"]["x/y"], "z");
    assert_eq!(find(&bundle, "PersistentVolumeClaim")["spec"]["resources"]["requests"]["storage"], "1Gi");
}

#[test]
fn every_object_carries_the_fleetspawn_labels_even_against_patches() {
    let bundle = render("full", "Alice@Example.org", "my server");
    let key = bundle.key.clone();
    for o in bundle.objects.iter().filter(|o| o.kind() != "Namespace") {
        let meta = &o.object["metadata"];
        assert_eq!(meta["labels"]["app.kubernetes.io/managed-by"], "fleetspawn", "{}", o.kind());
        assert_eq!(meta["labels"]["fleetspawn.io/instance"], key.key(), "{}", o.kind());
        assert_eq!(meta["labels"]["fleetspawn.io/user"], key.safe_user());
        assert_eq!(meta["labels"]["fleetspawn.io/server"], key.safe_server());
        assert_eq!(meta["labels"]["fleetspawn.io/profile"], "full");
        assert_eq!(meta["annotations"]["fleetspawn.io/username"], "Alice@Example.org");
        assert_eq!(meta["annotations"]["fleetspawn.io/servername"], "my server");
        assert_eq!(meta["annotations"]["fleetspawn.io/context"], "cluster-a");
        assert_eq!(meta["annotations"]["fleetspawn.io/url"], bundle.url.as_str());
    }
    // The namespace is shared: it is only marked as managed.
    assert_eq!(find(&bundle, "Namespace")["metadata"]["labels"], json!({"app.kubernetes.io/managed-by": "fleetspawn"}));
    let service = find(&bundle, "Service");
    assert_eq!(service["metadata"]["labels"]["extra"], "yes", "the patch applied");
    assert_eq!(service["metadata"]["annotations"]["note"], "for Alice@Example.org");
    assert_eq!(bundle.url, "http://a.example:8080/user/Alice@Example.org/my%20server/");
}

/// Every server's NetworkPolicy: in only from the ingress controller's namespaces and the
/// configured ranges, to the server's port; out anywhere but the cloud metadata address. No
/// ServiceAccount token unless the profile asks.
#[test]
fn a_server_is_reachable_only_from_the_ingress_and_cannot_reach_the_metadata_service() {
    let bundle = render("full", "alice", "");
    let policy = find(&bundle, "NetworkPolicy");
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"], find(&bundle, "Service")["spec"]["selector"], "{policy}");
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    let ingress = &policy["spec"]["ingress"];
    assert_eq!(ingress.as_array().map(Vec::len), Some(1), "{policy}");
    assert_eq!(ingress[0]["ports"], json!([{ "port": 8888 }]));
    let from = &ingress[0]["from"];
    assert_eq!(from[0]["namespaceSelector"]["matchExpressions"][0]["values"], json!(["ingress-nginx"]), "{policy}");
    assert_eq!(from.as_array().map(Vec::len), Some(1), "nothing else may come in: {policy}");
    let to = &policy["spec"]["egress"][0]["to"];
    assert_eq!(to[1], json!({ "ipBlock": { "cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"] } }), "{policy}");
    assert_eq!(to[2], json!({ "ipBlock": { "cidr": "::/0" } }), "{policy}");
    assert_eq!(find(&bundle, "Pod")["spec"]["automountServiceAccountToken"], json!(false));
}

#[test]
fn network_policy_settings_are_checked_and_can_open_ranges_or_turn_it_off() {
    let renderer = Renderer::builtin().expect("templates");
    let base = "[defaults]\nimage = \"i\"\ningress_public_url = \"http://x\"\ncontext = \"c\"\n";
    let with = |extra: &str| renderer.parse_profiles("profiles.toml", &format!("{base}[[profiles]]\nslug = \"p\"\n{extra}"));
    let closed = with("[profiles.network_policy]\ningress_from_namespaces = []\n").expect_err("nobody could reach it");
    assert!(closed.to_string().contains("network_policy") && closed.to_string().contains("nobody could reach"), "{closed}");
    let bad = with("[profiles.network_policy]\ningress_from_cidrs = [\"10.0.0.0/33\"]\ningress_from_namespaces = [\"Not A Namespace\"]\n").expect_err("bad");
    assert!(bad.to_string().contains("10.0.0.0/33") && bad.to_string().contains("Not A Namespace"), "{bad}");
    let set = with("mount_service_account_token = true\n[profiles.network_policy]\ningress_from_cidrs = [\"10.1.0.0/16\"]\negress_deny_cidrs = [\"169.254.169.254/32\", \"fd00:ec2::254/128\"]\n").expect("valid");
    let bundle = render_with(set.get("p").expect("p"), "alice", "", &BTreeMap::new()).expect("renders");
    let policy = find(&bundle, "NetworkPolicy");
    assert_eq!(policy["spec"]["ingress"][0]["from"][1], json!({ "ipBlock": { "cidr": "10.1.0.0/16" } }), "{policy}");
    assert_eq!(policy["spec"]["egress"][0]["to"][2], json!({ "ipBlock": { "cidr": "::/0", "except": ["fd00:ec2::254/128"] } }), "{policy}");
    assert_eq!(find(&bundle, "Pod")["spec"]["automountServiceAccountToken"], json!(true));
    let off = with("[profiles.network_policy]\nenabled = false\ningress_from_namespaces = []\n").expect("off needs no sources");
    let bundle = render_with(off.get("p").expect("p"), "alice", "", &BTreeMap::new()).expect("renders");
    assert!(!kinds(&bundle).contains(&"NetworkPolicy"));
}

#[test]
fn user_values_are_data_not_template_code_or_yaml() {
    let attempts =
        [("{{ 7*7 }}", "{% raw %}x"), ("a\nkind: ClusterRole", "b\n---\nkind: ClusterRoleBinding"), ("\"quoted\": {x: 1}", "' ]} #"), ("}}{{", "{#")];
    for (user, server) in attempts {
        let bundle = render("full", user, server);
        assert_eq!(bundle.objects.len(), 9, "{user:?}");
        assert!(!kinds(&bundle).iter().any(|k| k.starts_with("Cluster")), "{user:?}");
        for o in bundle.objects.iter().filter(|o| o.kind() != "Namespace") {
            assert_eq!(o.object["metadata"]["annotations"]["fleetspawn.io/username"], user);
            assert_eq!(o.object["metadata"]["annotations"]["fleetspawn.io/servername"], server);
        }
        let cm = find(&bundle, "ConfigMap");
        assert_eq!(cm["data"], json!({"owner": user, "server": server, "size": "s"}));
        let env = &find(&bundle, "Pod")["spec"]["containers"][0]["env"];
        assert!(env.as_array().into_iter().flatten().any(|e| e["name"] == "OWNER" && e["value"] == user));
        assert!(!to_yaml(&bundle).contains("49"), "{user:?} was evaluated");
    }
}

#[test]
fn free_text_options_are_data_too() {
    let set = set();
    let profile = set.get("free").expect("free");
    for text in ["{{ 7*7 }}", "a\nkind: ClusterRole", "{value}"] {
        let options = BTreeMap::from([("tag".to_owned(), text.to_owned())]);
        let bundle = render_with(profile, "alice", "", &options).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(find(&bundle, "ConfigMap")["data"]["tag"], text);
        assert_eq!(find(&bundle, "Pod")["spec"]["nodeSelector"]["tag"], text);
        assert_eq!(bundle.objects.len(), 7);
    }
    let bundle = render_with(profile, "alice", "", &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(find(&bundle, "ConfigMap")["data"]["tag"], "none");
}

#[test]
fn secrets_only_go_into_the_secret_and_are_never_debug_printed() {
    let bundle = render("full", "alice", "");
    let secret = find(&bundle, "Secret");
    assert_eq!(secret["stringData"]["JUPYTERHUB_API_TOKEN"], TOKEN);
    assert_eq!(secret["type"], "Opaque");
    for o in bundle.objects.iter().filter(|o| o.kind() != "Secret") {
        assert!(!o.object.to_string().contains(TOKEN), "{} holds the token", o.kind());
    }
    assert!(!format!("{bundle:?}").contains(TOKEN));
}

#[test]
fn options_reach_the_bundle() {
    let set = set();
    let profile = set.get("full").expect("full");
    let options = BTreeMap::from([("size".to_owned(), "l".to_owned())]);
    let bundle = render_with(profile, "alice", "", &options).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(find(&bundle, "Pod")["spec"]["containers"][0]["resources"]["limits"]["cpu"], "2");
    assert_eq!(find(&bundle, "ConfigMap")["data"]["size"], "l");
    let options = BTreeMap::from([("size".to_owned(), "xl".to_owned())]);
    let err = render_with(profile, "alice", "", &options).unwrap_err();
    assert_eq!(err.to_string(), "options.size: \"xl\" is not one of l, s");
}

/// Per context, a server is routed by an Ingress or by an HTTPRoute attached to that
/// context's Gateway, matching the same path prefix and host.
#[test]
fn a_context_routes_by_ingress_or_by_an_httproute_on_its_gateway() {
    let text = r#"
[[profiles]]
slug = "mixed"
context = ["cluster-a", "cluster-b", "cluster-c"]
ingress_public_url = "http://gw.example"
image = "img:1"
routing = { cluster-b = "httproute", cluster-c = "httproute" }
gateway = { cluster-b = "gateways/shared", cluster-c = "infra/edge.v2" }
ingress = { host = "hub.example", path_type = "Prefix" }
"#;
    let set = Renderer::builtin().expect("templates").parse_profiles("p.toml", text).unwrap_or_else(|e| panic!("{e}"));
    let profile = set.get("mixed").expect("mixed");
    let renderer = Renderer::builtin().unwrap_or_else(|e| panic!("{e}"));
    let empty = BTreeMap::new();
    let on = |context| {
        let input = SpawnInput {
            user: "jürgen",
            server: "lab",
            profile,
            options: &empty,
            context,
            secret_env: &empty,
            url_prefix: None,
            hub_parameters: &Default::default(),
            owner: None,
        };
        renderer.render(&input).unwrap_or_else(|e| panic!("{e}"))
    };
    let a = on("cluster-a");
    assert!(!kinds(&a).contains(&"HTTPRoute"), "{:?}", kinds(&a));
    let path = &find(&a, "Ingress")["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!(path["pathType"], "Prefix");
    assert_eq!(path["path"], "/user/jürgen/lab/", "controllers match the decoded path");
    for (context, namespace, gateway) in [("cluster-b", "gateways", "shared"), ("cluster-c", "infra", "edge.v2")] {
        let b = on(context);
        assert_eq!(kinds(&b), ["NetworkPolicy", "Secret", "ServiceAccount", "Pod", "HTTPRoute", "Service"], "no Ingress on {context}");
        let route = find(&b, "HTTPRoute");
        assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(route["spec"]["parentRefs"], json!([{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": namespace, "name": gateway}]));
        assert_eq!(route["spec"]["hostnames"], json!(["hub.example"]));
        assert_eq!(route["spec"]["rules"][0]["matches"], json!([{"path": {"type": "PathPrefix", "value": "/user/j%C3%BCrgen/lab/"}}]));
        assert_eq!(route["spec"]["rules"][0]["backendRefs"], json!([{"name": find(&b, "Service")["metadata"]["name"], "port": 8888}]));
        assert_eq!(b.objects.iter().find(|o| o.kind() == "HTTPRoute").map(|o| o.tier), Some(Tier::Exposure));
        assert_eq!(route["metadata"]["labels"]["app.kubernetes.io/managed-by"], "fleetspawn");
    }
}

/// Routing settings are checked at load, each problem at its key.
#[test]
fn routing_settings_are_checked_at_their_keys() {
    let profile = |extra: &str| {
        format!("[[profiles]]\nslug = \"r\"\ncontext = [\"cluster-a\", \"cluster-b\"]\ningress_public_url = \"http://x\"\nimage = \"i\"\n{extra}\n")
    };
    for (extra, expected) in [
        ("routing = \"httproute\"", "gateway: required: the Gateway (namespace/name) HTTPRoutes attach to on context \"cluster-a\""),
        ("routing = \"httproute\"\ngateway = \"shared\"", "gateway: \"shared\" is not a Gateway as namespace/name"),
        ("routing = \"httproute\"\ngateway = { cluster-a = \"a/gw\", cluster-b = \"B/gw\" }", "gateway.cluster-b: \"B/gw\" is not a Gateway as namespace/name"),
        ("routing = { cluster-z = \"httproute\" }", "routing.cluster-z: \"cluster-z\" is not one of the profile's contexts"),
        ("routing = \"gateway\"", "routing"),
        ("ingress = { path_type = \"Exact\" }", "ingress.path_type"),
    ] {
        let err = Renderer::builtin().expect("templates").parse_profiles("p.toml", &profile(extra)).map(drop).unwrap_err().to_string();
        assert!(err.contains(expected), "{extra}: {err}");
        assert!(err.contains("p.toml:"), "{extra}: a line: {err}");
    }
}

#[test]
fn contexts_and_url_prefixes() {
    let set = set();
    let profile = set.get("full").expect("full");
    let renderer = Renderer::builtin().unwrap_or_else(|e| panic!("{e}"));
    let empty = BTreeMap::new();
    let no_parameters = serde_json::Map::new();
    let input = |context, url_prefix| SpawnInput {
        user: "alice",
        server: "",
        profile,
        options: &empty,
        context,
        secret_env: &empty,
        url_prefix,
        hub_parameters: &no_parameters,
        owner: None,
    };
    let b = renderer.render(&input("cluster-b", Some("/hub/user/alice"))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.url, "https://b.example/hub/user/alice/");
    assert_eq!(find(&b, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["path"], "/hub/user/alice/");
    assert_eq!(find(&b, "Pod")["metadata"]["annotations"]["fleetspawn.io/context"], "cluster-b");
    let err = renderer.render(&input("cluster-z", None)).unwrap_err();
    assert!(err.to_string().starts_with("context \"cluster-z\" is not one of profile \"full\"'s contexts"), "{err}");
    assert!(renderer.render(&input("cluster-a", Some("relative/"))).is_err());
}

#[test]
fn long_names_fit_kubernetes_limits() {
    let user = "é".repeat(100) + &"x".repeat(100);
    let bundle = render("plain", &user, &"s".repeat(200));
    for o in &bundle.objects {
        assert!(o.name().len() <= 63, "{}", o.name());
        for value in o.object["metadata"]["labels"].as_object().into_iter().flat_map(|m| m.values()) {
            assert!(value.as_str().is_some_and(|v| v.len() <= 63), "{value}");
        }
    }
}

#[test]
fn operators_can_override_templates() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.path().join("service.yaml.j2"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ name }}\nspec:\n  type: NodePort\n  selector: {{ selector }}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("ingress.yaml.j2"), "{# no ingress on this cluster #}\n").unwrap_or_else(|e| panic!("{e}"));
    let renderer = fleetspawn::sources::renderer(Some(dir.path())).unwrap_or_else(|e| panic!("{e}"));
    let set = set();
    let profile = set.get("plain").expect("plain");
    let empty = BTreeMap::new();
    let bundle = renderer
        .render(&SpawnInput {
            user: "bob",
            server: "",
            profile,
            options: &empty,
            context: "cluster-a",
            secret_env: &empty,
            url_prefix: None,
            hub_parameters: &Default::default(),
            owner: None,
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(find(&bundle, "Service")["spec"]["type"], "NodePort");
    assert_eq!(find(&bundle, "Service")["metadata"]["namespace"], "default", "namespace added");
    assert!(!kinds(&bundle).contains(&"Ingress"), "an empty template drops its object");

    std::fs::write(dir.path().join("servise.yaml.j2"), "x").unwrap_or_else(|e| panic!("{e}"));
    let err = fleetspawn::sources::renderer(Some(dir.path())).unwrap_err();
    assert!(err.to_string().contains("servise.yaml.j2: not a template fleetspawn knows"), "{err}");
    std::fs::remove_file(dir.path().join("servise.yaml.j2")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("pod.yaml.j2"), "kind: {{ no_such_variable }}").unwrap_or_else(|e| panic!("{e}"));
    let renderer = fleetspawn::sources::renderer(Some(dir.path())).unwrap_or_else(|e| panic!("{e}"));
    // Profiles are checked against the operator's templates, as `fleetspawn check` and a
    // hot reload load them.
    let problems: Vec<String> =
        renderer.parse_profiles("p.toml", PROFILES).expect_err("the profiles do not render with these templates").0.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[1].starts_with("p.toml:42: profiles[plain]: template pod.yaml.j2: undefined value"), "{problems:?}");
    std::fs::write(dir.path().join("pod.yaml.j2"), "{% if %}").unwrap_or_else(|e| panic!("{e}"));
    let err = fleetspawn::sources::renderer(Some(dir.path())).unwrap_err();
    assert!(err.to_string().starts_with("template pod.yaml.j2: syntax error"), "{err}");
}

#[test]
fn patches_cannot_rename_objects_and_objects_cannot_clash() {
    let rename = r#"
[[profiles]]
slug = "r"
context = "a"
ingress_public_url = "http://a"
image = "i"
[profiles.patches.rename]
target = { kind = "Service" }
patch = "metadata: {name: other}"
"#;
    let err = Renderer::builtin().expect("templates").parse_profiles("p.toml", rename).unwrap_err().to_string();
    assert!(err.starts_with("p.toml:7: profiles[r].patches.rename: cannot patch Service/fs-jovyan"), "{err}");
    let clash = r#"
[[profiles]]
slug = "c"
context = "a"
ingress_public_url = "http://a"
image = "i"
[profiles.objects]
sa = "{apiVersion: v1, kind: ServiceAccount, metadata: {name: {{ name }}}}"
"#;
    let err = Renderer::builtin().expect("templates").parse_profiles("p.toml", clash).unwrap_err().to_string();
    assert!(err.starts_with("p.toml:8: profiles[c].objects.sa: object ServiceAccount/fs-jovyan: "), "{err}");
}

#[test]
fn every_example_profile_renders_for_every_context_and_choice() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/example.toml");
    let set = fleetspawn::sources::profiles_builtin(&path).unwrap_or_else(|e| panic!("{e}"));
    let renderer = Renderer::builtin().unwrap_or_else(|e| panic!("{e}"));
    let secrets = BTreeMap::new();
    for profile in set.iter() {
        let mut option_sets = vec![BTreeMap::new()];
        for (name, option) in &profile.options {
            option_sets.extend(option.choices.keys().map(|c| BTreeMap::from([(name.clone(), c.clone())])));
        }
        for options in &option_sets {
            // A choice may move the profile to other contexts.
            let contexts = profile.resolve_options(options).unwrap_or_else(|e| panic!("{}: {e}", profile.slug)).profile.contexts;
            for context in &contexts {
                let bundle = renderer
                    .render(&SpawnInput {
                        user: "alice@example.com",
                        server: "",
                        profile,
                        options,
                        context,
                        secret_env: &secrets,
                        url_prefix: None,
                        hub_parameters: &fleetspawn_core::profiles::hub_parameters::samples(&profile.hub_parameters),
                        owner: None,
                    })
                    .unwrap_or_else(|e| panic!("{}: {e}", profile.slug));
                let yaml = to_yaml(&bundle);
                assert_eq!(yaml.matches("\n---\n").count() + 1, bundle.objects.len());
                assert!(kinds(&bundle).contains(&"Pod"));
            }
        }
    }
    let data = set.get("data").expect("data");
    let bundle = render_with(data, "alice", "", &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(kinds(&bundle), ["Namespace", "ConfigMap", "NetworkPolicy", "PersistentVolumeClaim", "Secret", "ServiceAccount", "Pod", "Ingress", "Service"]);
}

/// A web app (`kind = "web"`): its own port everywhere (container, probe, Service,
/// NetworkPolicy, route), no JupyterHub variables, its readiness as the profile says; with
/// `strip_prefix` the HTTPRoute rewrites the prefix away, and an Ingress route refuses it.
#[test]
fn web_apps_choose_their_port_readiness_and_prefix_handling() {
    let text = r#"
[defaults]
image = "img:1"
kind = "web"
port = 3838

[[profiles]]
slug = "under-prefix"
context = "cluster-a"
ingress_public_url = "http://a.example"

[[profiles]]
slug = "stripped"
context = "cluster-c"
ingress_public_url = "http://c.example"
routing = "httproute"
gateway = "gw/web"
strip_prefix = true
readiness = { type = "tcp" }

[[profiles]]
slug = "probed"
context = "cluster-a"
ingress_public_url = "http://a.example"
readiness = { path = "{{ url_prefix ~ 'healthz' }}", port = 9000 }
"#;
    let set = Renderer::builtin().expect("templates").parse_profiles("p.toml", text).unwrap_or_else(|e| panic!("{e}"));
    let empty = BTreeMap::new();
    let bundle_of = |slug: &str| render_with(set.get(slug).expect("profile"), "alice", "", &empty).expect("renders");

    let b = bundle_of("under-prefix");
    let pod = find(&b, "Pod");
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["ports"][0]["containerPort"], 3838);
    assert_eq!(container["readinessProbe"]["httpGet"], serde_json::json!({ "path": "/user/alice/", "port": 3838 }));
    let env: Vec<&str> = container["env"].as_array().expect("env").iter().filter_map(|e| e["name"].as_str()).collect();
    assert!(!env.iter().any(|n| n.starts_with("JUPYTERHUB_")), "{env:?}");
    assert_eq!(find(&b, "Service")["spec"]["ports"][0]["targetPort"], 3838);
    assert_eq!(find(&b, "NetworkPolicy")["spec"]["ingress"][0]["ports"][0]["port"], 3838);
    assert_eq!(find(&b, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"], 3838);

    let b = bundle_of("stripped");
    let route = find(&b, "HTTPRoute");
    assert_eq!(route["spec"]["rules"][0]["filters"][0]["urlRewrite"]["path"], serde_json::json!({ "type": "ReplacePrefixMatch", "replacePrefixMatch": "/" }));
    assert_eq!(route["spec"]["rules"][0]["backendRefs"][0]["port"], 3838);
    assert_eq!(find(&b, "Pod")["spec"]["containers"][0]["readinessProbe"]["tcpSocket"], serde_json::json!({ "port": 3838 }));

    let probed = bundle_of("probed");
    let probe = &find(&probed, "Pod")["spec"]["containers"][0]["readinessProbe"];
    assert_eq!(probe["httpGet"], serde_json::json!({ "path": "/user/alice/healthz", "port": 9000 }));

    // A Jupyter profile keeps JupyterHub's variables and its probe on <prefix>api.
    let jupyter = render("plain", "alice", "");
    let container = &find(&jupyter, "Pod")["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/user/alice/api");
    assert!(container["env"].as_array().expect("env").iter().any(|e| e["name"] == "JUPYTERHUB_SERVICE_PREFIX"));

    // Stripping needs an HTTPRoute; no probe at all is allowed.
    let refused = Renderer::builtin()
        .expect("templates")
        .parse_profiles("p.toml", &text.replace("routing = \"httproute\"\ngateway = \"gw/web\"\n", ""))
        .expect_err("strip_prefix on an Ingress");
    assert!(refused.to_string().contains("strip_prefix") && refused.to_string().contains("httproute"), "{refused}");
    let none = text.replace("readiness = { type = \"tcp\" }", "readiness = { type = \"none\" }");
    let set = Renderer::builtin().expect("templates").parse_profiles("p.toml", &none).unwrap_or_else(|e| panic!("{e}"));
    let b = render_with(set.get("stripped").expect("profile"), "alice", "", &empty).expect("renders");
    assert!(find(&b, "Pod")["spec"]["containers"][0].get("readinessProbe").is_none());
}
