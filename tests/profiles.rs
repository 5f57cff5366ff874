//! Loading and checking profiles files: every validation error names the
//! file, line and key path; options and merging behave as documented.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use fleetspawn_core::bundle::Renderer;
use fleetspawn_core::placement::Placement;
use fleetspawn_core::profiles::{OptionError, ProfileSet};

/// A valid profile, to which tests append keys.
const BASIC: &str = r#"
[[profiles]]
display_name = "Basic"
context = "cluster-a"
ingress_public_url = "http://a.example"
image = "img:1"
"#;

fn ok(text: &str) -> ProfileSet {
    Renderer::builtin().expect("templates").parse_profiles("p.toml", text).unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
}

/// Every error line for `text`.
fn errors(text: &str) -> Vec<String> {
    match Renderer::builtin().expect("templates").parse_profiles("p.toml", text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.to_string().lines().map(str::to_owned).collect(),
    }
}

/// Asserts one error line starts with `prefix` and contains `fragment`.
fn assert_error(text: &str, prefix: &str, fragment: &str) {
    let errors = errors(text);
    assert!(
        errors.iter().any(|e| e.starts_with(prefix) && e.contains(fragment)),
        "no error starting with {prefix:?} containing {fragment:?} in:\n{}",
        errors.join("\n")
    );
}

fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn a_minimal_profile_gets_documented_defaults() {
    let set = ok(BASIC);
    let p = set.get("basic").expect("slug derived from display_name");
    assert_eq!(p.display_name, "Basic");
    assert_eq!(p.contexts, ["cluster-a"]);
    assert_eq!(p.placement, Placement::FirstHealthy);
    assert_eq!(p.ingress_public_url("cluster-a"), Some("http://a.example"));
    assert_eq!(p.ingress_public_url("cluster-b"), None);
    assert_eq!(p.start_timeout, Duration::from_secs(300));
    assert_eq!(p.scheduling_grace, Duration::from_secs(60));
    assert_eq!(p.stop_timeout, Duration::from_secs(30));
    assert!(!p.keep_on_failure && !p.ready_check_url);
    assert!(p.allowed_groups.is_empty());
    assert_eq!(p.namespace, "default");
    assert!(p.spec.security_context.run_as_non_root);
    assert!(!p.spec.security_context.allow_privilege_escalation);
    assert!(p.spec.storage.is_none());
    assert_eq!(set.default_profile().map(|p| p.slug.as_str()), Some("basic"));
}

#[test]
fn syntax_errors_name_the_line() {
    assert_error("[[profiles]]\nslug = \"a\"\nimage = \n", "p.toml:3: ", "");
}

#[test]
fn unknown_keys_are_errors() {
    let text = format!("{BASIC}imagee = \"x\"\n");
    assert_error(&text, "p.toml:7: profiles[basic].imagee: ", "unknown key");
    assert_error("bogus = 1\n", "p.toml:1: bogus: ", "unknown key");
    let text = format!("{BASIC}[profiles.storage]\ncapcity = \"1Gi\"\n");
    assert_error(&text, "p.toml:8: profiles[basic].storage.capcity: ", "unknown key");
    let text = format!("{BASIC}[profiles.options.size]\ndefault = \"s\"\n[profiles.options.size.choices.s]\nlabel = \"x\"\n");
    assert_error(&text, "p.toml:10: profiles[basic].options.size.choices.s.label: ", "unknown key");
}

#[test]
fn wrong_types_are_errors() {
    assert_error(&format!("{BASIC}cpu_limit = \"lots\"\n"), "p.toml:7: profiles[basic].cpu_limit: ", "invalid quantity");
    assert_error(&format!("{BASIC}start_timeout = true\n"), "p.toml:7: profiles[basic].start_timeout: ", "");
    assert_error(&format!("{BASIC}start_timeout = \"5 parsecs\"\n"), "p.toml:7: profiles[basic].start_timeout: ", "invalid duration");
    assert_error(&format!("{BASIC}keep_on_failure = \"yes\"\n"), "p.toml:7: profiles[basic].keep_on_failure: ", "invalid type");
    assert_error(
        &format!("{BASIC}tolerations = [{{ key = \"k\", effect = \"Sometimes\" }}]\n"),
        "p.toml:7: profiles[basic].tolerations[0].effect: ",
        "unknown variant",
    );
    assert_error(&format!("{BASIC}placement = \"random\"\n"), "p.toml:7: profiles[basic].placement: ", "unknown variant");
}

