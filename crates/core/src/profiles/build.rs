//! Building a [`Profile`] from merged settings: each step checks its keys and
//! adds what is wrong to the issues, in the order of the profile's fields.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize as _;
use serde_json::Value;

use crate::naming::{self, is_dns1123_label};
use crate::placement::Placement;
use crate::profiles::options::{build_options, ProfileOption};
use crate::profiles::spec::{self, without_unset, PerContext, Routing};
use crate::profiles::{
    derive_slug, ContextSpec, Issue, PlacementKind, Profile, ProfileSpec, Route, DEFAULT_SCHEDULING_GRACE, DEFAULT_START_TIMEOUT, DEFAULT_STOP_TIMEOUT,
};
use crate::spans::{KeyPath, Seg};

/// Deserializes settings, reporting the key path of the first problem.
pub(super) fn deserialize_spec(settings: &Value) -> Result<ProfileSpec, Issue> {
    // Settings are mostly valid: the path is tracked only to report a problem.
    if let Ok(spec) = ProfileSpec::deserialize(settings) {
        return Ok(spec);
    }
    serde_path_to_error::deserialize(settings).map_err(|err| {
        let mut path = KeyPath::from_serde(err.path());
        let mut message = err.inner().to_string();
        // "unknown field `x`, expected one of ...": point at `x` and keep it short.
        if let Some(rest) = message.strip_prefix("unknown field `") {
            if let Some((field, _)) = rest.split_once('`') {
                if path.0.last() != Some(&Seg::Key(field.to_owned())) {
                    path = path.key(field);
                }
                message = "unknown key".to_owned();
            }
        }
        Issue { path, message }
    })
}

/// Checks each top-level key of a settings table on its own, so that every
/// wrongly typed or unknown key is reported, not just the first.
pub(super) fn check_keys(settings: &serde_json::Map<String, Value>) -> Vec<Issue> {
    let set: Vec<(&String, Value)> = settings.iter().filter(|(_, value)| !spec::is_unset(value)).map(|(key, value)| (key, without_unset(value))).collect();
    // Keys deserialize independently: when all of them do together, each does alone.
    let all = Value::Object(set.iter().map(|(key, value)| ((*key).clone(), value.clone())).collect());
    if deserialize_spec(&all).is_ok() {
        return Vec::new();
    }
    set.into_iter().filter_map(|(key, value)| deserialize_spec(&Value::Object(serde_json::Map::from_iter([(key.clone(), value)]))).err()).collect()
}

impl Profile {
    /// Checks merged settings and builds the profile.
    pub(super) fn build(settings: Value) -> Result<Self, Vec<Issue>> {
        Self::build_from(settings, None)
    }

    /// [`Profile::build`] with these options (already built from the same `options` settings).
    pub(super) fn build_with_options(settings: Value, options: BTreeMap<String, ProfileOption>) -> Result<Self, Vec<Issue>> {
        Self::build_from(settings, Some(options))
    }

    fn build_from(settings: Value, options: Option<BTreeMap<String, ProfileOption>>) -> Result<Self, Vec<Issue>> {
        let spec = deserialize_spec(&settings).map_err(|issue| vec![issue])?;
        let mut issues = Vec::new();
        let (slug, display_name) = identity(&spec, &mut issues);
        let contexts = contexts(&spec, &mut issues);
        let placement = placement(&spec, &contexts, &mut issues);
        let ingress_urls = ingress_urls(&spec, &contexts, &mut issues);
        let routes = routes(&spec, &contexts, &mut issues);
        let image = image(&spec, &mut issues);
        let start_timeout = positive("start_timeout", spec.start_timeout, DEFAULT_START_TIMEOUT, &mut issues);
        let scheduling_grace = positive("scheduling_grace", spec.scheduling_grace, DEFAULT_SCHEDULING_GRACE, &mut issues);
        let stop_timeout = positive("stop_timeout", spec.stop_timeout, DEFAULT_STOP_TIMEOUT, &mut issues);
        let max_age = spec.max_age.map(|d| positive("max_age", Some(d), d, &mut issues));
        let idle_timeout = spec.idle_timeout.map(|d| positive("idle_timeout", Some(d), d, &mut issues));
        check_volumes(&spec, &mut issues);
        check_naming(&spec, &mut issues);
        check_strip_prefix(&spec, &routes, &mut issues);
        check_network_policy(&spec.network_policy, &mut issues);
        let options = options.unwrap_or_else(|| build_options(&spec.options, &mut issues));
        let hub_parameters = super::hub_parameters::build(&spec.hub_parameters, &mut issues);

        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Self {
            description: spec.description.clone().unwrap_or_default(),
            default: spec.default.unwrap_or(false),
            namespace: spec.namespace.clone().unwrap_or_else(|| "default".to_owned()),
            keep_on_failure: spec.keep_on_failure,
            ready_check_url: spec.ready_check_url,
            allowed_groups: spec.allowed_groups.clone(),
            slug,
            display_name,
            contexts,
            placement,
            image,
            start_timeout,
            scheduling_grace,
            stop_timeout,
            max_age,
            idle_timeout,
            options,
            hub_parameters,
            ingress_urls,
            routes,
            spec,
            settings,
        })
    }
}

