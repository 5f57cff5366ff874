//! Profiles: what users may spawn, read from a TOML file such as
//! `profiles/example.toml` (reference: `docs/profiles.md`).
//!
//! ```toml
//! [defaults]                # applies to every profile
//! image = "quay.io/jupyter/base-notebook:latest"
//!
//! [[profiles]]
//! display_name = "Small"    # slug "small"
//! context = "cluster-a"
//! ingress_public_url = "http://cluster-a.example"
//! ```
//!
//! A profile is `[defaults]` merged with the profile's own table, then with
//! the overrides of the options the user picked (see [`spec::merge_settings`]).
//! [`load`] reads and checks a file without side effects: a caller that
//! reloads keeps its last good [`ProfileSet`] when `load` fails.

pub mod spec;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use regex::Regex;
use serde_json::Value;

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::naming::is_dns1123_label;
use crate::placement::Placement;
use crate::spans::{Document, KeyPath, Seg};
use spec::{merge_settings, without_unset};
pub use spec::{ContextSpec, IngressUrlSpec, PlacementKind, ProfileSpec};

/// Keys only a profile's own table may set, never `[defaults]` or an option.
const IDENTITY_KEYS: &[&str] = &["slug", "display_name", "description", "default"];
/// Keys whose strings are templates.
const TEMPLATE_KEYS: &[&str] = &["namespace", "environment", "objects", "patches"];
/// How long a spawn may take unless the profile says otherwise.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `FailedScheduling` is tolerated unless the profile says otherwise.
pub const DEFAULT_SCHEDULING_GRACE: Duration = Duration::from_secs(60);
/// How long a stop may take unless the profile says otherwise.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Keys an option override may not change (it may not widen access either).
const NOT_OVERRIDABLE: &[&str] = &["slug", "display_name", "description", "default", "options", "allowed_groups", "allowed_images"];

/// A user-selectable option of a profile.
#[derive(Debug, Clone)]
pub struct ProfileOption {
    /// Label shown to users (default: the option's key).
    pub display_name: String,
    /// Help text.
    pub description: String,
    /// Choice used when the user picks nothing.
    pub default: Option<String>,
    /// Choices, by key.
    pub choices: BTreeMap<String, Choice>,
    /// Free text accepted instead of a choice.
    pub free_text: Option<FreeText>,
}

/// One choice of an option.
#[derive(Debug, Clone)]
pub struct Choice {
    /// Label shown to users (default: the choice's key).
    pub display_name: String,
    /// Help text.
    pub description: String,
    overrides: Value,
}

/// Free text accepted for an option.
#[derive(Debug, Clone)]
pub struct FreeText {
    /// Label shown to users.
    pub display_name: String,
    /// The regex as written; the whole text must match it.
    pub regex: String,
    matcher: Regex,
    overrides: Value,
}

/// A checked profile, with defaults (and possibly option overrides) applied.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Stable identifier, a DNS-1123 label.
    pub slug: String,
    /// Name shown to users.
    pub display_name: String,
    /// Longer text shown to users.
    pub description: String,
    /// Whether this is the default profile.
    pub default: bool,
    /// Candidate contexts, in the order written (at least one).
    pub contexts: Vec<String>,
    /// How a context is chosen among `contexts`.
    pub placement: Placement,
    /// Container image.
    pub image: String,
    /// Namespace template.
    pub namespace: String,
    /// How long a spawn may take (default 300 s).
    pub start_timeout: Duration,
    /// How long `FailedScheduling` is tolerated (default 60 s).
    pub scheduling_grace: Duration,
    /// How long a stop may take (default 30 s).
    pub stop_timeout: Duration,
    /// Keep a failed spawn's objects (default false).
    pub keep_on_failure: bool,
    /// Probe the user URL through the ingress before reporting ready.
    pub ready_check_url: bool,
    /// Groups allowed to use the profile; empty = everyone.
    pub allowed_groups: Vec<String>,
    /// Options users choose from, by key.
    pub options: BTreeMap<String, ProfileOption>,
    /// Every setting as written (after merging).
    pub spec: ProfileSpec,
    ingress_urls: BTreeMap<String, String>,
    settings: Value,
}

/// A problem with a profile's merged settings, relative to the profile.
#[derive(Debug, Clone)]
struct Issue {
    path: KeyPath,
    message: String,
}

fn path(keys: &[&str]) -> KeyPath {
    KeyPath(keys.iter().map(|k| Seg::Key((*k).to_owned())).collect())
}

