//! `fleetspawn import kubespawner`: a Zero to JupyterHub values file, or a
//! `jupyterhub_config.py` whose KubeSpawner settings are literals, as a `profiles.toml`, with
//! the list of what could not be converted, each at its line. Pure: text in, text out.
//!
//! - `node`: the input as a tree with lines; `yaml` and `pyconfig` read the two kinds of file;
//! - `z2jh`: the chart's `singleuser.*` keys as KubeSpawner traits;
//! - `traits`: KubeSpawner traits (also `kubespawner_override`) as profile settings;
//! - `template`, `pyregex`, `slug`: `{username}` placeholders, `validation_regex`, and the slug
//!   KubeSpawner derives from a display name.
//!
//! See docs/migrating.md for what maps to what.

mod entities;
mod node;
mod pyconfig;
mod pyregex;
mod slug;
mod template;
mod traits;
mod yaml;
mod z2jh;

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{json, Map, Value};

use crate::naming::is_dns1123_label;
use crate::profiles::derive_slug;
use crate::profiles::spec::UNSET;
use node::{Kind, Node};
use traits::{Level, Scope};

pub use slug::slugify;

/// The kind of file converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A Zero to JupyterHub `values.yaml`.
    Values,
    /// A `jupyterhub_config.py`.
    Config,
}

/// Where the converted profiles run: KubeSpawner knows one cluster, fleetspawn needs its
/// kubeconfig context and the public URL of its ingress.
#[derive(Debug, Clone)]
pub struct Target {
    /// The kubeconfig context.
    pub context: String,
    /// The public URL of that cluster's ingress controller.
    pub ingress_url: String,
}

/// The result: the profiles file, and what was left out.
#[derive(Debug, Clone)]
pub struct Imported {
    /// A `profiles.toml`.
    pub profiles_toml: String,
    /// What could not be converted, in the order of the file.
    pub unconverted: Vec<Unconverted>,
}

/// Something of the input that is not in the output (or not exactly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unconverted {
    /// Its line in the input; 0 for the chart's defaults.
    pub line: usize,
    /// Its key path (`singleuser.lifecycleHooks`, `profile_list[1].kubespawner_override.image`).
    pub key: String,
    /// Why, and what to do instead.
    pub reason: String,
}

impl fmt::Display for Unconverted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "(chart default): {}: {}", self.key, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.line, self.key, self.reason)
        }
    }
}

/// A file that cannot be converted at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// Not YAML.
    #[error("line {line}: invalid YAML: {message}")]
    Yaml {
        /// Where.
        line: usize,
        /// What the parser said.
        message: String,
    },
    /// YAML, but not a mapping of values.
    #[error("a values file is a YAML mapping (singleuser: ...)")]
    NotAMapping,
    /// A config file that sets nothing of KubeSpawner's.
    #[error("no c.KubeSpawner.* or c.Spawner.* setting found: nothing to convert")]
    NothingToConvert,
    /// The profile list is not a list (nor a dict) of profiles.
    #[error("line {line}: {key}: expected a list of profiles")]
    ProfileList {
        /// Where.
        line: usize,
        /// Its key.
        key: String,
    },
    /// The result could not be written as TOML.
    #[error("writing TOML: {0}")]
    Toml(String),
}

/// The things left out, as they are found.
#[derive(Debug, Default)]
pub struct Report(Vec<Unconverted>);

impl Report {
    fn add(&mut self, line: usize, key: &str, reason: String) {
        self.0.push(Unconverted { line, key: key.to_owned(), reason });
    }
}

