//! The profiles of one file: [`ProfileSet`], and [`parse`], which checks the
//! file's top-level keys, its `[defaults]`, then each profile (its keys, its
//! settings, its options, the render check, duplicate slugs and defaults).

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;
use serde_json::Value;

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::profiles::build::{check_keys, deserialize_spec};
use crate::profiles::spec::{merge_settings, without_unset};
use crate::profiles::{derive_slug, path, ContextSpec, Issue, OptionError, Profile};
use crate::spans::{Document, KeyPath, Seg};

/// Keys only a profile's own table may set, never `[defaults]` or an option.
const IDENTITY_KEYS: &[&str] = &["slug", "display_name", "description", "default"];

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
/// Profiles are checked in parallel (on rayon's pool), then for duplicates in file order.
pub fn parse(file: &str, text: &str, render_check: &RenderCheck<'_>) -> Result<ProfileSet, Diagnostics> {
    let doc = Document::parse(text)
        .map_err(|err| Diagnostics(vec![Diagnostic { file: file.to_owned(), line: Some(err.line), path: String::new(), message: err.message }]))?;
    let mut report = Report { file, doc: &doc, diags: BTreeSet::new() };
    let empty = serde_json::Map::new();
    let top = doc.value.as_object().unwrap_or(&empty);
    for key in top.keys().filter(|k| *k != "defaults" && *k != "profiles") {
        report.add(&path(&[key]), "unknown key (a profiles file has [defaults] and [[profiles]])".to_owned());
    }
    let defaults = check_defaults(top.get("defaults"), &mut report);
    let raw_profiles = profile_tables(top.get("profiles"), &mut report);

    let checked: Vec<Checked> = raw_profiles
        .par_iter()
        .enumerate()
        .map(|(index, raw)| {
            let mut own = Report { file, doc: &doc, diags: BTreeSet::new() };
            let mut at = ProfileReport { report: &mut own, index, label: profile_label(index, raw) };
            let profile = build_profile(raw, defaults.as_ref(), &mut at);
            let valid = profile.as_ref().is_some_and(|profile| check_options(profile, &mut at) && check_render(profile, render_check, &mut at));
            Checked { label: at.label, profile, valid, diags: own.diags }
        })
        .collect();

    let mut profiles = Vec::new();
    let mut unique = Unique::default();
    for (index, checked) in checked.into_iter().enumerate() {
        report.diags.extend(checked.diags);
        let Some(profile) = checked.profile else {
            continue;
        };
        let mut at = ProfileReport { report: &mut report, index, label: checked.label };
        let unique = unique.check(&profile, &mut at);
        if checked.valid && unique {
            profiles.push(profile);
        }
    }

    let diags = report.diags;
    if diags.is_empty() {
        Ok(ProfileSet { file: file.to_owned(), doc, profiles })
    } else {
        let mut diags: Vec<_> = diags.into_iter().collect();
        diags.sort_by_key(|d| d.line);
        Err(Diagnostics(diags))
    }
}

/// How [`parse`] renders a profile for a sample user.
pub type RenderCheck<'a> = dyn Fn(&Profile) -> Result<(), Blame> + Sync + 'a;

/// One profile, checked on its own.
struct Checked {
    label: String,
    /// The profile, once its keys and settings are valid.
    profile: Option<Profile>,
    /// Whether its options and the render check passed too.
    valid: bool,
    diags: BTreeSet<Diagnostic>,
}

/// The diagnostics of one file.
struct Report<'a> {
    file: &'a str,
    doc: &'a Document,
    diags: BTreeSet<Diagnostic>,
}

impl Report<'_> {
    /// A diagnostic at `at`, a key path from the top of the file.
    fn add(&mut self, at: &KeyPath, message: String) {
        self.diags.insert(Diagnostic { file: self.file.to_owned(), line: self.doc.line(at), path: at.to_string(), message });
    }
}

/// The diagnostics of one profile: key paths are relative to it (see [`locate`]).
struct ProfileReport<'r, 'a> {
    report: &'r mut Report<'a>,
    index: usize,
    label: String,
}

impl ProfileReport<'_, '_> {
    fn add(&mut self, at: &KeyPath, message: String) {
        let report = &mut *self.report;
        report.diags.insert(locate(report.file, report.doc, self.index, &self.label, at, message));
    }

    /// Each issue, at its path below `prefix`.
    fn add_issues(&mut self, prefix: &KeyPath, issues: Vec<Issue>) {
        for issue in issues {
            self.add(&prefix.join(&issue.path), issue.message);
        }
    }
}