/// The slug derived from a display name: lower case, runs of anything but
/// `[a-z0-9]` turned into `-`, trimmed to 63 characters.
pub fn derive_slug(display_name: &str) -> String {
    let mut slug = String::new();
    for c in display_name.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.truncate(63);
    slug.trim_end_matches('-').to_owned()
}

/// Deserializes settings, reporting the key path of the first problem.
fn deserialize_spec(settings: &Value) -> Result<ProfileSpec, Issue> {
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
fn check_keys(settings: &serde_json::Map<String, Value>) -> Vec<Issue> {
    settings
        .iter()
        .filter(|(_, value)| !spec::is_unset(value))
        .filter_map(|(key, value)| {
            let single = Value::Object(serde_json::Map::from_iter([(key.clone(), without_unset(value))]));
            deserialize_spec(&single).err()
        })
        .collect()
}

impl Profile {
    /// Checks merged settings and builds the profile.
    fn build(settings: Value) -> Result<Self, Vec<Issue>> {
        let spec = deserialize_spec(&settings).map_err(|issue| vec![issue])?;
        let mut issues = Vec::new();
        let mut issue = |keys: &[&str], message: String| {
            issues.push(Issue { path: path(keys), message });
        };

        let display_name = spec.display_name.clone().or_else(|| spec.slug.clone()).unwrap_or_default();
        let slug = match &spec.slug {
            Some(slug) if !is_dns1123_label(slug) => {
                issue(&["slug"], format!("{slug:?} is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)"));
                slug.clone()
            }
            Some(slug) => slug.clone(),
            None => {
                let slug = derive_slug(&display_name);
                if slug.is_empty() {
                    issue(&["display_name"], "a profile needs a display_name (or a slug) with a letter or digit".to_owned());
                }
                slug
            }
        };

        let contexts = match &spec.context {
            None => {
                issue(&["context"], "required: a kubeconfig context or a list of them".to_owned());
                Vec::new()
            }
            Some(ContextSpec::One(c)) => vec![c.clone()],
            Some(ContextSpec::Many(list)) => list.clone(),
        };
        if matches!(&spec.context, Some(ContextSpec::Many(list)) if list.is_empty()) {
            issue(&["context"], "the list of contexts is empty".to_owned());
        }
        let mut seen = BTreeSet::new();
        for c in &contexts {
            if c.is_empty() {
                issue(&["context"], "a context name is empty".to_owned());
            } else if !seen.insert(c) {
                issue(&["context"], format!("context {c:?} is listed twice"));
            }
        }

        for name in spec.weights.keys() {
            if !contexts.contains(name) {
                issue(&["weights", name], format!("{name:?} is not one of the profile's contexts"));
            }
        }
        let placement = match spec.placement.unwrap_or(PlacementKind::FirstHealthy) {
            PlacementKind::FirstHealthy => Placement::FirstHealthy,
            PlacementKind::LeastLoaded => Placement::LeastLoaded,
            PlacementKind::Weighted => {
                for c in contexts.iter().filter(|c| !spec.weights.contains_key(*c)) {
                    issue(&["weights"], format!("placement = \"weighted\" needs a weight for context {c:?}"));
                }
                if spec.weights.values().all(|w| *w == 0) {
                    issue(&["weights"], "at least one weight must be above 0".to_owned());
                }
                Placement::Weighted(spec.weights.clone())
            }
        };

        let mut ingress_urls = BTreeMap::new();
        match &spec.ingress_public_url {
            None => issue(&["ingress_public_url"], "required: the public URL of the clusters' ingress controller".to_owned()),
            Some(IngressUrlSpec::One(url)) => {
                for c in &contexts {
                    ingress_urls.insert(c.clone(), url.clone());
                }
            }
            Some(IngressUrlSpec::PerContext(map)) => {
                for c in contexts.iter().filter(|c| !map.contains_key(*c)) {
                    issue(&["ingress_public_url"], format!("no URL for context {c:?}"));
                }
                for c in map.keys().filter(|c| !contexts.contains(c)) {
                    issue(&["ingress_public_url", c], format!("{c:?} is not one of the profile's contexts"));
                }
                ingress_urls.clone_from(map);
            }
        }
        for (c, url) in &ingress_urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(char::is_whitespace) {
                let keys: &[&str] = match &spec.ingress_public_url {
                    Some(IngressUrlSpec::PerContext(_)) => &["ingress_public_url", c],
                    _ => &["ingress_public_url"],
                };
                issue(keys, format!("{url:?} is not an http:// or https:// URL"));
            }
        }

        let image = spec.image.clone().unwrap_or_default();
        if image.trim().is_empty() {
            issue(&["image"], "required: the container image".to_owned());
        }
        for (i, entry) in spec.allowed_images.iter().enumerate() {
            if entry.is_empty() || entry == "*" {
                let key = format!("allowed_images[{i}]");
                issue(&[&key], "an entry must name an image or an image prefix followed by '*'".to_owned());
            }
        }

        let positive = |keys: &[&str], value: Option<Duration>, default: Duration, issue: &mut dyn FnMut(&[&str], String)| {
            let value = value.unwrap_or(default);
            if value.is_zero() {
                issue(keys, "must be above 0".to_owned());
            }
            value
        };
        let start_timeout = positive(&["start_timeout"], spec.start_timeout, DEFAULT_START_TIMEOUT, &mut issue);
        let scheduling_grace = positive(&["scheduling_grace"], spec.scheduling_grace, DEFAULT_SCHEDULING_GRACE, &mut issue);
        let stop_timeout = positive(&["stop_timeout"], spec.stop_timeout, DEFAULT_STOP_TIMEOUT, &mut issue);

        for (i, volume) in spec.volumes.iter().enumerate() {
            if !volume.get("name").is_some_and(Value::is_string) {
                issue(&["volumes"], format!("volume [{i}] needs a name"));
            }
        }
        for (i, mount) in spec.volume_mounts.iter().enumerate() {
            if !mount.get("name").is_some_and(Value::is_string) || !mount.get("mountPath").is_some_and(Value::is_string) {
                issue(&["volume_mounts"], format!("mount [{i}] needs a name and a mountPath"));
            }
        }

        let mut options = BTreeMap::new();
        for (name, option) in &spec.options {
            let mut option_issue = |keys: &[&str], message: String| {
                let mut full = vec!["options", name.as_str()];
                full.extend_from_slice(keys);
                issue(&full, message);
            };
            if option.choices.is_empty() && option.free_text.is_none() {
                option_issue(&[], "an option needs choices, free_text or both".to_owned());
            }
            match &option.default {
                Some(d) if !option.choices.contains_key(d) => {
                    option_issue(&["default"], format!("{d:?} is not one of the choices ({})", keys_list(&option.choices)))
                }
                None if option.choices.len() > 1 => option_issue(&["default"], format!("required: one of the choices ({})", keys_list(&option.choices))),
                _ => {}
            }
            let mut choices = BTreeMap::new();
            for (key, choice) in &option.choices {
                for forbidden in choice.overrides.keys().filter(|k| NOT_OVERRIDABLE.contains(&k.as_str())) {
                    option_issue(&["choices", key, "override", forbidden], "options cannot override this key".to_owned());
                }
                choices.insert(
                    key.clone(),
                    Choice {
                        display_name: choice.display_name.clone().unwrap_or_else(|| key.clone()),
                        description: choice.description.clone().unwrap_or_default(),
                        overrides: Value::Object(choice.overrides.clone()),
                    },
                );
            }
            let free_text = option.free_text.as_ref().and_then(|ft| {
                for forbidden in ft.overrides.keys().filter(|k| NOT_OVERRIDABLE.contains(&k.as_str())) {
                    option_issue(&["free_text", "override", forbidden], "options cannot override this key".to_owned());
                }
                // User text must never become template source.
                for key in TEMPLATE_KEYS.iter().filter(|k| ft.overrides.get(**k).is_some_and(|v| v.to_string().contains("{value}"))) {
                    option_issue(
                        &["free_text", "override", key],
                        format!(
                            "{{value}} cannot go into a template (user text is never template code): \
                             use {{{{ options.{name} }}}} in the template instead"
                        ),
                    );
                }
                // Compiled alone first, so errors quote the regex as written.
                match Regex::new(&ft.regex).and_then(|_| Regex::new(&format!("^(?:{})$", ft.regex))) {
                    Ok(matcher) => Some(FreeText {
                        display_name: ft.display_name.clone().unwrap_or_else(|| name.clone()),
                        regex: ft.regex.clone(),
                        matcher,
                        overrides: Value::Object(ft.overrides.clone()),
                    }),
                    Err(err) => {
                        let message = err.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
                        option_issue(&["free_text", "regex"], format!("invalid regex: {message}"));
                        None
                    }
                }
            });
            options.insert(
                name.clone(),
                ProfileOption {
                    display_name: option.display_name.clone().unwrap_or_else(|| name.clone()),
                    description: option.description.clone().unwrap_or_default(),
                    default: option.default.clone().or_else(|| option.choices.keys().next().filter(|_| option.choices.len() == 1).cloned()),
                    choices,
                    free_text,
                },
            );
        }

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
            options,
            ingress_urls,
            spec,
            settings,
        })
    }

    /// The public URL of `context`'s ingress controller, if `context` is one
    /// of the profile's.
    pub fn ingress_public_url(&self, context: &str) -> Option<&str> {
        self.ingress_urls.get(context).map(String::as_str)
    }

    /// The merged settings as JSON, as templates see them (`profile`).
    pub fn settings(&self) -> &Value {
        &self.settings
    }

    /// Whether `image` is allowed by `allowed_images` (always, when empty).
    pub fn image_allowed(&self, image: &str) -> bool {
        self.spec.allowed_images.is_empty()
            || self.spec.allowed_images.iter().any(|entry| match entry.strip_suffix('*') {
                Some(prefix) => image.starts_with(prefix),
                None => image == entry,
            })
    }

    /// Applies the user's option values: for each option, in key order, the
    /// chosen choice's overrides (or, for a value that is no choice key, the
    /// free-text overrides once the whole value matches the regex) are merged
    /// onto the profile. Options the user leaves out take their default.
    /// An image changed by an option must be in `allowed_images`.
    pub fn resolve_options(&self, values: &BTreeMap<String, String>) -> Result<ResolvedOptions, OptionError> {
        if let Some(unknown) = values.keys().find(|k| !self.options.contains_key(*k)) {
            return Err(OptionError::Unknown { option: unknown.clone(), known: keys_list(&self.options) });
        }
        let mut profile = self.clone();
        let mut chosen = BTreeMap::new();
        for (name, option) in &self.options {
            let Some(value) = values.get(name).or(option.default.as_ref()) else {
                continue;
            };
            let overrides = if let Some(choice) = option.choices.get(value) {
                choice.overrides.clone()
            } else if let Some(free) = &option.free_text {
                if !free.matcher.is_match(value) {
                    return Err(OptionError::NoMatch { option: name.clone(), value: value.clone(), regex: free.regex.clone() });
                }
                substitute_value(&free.overrides, value)
            } else {
                return Err(OptionError::NotAChoice { option: name.clone(), value: value.clone(), choices: keys_list(&option.choices) });
            };
            let mut settings = profile.settings.clone();
            merge_settings(&mut settings, &overrides);
            let next = Profile::build(settings).map_err(|issues| OptionError::Invalid {
                option: name.clone(),
                message: issues.iter().map(|i| format!("{}: {}", i.path, i.message)).collect::<Vec<_>>().join("; "),
            })?;
            if next.image != profile.image && !self.image_allowed(&next.image) {
                return Err(OptionError::ImageNotAllowed { option: name.clone(), image: next.image });
            }
            profile = next;
            chosen.insert(name.clone(), value.clone());
        }
        Ok(ResolvedOptions { profile, chosen })
    }
}