#[test]
fn required_keys() {
    assert_error("[[profiles]]\ndisplay_name = \"X\"\ningress_public_url = \"http://a\"\nimage = \"i\"\n", "p.toml:1: profiles[x].context: ", "required");
    assert_error("[[profiles]]\ndisplay_name = \"X\"\ncontext = \"a\"\nimage = \"i\"\n", "p.toml:1: profiles[x].ingress_public_url: ", "required");
    assert_error("[[profiles]]\ndisplay_name = \"X\"\ncontext = \"a\"\ningress_public_url = \"http://a\"\n", "p.toml:1: profiles[x].image: ", "required");
    assert_error("[defaults]\nimage = \"i\"\n", "p.toml: profiles: ", "no profiles");
}

#[test]
fn duplicate_slugs_and_two_defaults() {
    let text = format!("{BASIC}default = true\n{BASIC}default = true\n");
    let errs = errors(&text);
    assert!(errs.iter().any(|e| e.starts_with("p.toml:9: profiles[basic].slug: ") && e.contains("duplicate slug \"basic\"")), "{errs:?}");
    assert!(errs.iter().any(|e| e.starts_with("p.toml:14: profiles[basic].default: ") && e.contains("second default")), "{errs:?}");
}

#[test]
fn slugs_must_be_labels() {
    assert_error(&BASIC.replace("display_name = \"Basic\"", "slug = \"Not_A_Label\""), "p.toml:3: profiles[Not_A_Label].slug: ", "DNS-1123");
    assert_error(&BASIC.replace("\"Basic\"", "\"!!!\""), "p.toml:3: profiles[0].display_name: ", "slug");
}

#[test]
fn placement_and_ingress_urls() {
    let multi = r#"
[[profiles]]
slug = "m"
context = ["a", "b"]
placement = "weighted"
weights = { a = 1, c = 2 }
ingress_public_url = { a = "http://a", c = "ftp://c" }
image = "i"
"#;
    let errs = errors(multi);
    let has = |prefix: &str, frag: &str| errs.iter().any(|e| e.starts_with(prefix) && e.contains(frag));
    assert!(has("p.toml:6: profiles[m].weights.c: ", "not one of the profile's contexts"), "{errs:?}");
    assert!(has("p.toml:6: profiles[m].weights: ", "needs a weight for context \"b\""), "{errs:?}");
    assert!(has("p.toml:7: profiles[m].ingress_public_url: ", "no URL for context \"b\""), "{errs:?}");
    assert!(has("p.toml:7: profiles[m].ingress_public_url.c: ", "not one of the profile's contexts"), "{errs:?}");

    let good = multi.replace("c = 2", "b = 2").replace("c = \"ftp://c\"", "b = \"http://b/\"");
    let set = ok(&good);
    let p = set.get("m").expect("profile m");
    assert_eq!(p.placement, Placement::Weighted(BTreeMap::from([("a".into(), 1), ("b".into(), 2)])));
    assert_eq!(p.ingress_public_url("b"), Some("http://b/"));
    assert_error(&BASIC.replace("http://a.example", "a.example"), "p.toml:5: profiles[basic].ingress_public_url: ", "not an http");
}

#[test]
fn defaults_errors_point_into_defaults() {
    let text = format!("[defaults]\nslug = \"x\"\nmem_limit = \"1 GB\"\n{BASIC}");
    let errs = errors(&text);
    assert!(errs.iter().any(|e| e.starts_with("p.toml:2: defaults.slug: ")), "{errs:?}");
    assert!(errs.iter().any(|e| e.starts_with("p.toml:3: defaults.mem_limit: ") && e.contains("invalid quantity")), "{errs:?}");
}