/// `[defaults]`: a table (none is an empty one) of valid keys that no profile's
/// identity key is among; `None` when it is not.
fn check_defaults(defaults: Option<&Value>, report: &mut Report<'_>) -> Option<Value> {
    let defaults_path = path(&["defaults"]);
    match defaults {
        None => Some(Value::Object(serde_json::Map::new())),
        Some(Value::Object(map)) => {
            let mut ok = true;
            for key in map.keys().filter(|k| IDENTITY_KEYS.contains(&k.as_str())) {
                report.add(&defaults_path.key(key), "only a profile can set this, not [defaults]".to_owned());
                ok = false;
            }
            for issue in check_keys(map) {
                report.add(&defaults_path.join(&issue.path), issue.message);
                ok = false;
            }
            ok.then(|| without_unset(&Value::Object(map.clone())))
        }
        Some(_) => {
            report.add(&defaults_path, "must be a table".to_owned());
            None
        }
    }
}

/// The `[[profiles]]` tables: at least one.
fn profile_tables<'v>(profiles: Option<&'v Value>, report: &mut Report<'_>) -> &'v [Value] {
    match profiles {
        Some(Value::Array(items)) if !items.is_empty() => items.as_slice(),
        Some(Value::Array(_)) | None => {
            report.add(&path(&["profiles"]), "no profiles: add at least one [[profiles]] table".to_owned());
            &[]
        }
        Some(_) => {
            report.add(&path(&["profiles"]), "must be an array of tables ([[profiles]])".to_owned());
            &[]
        }
    }
}

/// How diagnostics name profile `index`: its slug, else the slug of its display name, else its index.
fn profile_label(index: usize, raw: &Value) -> String {
    raw.get("slug")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| raw.get("display_name").and_then(Value::as_str).map(derive_slug))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| index.to_string())
}

/// The profile of table `raw` merged onto `defaults` (`None` when `[defaults]`
/// is wrong), once each of its keys is valid on its own.
fn build_profile(raw: &Value, defaults: Option<&Value>, at: &mut ProfileReport<'_, '_>) -> Option<Profile> {
    let Value::Object(table) = raw else {
        at.add(&KeyPath::default(), "must be a table".to_owned());
        return None;
    };
    let issues = check_keys(table);
    if !issues.is_empty() {
        at.add_issues(&KeyPath::default(), issues);
        return None;
    }
    let mut settings = defaults?.clone();
    merge_settings(&mut settings, raw);
    Profile::build(settings).map_err(|issues| at.add_issues(&KeyPath::default(), issues)).ok()
}

/// Whether every choice of every option resolves and every free text's
/// overrides give a valid profile.
fn check_options(profile: &Profile, at: &mut ProfileReport<'_, '_>) -> bool {
    let mut valid = true;
    for (name, option) in &profile.options {
        for key in option.choices.keys() {
            let values = BTreeMap::from([(name.clone(), key.clone())]);
            if let Err(err) = profile.resolve_options(&values) {
                at.add(&path(&["options", name, "choices", key, "override"]), choice_message(&err));
                valid = false;
            }
        }
        if let Some(free) = &option.free_text {
            let mut settings = profile.settings.clone();
            merge_settings(&mut settings, &free.overrides);
            if let Err(issues) = Profile::build(settings) {
                at.add_issues(&path(&["options", name, "free_text", "override"]), issues);
                valid = false;
            }
        }
    }
    valid
}

/// Whether the profile renders for a sample user.
fn check_render(profile: &Profile, render_check: &RenderCheck<'_>, at: &mut ProfileReport<'_, '_>) -> bool {
    match render_check(profile) {
        Ok(()) => true,
        Err((path, message)) => {
            at.add(&path, message);
            false
        }
    }
}

/// The slugs and the default profile seen so far in a file.
#[derive(Default)]
struct Unique {
    slugs: BTreeMap<String, usize>,
    default: Option<String>,
}

impl Unique {
    /// Whether the profile's slug is a new one and it is not a second default;
    /// records the slug and the default when they are first seen.
    fn check(&mut self, profile: &Profile, at: &mut ProfileReport<'_, '_>) -> bool {
        let mut valid = true;
        if let Some(first) = self.slugs.get(&profile.slug) {
            at.add(&path(&["slug"]), format!("duplicate slug {:?} (also profile #{})", profile.slug, first + 1));
            valid = false;
        } else {
            self.slugs.insert(profile.slug.clone(), at.index);
        }
        if profile.default {
            if let Some(first) = &self.default {
                at.add(&path(&["default"]), format!("a second default profile (profile {first:?} is already the default)"));
                valid = false;
            } else {
                self.default = Some(profile.slug.clone());
            }
        }
        valid
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