fn keys_list<V>(map: &BTreeMap<String, V>) -> String {
    map.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// `overrides` with `{value}` in every string replaced by `value` (as data:
/// the result is never parsed or rendered as a template).
fn substitute_value(overrides: &Value, value: &str) -> Value {
    match overrides {
        Value::String(s) => Value::String(s.replace("{value}", value)),
        Value::Array(items) => Value::Array(items.iter().map(|v| substitute_value(v, value)).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), substitute_value(v, value))).collect()),
        other => other.clone(),
    }
}

/// A profile with the user's options applied.
#[derive(Debug, Clone)]
pub struct ResolvedOptions {
    /// The profile with the chosen overrides merged in.
    pub profile: Profile,
    /// Option key → chosen choice key or free text (defaults included).
    pub chosen: BTreeMap<String, String>,
}

/// A user's option value that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// The profile has no such option.
    #[error("options.{option}: no such option (this profile has: {known})")]
    Unknown {
        /// The option asked for.
        option: String,
        /// The profile's options.
        known: String,
    },
    /// The value is no choice and the option takes no free text.
    #[error("options.{option}: {value:?} is not one of {choices}")]
    NotAChoice {
        /// The option.
        option: String,
        /// The value given.
        value: String,
        /// The valid choices.
        choices: String,
    },
    /// Free text that does not match the option's regex.
    #[error("options.{option}: {value:?} does not match ^{regex}$")]
    NoMatch {
        /// The option.
        option: String,
        /// The value given.
        value: String,
        /// The regex as written.
        regex: String,
    },
    /// The option picks an image outside `allowed_images`.
    #[error("options.{option}: image {image:?} is not in allowed_images")]
    ImageNotAllowed {
        /// The option.
        option: String,
        /// The image it would use.
        image: String,
    },
    /// The option's overrides make the profile invalid.
    #[error("options.{option}: invalid result: {message}")]
    Invalid {
        /// The option.
        option: String,
        /// What is wrong.
        message: String,
    },
}

