//! The Kubernetes rights fleetspawn's credentials need on each context: what
//! `fleetspawn check --rbac` asks every cluster about, one SelfSubjectAccessReview per right.
//!
//! A function of the profiles and the bundles they render (for two sample users, with the
//! default options and with each choice of each option), and of what the daemon does with
//! them: it server-side applies every object, reads it back, deletes it on stop; follows the
//! Pod and its Events while starting; records Events; and, across all namespaces, watches
//! its Pods and lists its objects by label (stop and garbage collection). The home context
//! needs the records, their Secrets and the Leases in the home namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::bundle::{Renderer, SpawnInput, BUILTIN_KINDS};
use crate::profiles::{Profile, ProfileSet};

/// Where a right applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// In one namespace.
    Namespace(String),
    /// In every namespace: reads across namespaces, or a namespace that is a per-user
    /// template (its names are not known ahead).
    AllNamespaces,
    /// A cluster-scoped kind.
    Cluster,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Namespace(ns) => write!(f, "namespace {ns}"),
            Scope::AllNamespaces => f.write_str("all namespaces"),
            Scope::Cluster => f.write_str("cluster scope"),
        }
    }
}

/// One verb on one kind, where it applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Right {
    pub scope: Scope,
    /// The kind's `apiVersion` (`v1`, `networking.k8s.io/v1`): its group names it in RBAC.
    pub api_version: String,
    pub kind: String,
    /// The resource's name in RBAC (`userservers`) when known without discovery: fleetspawn's
    /// own kind, whose CRD the daemon may not have installed yet.
    pub resource: Option<String>,
    /// A subresource (`status`), if the right is on one.
    pub subresource: Option<&'static str>,
    /// Only this object (a Namespace fleetspawn reads by name).
    pub name: Option<String>,
    pub verb: &'static str,
}

impl Right {
    fn new(scope: Scope, api_version: &str, kind: &str, verb: &'static str) -> Right {
        Right { scope, api_version: api_version.into(), kind: kind.into(), resource: None, subresource: None, name: None, verb }
    }

    /// The API group (`""` for the core group).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(group, _)| group)
    }
}

/// The objects fleetspawn creates for a profile: applied, read back and deleted.
const OBJECT_VERBS: &[&str] = &["get", "create", "patch", "delete"];
/// A Namespace a profile creates: applied, never deleted.
const NAMESPACE_VERBS: &[&str] = &["get", "create", "patch"];

/// The rights each context needs for the profiles placed there, by context. A profile that
/// cannot render for a sample user adds nothing (loading it fails first).
pub fn target_rights(renderer: &Renderer, set: &ProfileSet) -> BTreeMap<String, BTreeSet<Right>> {
    let mut by_context: BTreeMap<String, BTreeSet<Right>> = BTreeMap::new();
    for profile in set.iter() {
        let hub_parameters = crate::profiles::hub_parameters::samples(&profile.hub_parameters);
        for options in option_variants(profile) {
            // A choice may move the profile to other contexts.
            let Ok(resolved) = profile.resolve_options(&options) else { continue };
            for context in &resolved.profile.contexts {
                let render = |user: &str| {
                    let input = SpawnInput {
                        user,
                        server: "",
                        profile,
                        options: &options,
                        context,
                        secret_env: &BTreeMap::new(),
                        url_prefix: None,
                        hub_parameters: &hub_parameters,
                        owner: None,
                    };
                    renderer.render(&input).ok()
                };
                let (Some(one), Some(other)) = (render("rbac-check-a"), render("rbac-check-b")) else { continue };
                let rights = by_context.entry(context.clone()).or_default();
                // A namespace that differs between two users is a per-user template.
                let scope = if one.namespace == other.namespace { Scope::Namespace(one.namespace.clone()) } else { Scope::AllNamespaces };
                // Across namespaces: the registry watches the Pods, stop and garbage collection
                // list every kind they sweep by label.
                let mut swept: BTreeSet<(String, String)> = BUILTIN_KINDS.iter().map(|(v, k)| (v.to_string(), k.to_string())).collect();
                for object in &one.objects {
                    let (api_version, kind) = (object.object["apiVersion"].as_str().unwrap_or_default(), object.kind());
                    let cluster_scoped = object.object["metadata"].get("namespace").is_none();
                    let (at, verbs) = match (kind, cluster_scoped) {
                        ("Namespace", _) => (Scope::Cluster, NAMESPACE_VERBS),
                        (_, true) => (Scope::Cluster, OBJECT_VERBS),
                        (_, false) => (scope.clone(), OBJECT_VERBS),
                    };
                    rights.extend(verbs.iter().map(|verb| Right::new(at.clone(), api_version, kind, verb)));
                    if !cluster_scoped {
                        swept.insert((api_version.to_string(), kind.to_string()));
                    }
                }
                rights.insert(Right::new(Scope::AllNamespaces, "v1", "Pod", "watch"));
                rights.extend(swept.iter().map(|(api_version, kind)| Right::new(Scope::AllNamespaces, api_version, kind, "list")));
                // Following the start: the Pod and its Events; recording Events.
                for verb in ["list", "watch"] {
                    rights.insert(Right::new(scope.clone(), "v1", "Pod", verb));
                    rights.insert(Right::new(scope.clone(), "v1", "Event", verb));
                }
                for verb in ["create", "patch"] {
                    rights.insert(Right::new(scope.clone(), "events.k8s.io/v1", "Event", verb));
                }
            }
        }
    }
    by_context
}