/// The slug and display name: a slug as written must be a DNS-1123 label; else
/// it is derived from the display name (itself defaulting to the slug).
fn identity(spec: &ProfileSpec, issues: &mut Vec<Issue>) -> (String, String) {
    let display_name = spec.display_name.clone().or_else(|| spec.slug.clone()).unwrap_or_default();
    let slug = match &spec.slug {
        Some(slug) if !is_dns1123_label(slug) => {
            issues.push(Issue::at(&["slug"], format!("{slug:?} is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)")));
            slug.clone()
        }
        Some(slug) => slug.clone(),
        None => {
            let slug = derive_slug(&display_name);
            if slug.is_empty() {
                issues.push(Issue::at(&["display_name"], "a profile needs a display_name (or a slug) with a letter or digit".to_owned()));
            }
            slug
        }
    };
    (slug, display_name)
}

/// The candidate contexts: at least one, none empty, none twice.
fn contexts(spec: &ProfileSpec, issues: &mut Vec<Issue>) -> Vec<String> {
    let contexts = match &spec.context {
        None => {
            issues.push(Issue::at(&["context"], "required: a kubeconfig context or a list of them".to_owned()));
            Vec::new()
        }
        Some(ContextSpec::One(c)) => vec![c.clone()],
        Some(ContextSpec::Many(list)) => list.clone(),
    };
    if matches!(&spec.context, Some(ContextSpec::Many(list)) if list.is_empty()) {
        issues.push(Issue::at(&["context"], "the list of contexts is empty".to_owned()));
    }
    let mut seen = BTreeSet::new();
    for c in &contexts {
        if c.is_empty() {
            issues.push(Issue::at(&["context"], "a context name is empty".to_owned()));
        } else if !seen.insert(c) {
            issues.push(Issue::at(&["context"], format!("context {c:?} is listed twice")));
        }
    }
    contexts
}

/// How a context is chosen: weights name only the profile's contexts, and
/// `weighted` needs one for each, not all 0.
fn placement(spec: &ProfileSpec, contexts: &[String], issues: &mut Vec<Issue>) -> Placement {
    for name in spec.weights.keys() {
        if !contexts.contains(name) {
            issues.push(Issue::at(&["weights", name], format!("{name:?} is not one of the profile's contexts")));
        }
    }
    match spec.placement.unwrap_or(PlacementKind::FirstHealthy) {
        PlacementKind::FirstHealthy => Placement::FirstHealthy,
        PlacementKind::LeastLoaded => Placement::LeastLoaded,
        PlacementKind::Weighted => {
            for c in contexts.iter().filter(|c| !spec.weights.contains_key(*c)) {
                issues.push(Issue::at(&["weights"], format!("placement = \"weighted\" needs a weight for context {c:?}")));
            }
            if spec.weights.values().all(|w| *w == 0) {
                issues.push(Issue::at(&["weights"], "at least one weight must be above 0".to_owned()));
            }
            Placement::Weighted(spec.weights.clone())
        }
    }
}