#[test]
fn option_rules_are_checked_at_load() {
    let bad_regex = format!("{BASIC}[profiles.options.image.free_text]\nregex = \"quay.io/(\"\noverride = {{ image = \"{{value}}\" }}\n");
    assert_error(&bad_regex, "p.toml:8: profiles[basic].options.image.free_text.regex: ", "invalid regex");

    let bad_default = format!("{BASIC}[profiles.options.size]\ndefault = \"huge\"\n[profiles.options.size.choices.s]\n[profiles.options.size.choices.l]\n");
    assert_error(&bad_default, "p.toml:8: profiles[basic].options.size.default: ", "\"huge\" is not one of the choices (l, s)");

    let no_default = format!("{BASIC}[profiles.options.size.choices.s]\n[profiles.options.size.choices.l]\n");
    assert_error(&no_default, "p.toml:7: profiles[basic].options.size.default: ", "required");

    let bad_override = format!("{BASIC}[profiles.options.size]\ndefault = \"s\"\n[profiles.options.size.choices.s]\noverride = {{ cpu_limit = \"many\" }}\n");
    assert_error(&bad_override, "p.toml:10: profiles[basic].options.size.choices.s.override: ", "cpu_limit: invalid quantity");

    let widening = format!("{BASIC}[profiles.options.x.choices.s]\noverride = {{ allowed_images = [] }}\n");
    assert_error(&widening, "p.toml:8: profiles[basic].options.x.choices.s.override.allowed_images: ", "cannot override");

    let injection = format!("{BASIC}[profiles.options.x.free_text]\nregex = \".*\"\noverride = {{ environment = {{ X = \"{{value}}\" }} }}\n");
    assert_error(&injection, "p.toml:9: profiles[basic].options.x.free_text.override.environment: ", "use {{ options.x }} in the template instead");

    let empty = format!("{BASIC}[profiles.options.x]\ndisplay_name = \"X\"\n");
    assert_error(&empty, "p.toml:7: profiles[basic].options.x: ", "needs choices");
}

#[test]
fn templates_and_patches_are_checked_at_load() {
    let bad_template = format!("{BASIC}[profiles.objects]\nrole = \"\"\"\nkind: Role\nmetadata:\n  name: {{{{ name \n\"\"\"\n");
    assert_error(&bad_template, "p.toml:8: profiles[basic].objects.role: ", "syntax error");

    let bad_env = format!("{BASIC}environment = {{ A = \"{{% if %}}\" }}\n");
    assert_error(&bad_env, "p.toml:7: profiles[basic].environment.A: ", "syntax error");

    let bad_patch = format!("{BASIC}[profiles.patches.p]\ntarget = {{ kind = \"Pod\" }}\npatch = \"\"\"\nmetadata: [unclosed\n\"\"\"\n");
    assert_error(&bad_patch, "p.toml:9: profiles[basic].patches.p.patch: ", "not a YAML object");

    let list_patch = format!("{BASIC}[profiles.patches.p]\ntarget = {{ kind = \"Pod\" }}\npatch = \"- a\\n- b\"\n");
    assert_error(&list_patch, "p.toml:9: profiles[basic].patches.p.patch: ", "expected a mapping, got a list");

    let no_kind = format!("{BASIC}[profiles.objects]\ncm = \"metadata: {{name: x}}\"\n");
    assert_error(&no_kind, "p.toml:8: profiles[basic].objects.cm: ", "apiVersion and kind");

    let bad_namespace = format!("{BASIC}namespace = \"Jupyter {{{{ username }}}}\"\n");
    assert_error(&bad_namespace, "p.toml:7: profiles[basic].namespace: ", "DNS-1123");

    let undefined = format!("{BASIC}environment = {{ A = \"{{{{ no_such_variable.x }}}}\" }}\n");
    assert_error(&undefined, "p.toml:7: profiles[basic].environment.A: ", "undefined");
}