/// Converts a KubeSpawner configuration to a profiles file.
pub fn kubespawner(text: &str, source: Source, target: &Target) -> Result<Imported, ImportError> {
    let mut report = Report::default();
    let (mut defaults, profile_list, list_key) = match source {
        Source::Values => {
            let (level, list) = z2jh::convert(text, &mut report)?;
            (level, list, "singleuser.profileList")
        }
        Source::Config => {
            let (level, list) = config(text, &mut report)?;
            (level, list, "c.KubeSpawner.profile_list")
        }
    };
    let (cmd, args) = defaults.finish((&None, &[]));
    let mut defaults_table = defaults.settings;
    defaults_table.insert("context".into(), json!(target.context));
    defaults_table.insert("ingress_public_url".into(), json!(target.ingress_url));
    let (cmd, args) = (&cmd, args.as_slice());

    let mut profiles = Vec::new();
    match &profile_list {
        Some(list) => {
            let items = match &list.kind {
                Kind::List(items) => items.clone(),
                // A dict of profiles: its values, in key order (KubeSpawner's _sorted_dict_values).
                Kind::Map(entries) => {
                    let mut sorted = entries.clone();
                    sorted.sort_by(|a, b| a.key.cmp(&b.key));
                    sorted.into_iter().map(|e| e.value).collect()
                }
                _ => return Err(ImportError::ProfileList { line: list.line, key: list_key.to_owned() }),
            };
            let mut slugs = BTreeSet::new();
            let mut has_default = false;
            for (i, item) in items.iter().enumerate() {
                let key = format!("{list_key}[{i}]");
                if let Some(p) = profile(item, &key, (cmd, args), &mut slugs, &mut has_default, &mut report) {
                    profiles.push(Value::Object(p));
                }
            }
        }
        None => profiles.push(json!({"slug": "default", "display_name": "Default"})),
    }
    let file = json!({"defaults": defaults_table, "profiles": profiles});
    let profiles_toml = toml::to_string_pretty(&file).map_err(|e| ImportError::Toml(e.to_string()))?;
    let mut unconverted = report.0;
    unconverted.sort_by_key(|u| u.line);
    Ok(Imported { profiles_toml, unconverted })
}

/// The KubeSpawner settings of a `jupyterhub_config.py`.
fn config(text: &str, report: &mut Report) -> Result<(Level, Option<Node>), ImportError> {
    let mut level = Level::default();
    let mut list = None;
    let mut any = false;
    let scope = Scope { path: "c.KubeSpawner".to_owned(), option: None };
    for statement in pyconfig::statements(text) {
        match statement {
            pyconfig::Statement::Assign { class, name, line, value } if class == "KubeSpawner" || class == "Spawner" => {
                any = true;
                if name == "profile_list" {
                    match value.kind {
                        Kind::Code(_) => report.add(line, "c.KubeSpawner.profile_list", "not a literal (a callable?): not converted".to_owned()),
                        _ => list = Some(value),
                    }
                } else {
                    traits::apply(&name, &format!("c.{class}.{name}"), line, &value, &scope, &mut level, report);
                }
            }
            pyconfig::Statement::Assign { class, name, line, .. } => {
                report.add(line, &format!("c.{class}.{name}"), "not a spawner setting: not converted".to_owned())
            }
            pyconfig::Statement::Other { line, text } => report.add(line, &text, "not a plain assignment of a literal: not converted".to_owned()),
        }
    }
    if !any {
        return Err(ImportError::NothingToConvert);
    }
    Ok((level, list))
}