/// The value of a per-context setting for each of `contexts`: one for all, or one per
/// context (exactly the profile's contexts; `default` where unset, else a missing context is
/// an issue, naming `what` is missing). Each value is checked with `check`, its issue told at the key it was written at.
fn per_context<T: Clone>(
    key: &str,
    what: &str,
    setting: Option<&PerContext<T>>,
    contexts: &[String],
    default: Option<T>,
    check: impl Fn(&T) -> Option<String>,
    issues: &mut Vec<Issue>,
) -> BTreeMap<String, T> {
    let mut values = BTreeMap::new();
    match setting {
        None => {
            for c in contexts {
                values.extend(default.clone().map(|v| (c.clone(), v)));
            }
        }
        Some(PerContext::One(value)) => {
            for c in contexts {
                values.insert(c.clone(), value.clone());
            }
        }
        Some(PerContext::PerContext(map)) => {
            for c in contexts.iter().filter(|c| !map.contains_key(*c)) {
                match &default {
                    Some(v) => drop(values.insert(c.clone(), v.clone())),
                    None => issues.push(Issue::at(&[key], format!("no {what} for context {c:?}"))),
                }
            }
            for c in map.keys().filter(|c| !contexts.contains(c)) {
                issues.push(Issue::at(&[key, c], format!("{c:?} is not one of the profile's contexts")));
            }
            values.extend(map.iter().filter(|(c, _)| contexts.contains(c)).map(|(c, v)| (c.clone(), v.clone())));
        }
    }
    for (c, value) in &values {
        if let Some(message) = check(value) {
            let keys: &[&str] = match setting {
                Some(PerContext::PerContext(map)) if map.contains_key(c) => &[key, c],
                _ => &[key],
            };
            issues.push(Issue::at(keys, message));
        }
    }
    values
}

/// The ingress URL of each context, each an http:// or https:// URL (required).
fn ingress_urls(spec: &ProfileSpec, contexts: &[String], issues: &mut Vec<Issue>) -> BTreeMap<String, String> {
    if spec.ingress_public_url.is_none() {
        issues.push(Issue::at(&["ingress_public_url"], "required: the public URL of the clusters' ingress controller".to_owned()));
    }
    let is_url = |url: &String| {
        let ok = (url.starts_with("http://") || url.starts_with("https://")) && !url.contains(char::is_whitespace);
        (!ok).then(|| format!("{url:?} is not an http:// or https:// URL"))
    };
    per_context("ingress_public_url", "URL", spec.ingress_public_url.as_ref(), contexts, None, is_url, issues)
}

/// How each context routes: an Ingress, or an HTTPRoute on that context's Gateway
/// (`gateway`, `namespace/name`, required there).
fn routes(spec: &ProfileSpec, contexts: &[String], issues: &mut Vec<Issue>) -> BTreeMap<String, Route> {
    let routing = per_context("routing", "routing", spec.routing.as_ref(), contexts, Some(Routing::Ingress), |_| None, issues);
    let is_gateway = |g: &String| {
        let ok = g.split_once('/').is_some_and(|(ns, name)| naming::is_dns1123_label(ns) && naming::is_dns1123_subdomain(name));
        (!ok).then(|| format!("{g:?} is not a Gateway as namespace/name"))
    };
    let gateways =
        per_context("gateway", "Gateway", spec.gateway.as_ref(), contexts, Some(String::new()), |g| (!g.is_empty()).then(|| is_gateway(g)).flatten(), issues);
    let mut routes = BTreeMap::new();
    for (context, routing) in routing {
        let route = match routing {
            Routing::Ingress => Route::Ingress,
            Routing::Httproute => match gateways.get(&context).and_then(|g| g.split_once('/')) {
                Some((namespace, name)) => Route::HttpRoute { namespace: namespace.to_owned(), name: name.to_owned() },
                None => {
                    issues.push(Issue::at(&["gateway"], format!("required: the Gateway (namespace/name) HTTPRoutes attach to on context {context:?}")));
                    continue;
                }
            },
        };
        routes.insert(context, route);
    }
    routes
}

/// The container image (required), and the entries of `allowed_images`.
fn image(spec: &ProfileSpec, issues: &mut Vec<Issue>) -> String {
    let image = spec.image.clone().unwrap_or_default();
    if image.trim().is_empty() {
        issues.push(Issue::at(&["image"], "required: the container image".to_owned()));
    }
    for (i, entry) in spec.allowed_images.iter().enumerate() {
        if entry.is_empty() || entry == "*" {
            let key = format!("allowed_images[{i}]");
            issues.push(Issue::at(&[&key], "an entry must name an image or an image prefix followed by '*'".to_owned()));
        }
    }
    image
}