/// The profiles of one file, in file order.
#[derive(Debug, Clone)]
pub struct ProfileSet {
    file: String,
    doc: Document,
    profiles: Vec<Profile>,
}

impl ProfileSet {
    /// The profile with this slug.
    pub fn get(&self, slug: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.slug == slug)
    }

    /// The profiles, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.iter()
    }

    /// The profile marked `default = true`, else the first one.
    pub fn default_profile(&self) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.default).or_else(|| self.profiles.first())
    }

    /// One warning per context a profile uses (directly or through an option
    /// choice) that is not in `known` (the kubeconfig's contexts).
    pub fn check_contexts(&self, known: &[&str]) -> Vec<Diagnostic> {
        let mut warnings = BTreeSet::new();
        for (index, profile) in self.profiles.iter().enumerate() {
            let mut used: Vec<(KeyPath, String)> = profile.contexts.iter().map(|c| (path(&["context"]), c.clone())).collect();
            for (name, option) in &profile.options {
                for (key, choice) in &option.choices {
                    if let Ok(spec) = deserialize_spec(&choice.overrides) {
                        let at = path(&["options", name, "choices", key, "override", "context"]);
                        match spec.context {
                            Some(ContextSpec::One(c)) => used.push((at, c)),
                            Some(ContextSpec::Many(list)) => used.extend(list.into_iter().map(|c| (at.clone(), c))),
                            None => {}
                        }
                    }
                }
            }
            for (at, context) in used.into_iter().filter(|(_, c)| !known.contains(&c.as_str())) {
                warnings.insert(locate(&self.file, &self.doc, index, &profile.slug, &at, format!("context {context:?} is not in the kubeconfig")));
            }
        }
        warnings.into_iter().collect()
    }
}