#[test]
fn one_bad_profile_fails_the_load_and_names_only_itself() {
    let text = format!("{BASIC}\n[[profiles]]\nslug = \"broken\"\ncontext = \"a\"\ningress_public_url = \"http://a\"\nimage = 5\n");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("p.toml:12: profiles[broken].image: "), "{errs:?}");
    // Loading has no side effects: a caller keeps its last good set.
    let good = ok(BASIC);
    assert!(Renderer::builtin().expect("templates").parse_profiles("p.toml", &text).is_err());
    assert!(good.get("basic").is_some());
}

#[test]
fn every_error_is_listed() {
    let text = "[[profiles]]\nslug = \"a\"\nimagee = 1\n[[profiles]]\nslug = \"b\"\ncpu_limit = \"x\"\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].starts_with("p.toml:3: profiles[a].imagee"));
    assert!(errs[1].starts_with("p.toml:6: profiles[b].cpu_limit"));
}

#[test]
fn missing_contexts_are_warnings() {
    let text = format!("{BASIC}[profiles.options.where]\ndefault = \"here\"\n[profiles.options.where.choices.here]\n[profiles.options.where.choices.there]\noverride = {{ context = \"cluster-z\", ingress_public_url = \"http://z\" }}\n");
    let set = ok(&text);
    assert!(set.check_contexts(&["cluster-a", "cluster-z"]).is_empty());
    let warnings: Vec<String> = set.check_contexts(&["cluster-z"]).iter().map(ToString::to_string).collect();
    assert_eq!(warnings, ["p.toml:4: profiles[basic].context: context \"cluster-a\" is not in the kubeconfig"]);
    let warnings: Vec<String> = set.check_contexts(&["cluster-a"]).iter().map(ToString::to_string).collect();
    assert_eq!(warnings, ["p.toml:11: profiles[basic].options.where.choices.there.override.context: context \"cluster-z\" is not in the kubeconfig"]);
}

#[test]
fn maps_merge_lists_replace_and_unset_removes() {
    let text = r#"
[defaults]
image = "img:1"
context = "cluster-a"
ingress_public_url = "http://a"
tolerations = [{ key = "a", operator = "Exists" }]
environment = { A = "1", B = "2" }
node_selector = { zone = "z1", disk = "ssd" }
storage = { capacity = "1Gi" }

[[profiles]]
slug = "inherit"

[[profiles]]
slug = "override"
tolerations = [{ key = "b", operator = "Exists" }]
environment = { B = "__null__", C = "3" }
node_selector = { zone = "z2" }
storage = "__null__"
"#;
    let set = ok(text);
    let inherit = set.get("inherit").expect("inherit");
    assert_eq!(inherit.spec.environment.len(), 2);
    assert_eq!(inherit.spec.storage.as_ref().map(|s| s.capacity.0.as_str()), Some("1Gi"));
    assert_eq!(inherit.spec.storage.as_ref().map(|s| s.mount_path.as_str()), Some("/home/jovyan"));

    let over = set.get("override").expect("override");
    let keys: Vec<&str> = over.spec.tolerations.iter().filter_map(|t| t.key.as_deref()).collect();
    assert_eq!(keys, ["b"], "lists replace");
    assert_eq!(over.spec.environment, BTreeMap::from([("A".to_owned(), "1".to_owned()), ("C".to_owned(), "3".to_owned())]), "maps merge, __null__ removes");
    assert_eq!(over.spec.node_selector.get("zone").map(String::as_str), Some("z2"));
    assert_eq!(over.spec.node_selector.get("disk").map(String::as_str), Some("ssd"));
    assert!(over.spec.storage.is_none());
}

const WITH_OPTIONS: &str = r#"
[[profiles]]
slug = "opt"
context = "cluster-a"
ingress_public_url = "http://a"
image = "quay.io/jupyter/base-notebook:latest"
node_selector = { zone = "z1" }
allowed_images = ["quay.io/jupyter/base-notebook:latest", "quay.io/jupyter/scipy-*"]

[profiles.options.size]
default = "small"
[profiles.options.size.choices.small]
[profiles.options.size.choices.large]
override = { cpu_limit = 4, node_selector = { pool = "big" }, storage = { capacity = "5Gi" } }