/// The duration at `key`, else `default`; it must be above 0.
fn positive(key: &str, value: Option<Duration>, default: Duration, issues: &mut Vec<Issue>) -> Duration {
    let value = value.unwrap_or(default);
    if value.is_zero() {
        issues.push(Issue::at(&[key], "must be above 0".to_owned()));
    }
    value
}

/// A NetworkPolicy that lets somebody in, from namespaces and address ranges that exist.
fn check_network_policy(policy: &spec::NetworkPolicySpec, issues: &mut Vec<Issue>) {
    if !policy.enabled {
        return;
    }
    if policy.ingress_from_namespaces.is_empty() && policy.ingress_from_cidrs.is_empty() {
        let message = "nobody could reach the server: set ingress_from_namespaces or ingress_from_cidrs (or enabled = false)".to_owned();
        issues.push(Issue::at(&["network_policy"], message));
    }
    for (i, ns) in policy.ingress_from_namespaces.iter().enumerate() {
        if !is_dns1123_label(ns) {
            issues.push(Issue::at(&["network_policy", &format!("ingress_from_namespaces[{i}]")], format!("{ns:?} is not a namespace name")));
        }
    }
    let cidrs = [("ingress_from_cidrs", &policy.ingress_from_cidrs), ("egress_deny_cidrs", &policy.egress_deny_cidrs)];
    for (key, list) in cidrs {
        for (i, cidr) in list.iter().enumerate() {
            if cidr.parse::<ipnet::IpNet>().is_err() {
                issues.push(Issue::at(&["network_policy", &format!("{key}[{i}]")], format!("{cidr:?} is not an address range like 10.0.0.0/8")));
            }
        }
    }
}

/// Every volume needs a name; every mount a name and a mountPath.
/// `naming = "kubespawner"` needs a claim template KubeSpawner's fields can fill; a template
/// without that naming would do nothing.
fn check_naming(spec: &ProfileSpec, issues: &mut Vec<Issue>) {
    let Some(storage) = &spec.storage else { return };
    match (spec.naming, &storage.claim_name_template) {
        (spec::Naming::Kubespawner, _) => match crate::kubespawner_names::expand(storage.claim_name_template(), "jovyan", "") {
            Ok(name) if crate::naming::is_dns1123_subdomain(&name) => {}
            Ok(name) => issues.push(Issue::at(&["storage", "claim_name_template"], format!("gives {name:?}, not a valid object name"))),
            Err(e) => issues.push(Issue::at(&["storage", "claim_name_template"], e.to_string())),
        },
        (spec::Naming::Fleetspawn, Some(_)) => {
            issues.push(Issue::at(&["storage", "claim_name_template"], "only with naming = \"kubespawner\"".into()));
        }
        (spec::Naming::Fleetspawn, None) => {}
    }
}

/// Stripping the prefix is an HTTPRoute's URLRewrite: an Ingress has no portable way to.
fn check_strip_prefix(spec: &ProfileSpec, routes: &BTreeMap<String, Route>, issues: &mut Vec<Issue>) {
    if !spec.strip_prefix {
        return;
    }
    for (context, _) in routes.iter().filter(|(_, r)| **r == Route::Ingress) {
        issues.push(Issue::at(
            &["strip_prefix"],
            format!("needs routing = \"httproute\" on context {context:?} (an Ingress cannot rewrite paths portably: use your controller's annotation in ingress.annotations instead)"),
        ));
    }
}

fn check_volumes(spec: &ProfileSpec, issues: &mut Vec<Issue>) {
    for (i, volume) in spec.volumes.iter().enumerate() {
        if !volume.get("name").is_some_and(Value::is_string) {
            issues.push(Issue::at(&["volumes"], format!("volume [{i}] needs a name")));
        }
    }
    for (i, mount) in spec.volume_mounts.iter().enumerate() {
        if !mount.get("name").is_some_and(Value::is_string) || !mount.get("mountPath").is_some_and(Value::is_string) {
            issues.push(Issue::at(&["volume_mounts"], format!("mount [{i}] needs a name and a mountPath")));
        }
    }
}