/// One profile of the list, or `None` (reported) when it cannot be one.
fn profile(
    item: &Node,
    key: &str,
    below: (&Option<Vec<String>>, &[String]),
    slugs: &mut BTreeSet<String>,
    has_default: &mut bool,
    report: &mut Report,
) -> Option<Map<String, Value>> {
    if !matches!(item.kind, Kind::Map(_)) {
        report.add(item.line, key, "a profile is a mapping: not converted".to_owned());
        return None;
    }
    let display_name = item.get("display_name").and_then(Node::as_str);
    let slug = match (item.get("slug").and_then(Node::as_str), display_name) {
        (Some(slug), _) => slug.to_owned(),
        (None, Some(name)) => slugify(name),
        (None, None) => {
            report.add(item.line, key, "a profile needs a slug or a display_name: not converted".to_owned());
            return None;
        }
    };
    let mut out = Map::new();
    let mut fleet_slug = slug.clone();
    if !is_dns1123_label(&fleet_slug) {
        fleet_slug = derive_slug(&slug);
        let line = item.entry("slug").map_or(item.line, |e| e.line);
        report.add(
            line,
            &format!("{key}.slug"),
            format!("{slug:?} is not a DNS-1123 label: the profile's slug is {fleet_slug:?}, so users' saved choice of {slug:?} no longer matches"),
        );
    }
    if fleet_slug.is_empty() || !slugs.insert(fleet_slug.clone()) {
        report.add(item.line, key, format!("slug {slug:?} is empty or used by an earlier profile: not converted"));
        return None;
    }
    out.insert("slug".into(), json!(fleet_slug));
    let mut level = Level::default();
    let scope = Scope { path: format!("{key}.kubespawner_override"), option: None };
    for e in item.entries() {
        match e.key.as_str() {
            "slug" => {}
            "display_name" | "description" => match e.value.as_str() {
                Some(text) => {
                    out.insert(e.key.clone(), json!(text));
                }
                None => report.add(e.line, &format!("{key}.{}", e.key), "not a string: not converted".to_owned()),
            },
            "default" => {
                if e.value.kind == Kind::Bool(true) {
                    if *has_default {
                        report.add(e.line, &format!("{key}.default"), "an earlier profile is the default already (KubeSpawner takes the first)".to_owned());
                    } else {
                        *has_default = true;
                        out.insert("default".into(), json!(true));
                    }
                }
            }
            "kubespawner_override" => {
                if let Kind::Code(_) = e.value.kind {
                    report.add(e.value.line, &scope.path, "a callable or expression, not a literal: not converted".to_owned());
                }
                for t in e.value.entries() {
                    traits::apply(&t.key, &format!("{}.{}", scope.path, t.key), t.line, &t.value, &scope, &mut level, report);
                }
            }
            "profile_options" => {}
            _ => report.add(e.line, &format!("{key}.{}", e.key), "not a profile key KubeSpawner documents: not converted".to_owned()),
        }
    }
    let effective = level.finish(below);
    out.extend(level.settings);
    if let Some(options) = item.get("profile_options") {
        let mut table = Map::new();
        for e in options.entries() {
            if let Some(option) = option(&e.value, &e.key, &format!("{key}.profile_options.{}", e.key), (&effective.0, &effective.1), report) {
                table.insert(e.key.clone(), Value::Object(option));
            }
        }
        if !table.is_empty() {
            out.insert("options".into(), Value::Object(table));
        }
    }
    Some(out)
}