/// The option values a profile's bundles are rendered with: the defaults, then each choice of
/// each option with the others at their defaults.
fn option_variants(profile: &Profile) -> Vec<BTreeMap<String, String>> {
    let mut variants = vec![BTreeMap::new()];
    for (name, option) in &profile.options {
        for choice in option.choices.keys() {
            if option.default.as_deref() != Some(choice.as_str()) {
                variants.push(BTreeMap::from([(name.clone(), choice.clone())]));
            }
        }
    }
    variants
}

/// fleetspawn's record kind, `UserServer`, as the daemon defines it.
#[derive(Debug, Clone, Copy)]
pub struct Records<'a> {
    pub api_version: &'a str,
    /// Its resource name (`userservers`).
    pub plural: &'a str,
    /// The CRD's name, when the daemon installs it (`install_crd`).
    pub crd: Option<&'a str>,
}

/// The rights in the home cluster: the `UserServer` records and their status, the env Secrets
/// of hub spawns, the Leases that shard the clusters, the Events on the records, reading
/// the home Namespace at start, and applying the records' CRD when the daemon installs it.
pub fn home_rights(namespace: &str, records: Records<'_>) -> BTreeSet<Right> {
    let here = || Scope::Namespace(namespace.to_string());
    let record =
        |verb, subresource| Right { resource: Some(records.plural.to_string()), subresource, ..Right::new(here(), records.api_version, "UserServer", verb) };
    let mut rights = BTreeSet::new();
    rights.extend(["get", "list", "watch", "create", "update", "patch", "delete"].into_iter().map(|verb| record(verb, None)));
    rights.extend(["get", "update", "patch"].into_iter().map(|verb| record(verb, Some("status"))));
    let mut add = |api_version: &str, kind: &str, verbs: &[&'static str]| {
        rights.extend(verbs.iter().map(|verb| Right::new(here(), api_version, kind, verb)));
    };
    add("v1", "Secret", &["get", "create", "update", "patch", "delete"]);
    add("coordination.k8s.io/v1", "Lease", &["get", "list", "watch", "create", "update", "patch"]);
    add("v1", "Event", &["create", "patch"]);
    add("events.k8s.io/v1", "Event", &["create", "patch"]);
    rights.insert(Right { name: Some(namespace.to_string()), ..Right::new(Scope::Cluster, "v1", "Namespace", "get") });
    if let Some(crd) = records.crd {
        for verb in ["get", "list", "watch", "create", "patch"] {
            let right = Right::new(Scope::Cluster, "apiextensions.k8s.io/v1", "CustomResourceDefinition", verb);
            rights.insert(Right { name: Some(crd.to_string()), ..right });
        }
    }
    rights
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> ProfileSet {
        Renderer::builtin().unwrap().parse_profiles("p.toml", text).unwrap()
    }

    fn has(rights: &BTreeSet<Right>, scope: Scope, kind: &str, verb: &str) -> bool {
        rights.iter().any(|r| r.scope == scope && r.kind == kind && r.verb == verb)
    }

    const PROFILES: &str = r#"
[defaults]
image = "quay.io/jupyter/base-notebook:latest"

[[profiles]]
slug = "fixed"
display_name = "F"
context = "a"
namespace = "jupyter"
ingress_public_url = "http://a.example"

[[profiles]]
slug = "per-user"
display_name = "P"
context = "b"
namespace = "u-{{ user_key }}"
create_namespace = true
ingress_public_url = "http://b.example"

[profiles.options.extra]
display_name = "Extra"
default = "none"
[profiles.options.extra.choices.none]
display_name = "None"
[profiles.options.extra.choices.role]
display_name = "A Role"
override = { objects = { role = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: r
rules: []
""" } }
"#;

    #[test]
    fn a_fixed_namespace_gets_its_objects_rights_there_and_reads_everywhere() {
        let rights = target_rights(&Renderer::builtin().unwrap(), &set(PROFILES));
        let a = &rights["a"];
        let jupyter = || Scope::Namespace("jupyter".into());
        for verb in ["get", "create", "patch", "delete", "list", "watch"] {
            assert!(has(a, jupyter(), "Pod", verb), "{verb} pods");
        }
        for kind in ["Service", "Secret", "Ingress", "NetworkPolicy"] {
            assert!(has(a, jupyter(), kind, "patch") && has(a, jupyter(), kind, "delete"), "{kind}");
            assert!(has(a, Scope::AllNamespaces, kind, "list"), "{kind} listed across namespaces");
        }
        assert!(has(a, Scope::AllNamespaces, "Pod", "watch"));
        assert!(has(a, jupyter(), "Event", "watch"));
        // Nothing it does not do.
        assert!(!a.iter().any(|r| r.verb == "update" || r.kind == "Namespace" || r.kind == "Role"), "{a:#?}");
        assert!(!a.iter().any(|r| matches!(&r.scope, Scope::Namespace(ns) if ns != "jupyter")));
    }

    #[test]
    fn per_user_namespaces_need_every_namespace_and_options_add_their_objects() {
        let rights = target_rights(&Renderer::builtin().unwrap(), &set(PROFILES));
        let b = &rights["b"];
        assert!(has(b, Scope::AllNamespaces, "Pod", "create"));
        assert!(has(b, Scope::Cluster, "Namespace", "create"));
        assert!(!has(b, Scope::Cluster, "Namespace", "delete"), "a Namespace is never deleted");
        let role = b.iter().find(|r| r.kind == "Role" && r.verb == "create").expect("the option's Role");
        assert_eq!((role.group(), &role.scope), ("rbac.authorization.k8s.io", &Scope::AllNamespaces));
        assert!(!b.iter().any(|r| matches!(r.scope, Scope::Namespace(_))), "{b:#?}");
    }

    #[test]
    fn a_choice_that_moves_the_profile_adds_its_rights_on_the_other_context() {
        let text = PROFILES.replace(
            "override = { objects = { role = \"\"\"",
            "override = { context = \"c\", ingress_public_url = \"http://c.example\", objects = { role = \"\"\"",
        );
        let rights = target_rights(&Renderer::builtin().unwrap(), &set(&text));
        assert!(rights["c"].iter().any(|r| r.kind == "Role" && r.verb == "create"), "{:#?}", rights.get("c"));
        assert!(!rights["b"].iter().any(|r| r.kind == "Role"), "the Role goes to c only");
    }

    #[test]
    fn the_home_needs_the_records_their_status_and_the_leases() {
        let records = Records { api_version: "fleetspawn.io/v1alpha1", plural: "userservers", crd: None };
        let home = home_rights("fs-home", records);
        let ns = || Scope::Namespace("fs-home".into());
        assert!(has(&home, ns(), "UserServer", "watch"));
        assert!(home.iter().any(|r| r.kind == "UserServer" && r.subresource == Some("status") && r.verb == "patch"));
        assert!(home.iter().filter(|r| r.kind == "UserServer").all(|r| r.resource.as_deref() == Some("userservers")), "known without discovery");
        assert!(has(&home, ns(), "Lease", "update"));
        assert!(!has(&home, ns(), "Secret", "list"), "the Secrets are read by name only");
        let namespace = home.iter().find(|r| r.kind == "Namespace").unwrap();
        assert_eq!((namespace.name.as_deref(), namespace.verb), (Some("fs-home"), "get"));
        assert!(!home.iter().any(|r| r.kind == "CustomResourceDefinition"));
        let installing = home_rights("fs-home", Records { crd: Some("userservers.fleetspawn.io"), ..records });
        let crd = installing.iter().find(|r| r.kind == "CustomResourceDefinition" && r.verb == "patch").expect("the CRD's apply");
        assert_eq!((crd.name.as_deref(), &crd.scope), (Some("userservers.fleetspawn.io"), &Scope::Cluster));
    }
}