/// Where a profile goes wrong when rendered: the key path to blame (relative to the profile)
/// and the message.
pub type Blame = (KeyPath, String);

/// Checks the profiles in `text`, naming `file` in diagnostics. `render_check` renders a
/// profile once for a sample user (see `bundle::Renderer::parse_profiles`, the way callers
/// use this), so templates that do not render are reported here, at their line.
pub fn parse(file: &str, text: &str, render_check: &dyn Fn(&Profile) -> Result<(), Blame>) -> Result<ProfileSet, Diagnostics> {
    let doc = Document::parse(text)
        .map_err(|err| Diagnostics(vec![Diagnostic { file: file.to_owned(), line: Some(err.line), path: String::new(), message: err.message }]))?;
    let mut diags = BTreeSet::new();
    let mut report = |at: &KeyPath, message: String| {
        diags.insert(Diagnostic { file: file.to_owned(), line: doc.line(at), path: at.to_string(), message });
    };
    let empty = serde_json::Map::new();
    let top = doc.value.as_object().unwrap_or(&empty);
    for key in top.keys().filter(|k| *k != "defaults" && *k != "profiles") {
        report(&path(&[key]), "unknown key (a profiles file has [defaults] and [[profiles]])".to_owned());
    }

    let defaults_path = path(&["defaults"]);
    let defaults = match top.get("defaults") {
        None => Some(Value::Object(serde_json::Map::new())),
        Some(Value::Object(map)) => {
            let mut ok = true;
            for key in map.keys().filter(|k| IDENTITY_KEYS.contains(&k.as_str())) {
                report(&defaults_path.key(key), "only a profile can set this, not [defaults]".to_owned());
                ok = false;
            }
            for issue in check_keys(map) {
                report(&defaults_path.join(&issue.path), issue.message);
                ok = false;
            }
            ok.then(|| without_unset(&Value::Object(map.clone())))
        }
        Some(_) => {
            report(&defaults_path, "must be a table".to_owned());
            None
        }
    };

    let raw_profiles = match top.get("profiles") {
        Some(Value::Array(items)) if !items.is_empty() => items.as_slice(),
        Some(Value::Array(_)) | None => {
            report(&path(&["profiles"]), "no profiles: add at least one [[profiles]] table".to_owned());
            &[]
        }
        Some(_) => {
            report(&path(&["profiles"]), "must be an array of tables ([[profiles]])".to_owned());
            &[]
        }
    };

    let mut profiles = Vec::new();
    let mut slugs: BTreeMap<String, usize> = BTreeMap::new();
    let mut default_line: Option<String> = None;
    for (index, raw) in raw_profiles.iter().enumerate() {
        let label = raw
            .get("slug")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| raw.get("display_name").and_then(Value::as_str).map(derive_slug))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| index.to_string());
        let mut located = |at: &KeyPath, message: String| {
            diags.insert(locate(file, &doc, index, &label, at, message));
        };
        let Value::Object(table) = raw else {
            located(&KeyPath::default(), "must be a table".to_owned());
            continue;
        };
        let issues = check_keys(table);
        if !issues.is_empty() {
            for issue in issues {
                located(&issue.path, issue.message);
            }
            continue;
        }
        let Some(defaults) = &defaults else { continue };
        let mut settings = defaults.clone();
        merge_settings(&mut settings, raw);
        let profile = match Profile::build(settings) {
            Ok(profile) => profile,
            Err(issues) => {
                for issue in issues {
                    located(&issue.path, issue.message);
                }
                continue;
            }
        };
        let mut valid = true;
        for (name, option) in &profile.options {
            for key in option.choices.keys() {
                let values = BTreeMap::from([(name.clone(), key.clone())]);
                if let Err(err) = profile.resolve_options(&values) {
                    located(&path(&["options", name, "choices", key, "override"]), choice_message(&err));
                    valid = false;
                }
            }
            if let Some(free) = &option.free_text {
                let mut settings = profile.settings.clone();
                merge_settings(&mut settings, &free.overrides);
                if let Err(issues) = Profile::build(settings) {
                    for issue in issues {
                        located(&path(&["options", name, "free_text", "override"]).join(&issue.path), issue.message);
                    }
                    valid = false;
                }
            }
        }
        if valid {
            if let Err(err) = render_check(&profile) {
                located(&err.0, err.1);
                valid = false;
            }
        }
        if let Some(first) = slugs.get(&profile.slug) {
            located(&path(&["slug"]), format!("duplicate slug {:?} (also profile #{})", profile.slug, first + 1));
            valid = false;
        } else {
            slugs.insert(profile.slug.clone(), index);
        }
        if profile.default {
            if let Some(first) = &default_line {
                located(&path(&["default"]), format!("a second default profile (profile {first:?} is already the default)"));
                valid = false;
            } else {
                default_line = Some(profile.slug.clone());
            }
        }
        if valid {
            profiles.push(profile);
        }
    }

    if diags.is_empty() {
        Ok(ProfileSet { file: file.to_owned(), doc, profiles })
    } else {
        let mut diags: Vec<_> = diags.into_iter().collect();
        diags.sort_by_key(|d| d.line);
        Err(Diagnostics(diags))
    }
}

fn choice_message(err: &OptionError) -> String {
    match err {
        OptionError::Invalid { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// A diagnostic for `at` (relative to profile `index`): placed on the line
/// where the profile writes the key, else where `[defaults]` does, else on
/// the profile's closest written ancestor.
fn locate(file: &str, doc: &Document, index: usize, label: &str, at: &KeyPath, message: String) -> Diagnostic {
    let in_profile = KeyPath(vec![Seg::Key("profiles".to_owned()), Seg::Index(index)]).join(at);
    let in_defaults = path(&["defaults"]).join(at);
    let (line, shown) = if !doc.has(&in_profile) && !at.0.is_empty() && doc.has(&in_defaults) {
        (doc.line(&in_defaults), in_defaults.to_string())
    } else {
        let mut shown = format!("profiles[{label}]");
        if !at.0.is_empty() {
            if matches!(at.0.first(), Some(Seg::Key(_))) {
                shown.push('.');
            }
            shown.push_str(&at.to_string());
        }
        (doc.line(&in_profile), shown)
    };
    Diagnostic { file: file.to_owned(), line, path: shown, message }
}