/// One of a profile's `profile_options`.
fn option(node: &Node, name: &str, key: &str, below: (&Option<Vec<String>>, &[String]), report: &mut Report) -> Option<Map<String, Value>> {
    let mut out = Map::new();
    let mut choices = Map::new();
    let mut default = None;
    let mut first = None;
    let mut description = None;
    for e in node.entries() {
        match e.key.as_str() {
            "display_name" => {
                out.insert("display_name".into(), e.value.to_json().unwrap_or_default());
            }
            "choices" => {
                for c in e.value.entries() {
                    let choice_key = format!("{key}.choices.{}", c.key);
                    first.get_or_insert_with(|| c.key.clone());
                    let mut table = Map::new();
                    let mut level = Level::default();
                    let scope = Scope { path: format!("{choice_key}.kubespawner_override"), option: None };
                    for f in c.value.entries() {
                        match f.key.as_str() {
                            "display_name" | "description" => {
                                table.insert(f.key.clone(), f.value.to_json().unwrap_or_default());
                            }
                            "default" => {
                                if f.value.kind == Kind::Bool(true) {
                                    default.get_or_insert_with(|| c.key.clone());
                                }
                            }
                            "kubespawner_override" => {
                                for t in f.value.entries() {
                                    traits::apply(&t.key, &format!("{}.{}", scope.path, t.key), t.line, &t.value, &scope, &mut level, report);
                                }
                            }
                            _ => report.add(f.line, &format!("{choice_key}.{}", f.key), "not a choice key KubeSpawner documents: not converted".to_owned()),
                        }
                    }
                    level.finish(below);
                    if !level.settings.is_empty() {
                        table.insert("override".into(), Value::Object(level.settings));
                    }
                    choices.insert(c.key.clone(), Value::Object(table));
                }
            }
            "unlisted_choice" => {
                if let Some((free_text, message)) = free_text(&e.value, name, &format!("{key}.unlisted_choice"), below, report) {
                    out.insert("free_text".into(), Value::Object(free_text));
                    description = message;
                }
            }
            _ => report.add(e.line, &format!("{key}.{}", e.key), "not an option key KubeSpawner documents: not converted".to_owned()),
        }
    }
    if choices.is_empty() && !out.contains_key("free_text") {
        report.add(node.line, key, "an option with no choices and no enabled unlisted_choice: not converted".to_owned());
        return None;
    }
    if let Some(d) = default.or(first).filter(|_| !choices.is_empty()) {
        out.insert("default".into(), json!(d));
    }
    if let Some(message) = description {
        out.insert("description".into(), json!(message));
    }
    if !choices.is_empty() {
        out.insert("choices".into(), Value::Object(choices));
    }
    Some(out)
}