[profiles.options.image]
default = "base"
[profiles.options.image.choices.base]
override = { image = "quay.io/jupyter/base-notebook:latest" }
[profiles.options.image.free_text]
regex = 'quay\.io/jupyter/[a-z-]+:[a-z0-9.-]+'
override = { image = "{value}" }
"#;

#[test]
fn options_apply_choices_and_defaults() {
    let set = ok(WITH_OPTIONS);
    let p = set.get("opt").expect("opt");
    let r = p.resolve_options(&BTreeMap::new()).expect("defaults");
    assert_eq!(r.chosen, options(&[("image", "base"), ("size", "small")]));
    assert!(r.profile.spec.cpu_limit.is_none());

    let r = p.resolve_options(&options(&[("size", "large")])).expect("large");
    assert_eq!(r.profile.spec.cpu_limit.as_ref().map(|q| q.0.as_str()), Some("4"));
    assert_eq!(r.profile.spec.node_selector.get("zone").map(String::as_str), Some("z1"), "maps merge");
    assert_eq!(r.profile.spec.node_selector.get("pool").map(String::as_str), Some("big"));
    assert!(r.profile.spec.storage.is_some());
}

#[test]
fn option_errors_name_the_option() {
    let set = ok(WITH_OPTIONS);
    let p = set.get("opt").expect("opt");
    let err = p.resolve_options(&options(&[("colour", "red")])).unwrap_err();
    assert_eq!(err.to_string(), "options.colour: no such option (this profile has: image, size)");
    let err = p.resolve_options(&options(&[("size", "huge")])).unwrap_err();
    assert_eq!(err.to_string(), "options.size: \"huge\" is not one of large, small");
    let err = p.resolve_options(&options(&[("image", "foo")])).unwrap_err();
    assert_eq!(err.to_string(), r#"options.image: "foo" does not match ^quay\.io/jupyter/[a-z-]+:[a-z0-9.-]+$"#);
}

#[test]
fn free_text_must_match_the_whole_regex_and_the_allowlist() {
    let set = ok(WITH_OPTIONS);
    let p = set.get("opt").expect("opt");
    let r = p.resolve_options(&options(&[("image", "quay.io/jupyter/scipy-notebook:2024")])).expect("allowed by prefix");
    assert_eq!(r.profile.image, "quay.io/jupyter/scipy-notebook:2024");
    assert_eq!(r.chosen["image"], "quay.io/jupyter/scipy-notebook:2024");

    for partial in ["xquay.io/jupyter/a:b", "quay.io/jupyter/a:b extra", "quay.io/jupyter/a:b\nkind: x"] {
        let err = p.resolve_options(&options(&[("image", partial)])).unwrap_err();
        assert!(matches!(err, OptionError::NoMatch { .. }), "{partial:?}: {err}");
    }
    let err = p.resolve_options(&options(&[("image", "quay.io/jupyter/r-notebook:latest")])).unwrap_err();
    assert_eq!(err.to_string(), "options.image: image \"quay.io/jupyter/r-notebook:latest\" is not in allowed_images");
}

#[test]
fn the_example_file_loads_cleanly() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/example.toml");
    let set = fleetspawn::sources::profiles_builtin(&path).unwrap_or_else(|e| panic!("{e}"));
    let slugs: Vec<&str> = set.iter().map(|p| p.slug.as_str()).collect();
    assert_eq!(slugs, ["small-cluster-a", "anywhere", "weighted", "gpu", "data", "lab", "echo"]);
    assert_eq!(set.default_profile().map(|p| p.slug.as_str()), Some("small-cluster-a"));
    assert!(set.check_contexts(&["cluster-a", "cluster-b", "cluster-c"]).is_empty());
    assert_eq!(set.get("anywhere").map(|p| p.placement.clone()), Some(Placement::LeastLoaded));
    assert!(set.get("weighted").is_some_and(|p| p.spec.mem_limit.is_none()));
}

#[test]
fn unreadable_files_are_reported() {
    let err = fleetspawn::sources::profiles_builtin(Path::new("/nonexistent/profiles.toml")).unwrap_err();
    assert!(err.to_string().starts_with("/nonexistent/profiles.toml: cannot read"), "{err}");
}