/// An enabled `unlisted_choice` as free text, and its `validation_message` (shown as the
/// option's description: fleetspawn's free text has no message of its own).
fn free_text(
    node: &Node,
    option: &str,
    key: &str,
    below: (&Option<Vec<String>>, &[String]),
    report: &mut Report,
) -> Option<(Map<String, Value>, Option<String>)> {
    if node.get("enabled").map(|n| &n.kind) != Some(&Kind::Bool(true)) {
        return None;
    }
    let mut out = Map::new();
    let mut message = None;
    // Without validation_regex KubeSpawner takes any text that is not empty.
    let mut regex = Some("(?s).+".to_owned());
    let mut level = Level::default();
    let scope = Scope { path: format!("{key}.kubespawner_override"), option: Some(option) };
    for e in node.entries() {
        match e.key.as_str() {
            "enabled" => {}
            "display_name" => {
                out.insert("display_name".into(), e.value.to_json().unwrap_or_default());
            }
            "validation_regex" => match e.value.as_str().map(pyregex::prefix_match) {
                Some(Ok(converted)) => regex = Some(converted),
                Some(Err(why)) => {
                    report.add(
                        e.line,
                        &format!("{key}.validation_regex"),
                        format!("{why} has no equivalent in fleetspawn's regexes: the free text is not converted"),
                    );
                    regex = None;
                }
                None => regex = None,
            },
            "validation_message" => message = e.value.as_str().map(str::to_owned),
            "display_name_in_choices" => {
                report.add(e.line, &format!("{key}.display_name_in_choices"), "fleetspawn's form labels the free text with its display_name".to_owned())
            }
            "kubespawner_override" => {
                for t in e.value.entries() {
                    traits::apply(&t.key, &format!("{}.{}", scope.path, t.key), t.line, &t.value, &scope, &mut level, report);
                }
            }
            _ => report.add(e.line, &format!("{key}.{}", e.key), "not an unlisted_choice key KubeSpawner documents: not converted".to_owned()),
        }
    }
    out.insert("regex".into(), json!(regex?));
    level.finish(below);
    if !level.settings.is_empty() {
        out.insert("override".into(), Value::Object(level.settings));
    }
    Some((out, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target { context: "cluster-a".into(), ingress_url: "http://cluster-a.example".into() }
    }

    #[test]
    fn profiles_keep_kubespawners_slugs_and_report_what_is_left_out() {
        let values = "singleuser:\n  image:\n    name: quay.io/jupyter/scipy-notebook\n    tag: \"2024-01-15\"\n  profileList:\n    - display_name: \"Small (1 CPU)\"\n      default: true\n    - slug: gpu\n      display_name: GPU\n      kubespawner_override:\n        image: quay.io/jupyter/pytorch-notebook:cuda12\n        extra_resource_limits: {nvidia.com/gpu: \"1\"}\n        modify_pod_hook: x\n      profile_options:\n        image:\n          display_name: Image\n          choices:\n            a: {display_name: A, kubespawner_override: {image: a:1}}\n            b: {display_name: B, default: true, kubespawner_override: {image: b:1}}\n          unlisted_choice:\n            enabled: true\n            display_name: Other image\n            validation_regex: \"^quay\\\\.io/\"\n            validation_message: Must be on quay.io\n            kubespawner_override: {image: \"{value}\", environment: {PICKED: \"{value}\"}}\nhub:\n  config: {}\n";
        let imported = kubespawner(values, Source::Values, &target()).expect("converts");
        let file: toml::Table = toml::from_str(&imported.profiles_toml).expect("TOML");
        let profiles = file["profiles"].as_array().expect("profiles");
        assert_eq!(profiles[0]["slug"].as_str(), Some("small-1-cpu"));
        assert_eq!(profiles[0]["default"].as_bool(), Some(true));
        assert_eq!(file["defaults"]["image"].as_str(), Some("quay.io/jupyter/scipy-notebook:2024-01-15"));
        assert_eq!(file["defaults"]["args"].as_array().map(Vec::len), Some(1), "Z2JH's cmd");
        let image = &profiles[1]["options"]["image"];
        assert_eq!(image["default"].as_str(), Some("b"));
        assert_eq!(image["description"].as_str(), Some("Must be on quay.io"));
        assert_eq!(image["free_text"]["regex"].as_str(), Some(r"(?:^quay\.io/)(?s:.*)"));
        assert_eq!(image["free_text"]["override"]["image"].as_str(), Some("{value}"));
        assert_eq!(image["free_text"]["override"]["environment"]["PICKED"].as_str(), Some(r#"{{ options["image"] }}"#));
        let lines: Vec<String> = imported.unconverted.iter().map(ToString::to_string).collect();
        assert!(
            lines.contains(&"13: singleuser.profileList[1].kubespawner_override.modify_pod_hook: no fleetspawn equivalent known: not converted".to_owned()),
            "{lines:#?}"
        );
        assert!(lines.iter().any(|l| l.starts_with("26: hub: ")), "{lines:#?}");
    }

    #[test]
    fn a_config_file_with_callables() {
        let py = "c.KubeSpawner.image = 'x:1'\nc.KubeSpawner.profile_list = [\n  {'display_name': 'A', 'kubespawner_override': {'cpu_limit': lambda s: 2}},\n]\nc.JupyterHub.authenticator_class = 'github'\n";
        let imported = kubespawner(py, Source::Config, &target()).expect("converts");
        let lines: Vec<String> = imported.unconverted.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "3: c.KubeSpawner.profile_list[0].kubespawner_override.cpu_limit: a callable or expression, not a literal: not converted",
                "5: c.JupyterHub.authenticator_class: not a spawner setting: not converted"
            ]
        );
        assert!(matches!(kubespawner("c.JupyterHub.x = 1\n", Source::Config, &target()), Err(ImportError::NothingToConvert)));
        assert!(matches!(kubespawner("- a\n", Source::Values, &target()), Err(ImportError::NotAMapping)));
        assert!(matches!(kubespawner("singleuser:\n  profileList: 3\n", Source::Values, &target()), Err(ImportError::ProfileList { line: 2, .. })));
    }
}
