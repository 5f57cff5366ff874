//! A profile's options: built (and checked) from its `options` settings, and
//! resolved against the values a user picked.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

use crate::profiles::spec::{merge_settings, ChoiceSpec, FreeTextSpec, OptionSpec};
use crate::profiles::{Issue, Profile};

/// Keys whose strings are templates.
const TEMPLATE_KEYS: &[&str] = &["namespace", "environment", "objects", "patches"];

/// Keys an option override may not change (it may not widen access either).
const NOT_OVERRIDABLE: &[&str] = &["slug", "display_name", "description", "default", "options", "hub_parameters", "allowed_groups", "allowed_images"];

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
    pub(super) overrides: Value,
}

/// Free text accepted for an option.
#[derive(Debug, Clone)]
pub struct FreeText {
    /// Label shown to users.
    pub display_name: String,
    /// The regex as written; the whole text must match it.
    pub regex: String,
    matcher: Regex,
    pub(super) overrides: Value,
}

/// Reports an issue at a key path relative to one option.
type OptionIssue<'a> = dyn FnMut(&[&str], String) + 'a;

/// The profile's options, by key; problems go to `issues` (at `options.<key>...`).
pub(super) fn build_options(specs: &BTreeMap<String, OptionSpec>, issues: &mut Vec<Issue>) -> BTreeMap<String, ProfileOption> {
    let mut options = BTreeMap::new();
    for (name, option) in specs {
        let mut option_issue = |keys: &[&str], message: String| {
            let mut full = vec!["options", name.as_str()];
            full.extend_from_slice(keys);
            issues.push(Issue::at(&full, message));
        };
        options.insert(name.clone(), build_option(name, option, &mut option_issue));
    }
    options
}

/// One option: it needs choices or free text, and a default among several choices.
fn build_option(name: &str, option: &OptionSpec, issue: &mut OptionIssue<'_>) -> ProfileOption {
    if option.choices.is_empty() && option.free_text.is_none() {
        issue(&[], "an option needs choices, free_text or both".to_owned());
    }
    match &option.default {
        Some(d) if !option.choices.contains_key(d) => issue(&["default"], format!("{d:?} is not one of the choices ({})", keys_list(&option.choices))),
        None if option.choices.len() > 1 => issue(&["default"], format!("required: one of the choices ({})", keys_list(&option.choices))),
        _ => {}
    }
    let choices = build_choices(&option.choices, issue);
    let free_text = option.free_text.as_ref().and_then(|ft| build_free_text(name, ft, issue));
    ProfileOption {
        display_name: option.display_name.clone().unwrap_or_else(|| name.to_owned()),
        description: option.description.clone().unwrap_or_default(),
        default: option.default.clone().or_else(|| option.choices.keys().next().filter(|_| option.choices.len() == 1).cloned()),
        choices,
        free_text,
    }
}

/// The choices, by key; none may override a key of [`NOT_OVERRIDABLE`].
fn build_choices(specs: &BTreeMap<String, ChoiceSpec>, issue: &mut OptionIssue<'_>) -> BTreeMap<String, Choice> {
    let mut choices = BTreeMap::new();
    for (key, choice) in specs {
        for forbidden in choice.overrides.keys().filter(|k| NOT_OVERRIDABLE.contains(&k.as_str())) {
            issue(&["choices", key, "override", forbidden], "options cannot override this key".to_owned());
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
    choices
}

/// The free text of option `name`: its overrides may not change a key of
/// [`NOT_OVERRIDABLE`] nor put `{value}` into a template, and its regex must
/// compile (`None` when it does not).
fn build_free_text(name: &str, ft: &FreeTextSpec, issue: &mut OptionIssue<'_>) -> Option<FreeText> {
    for forbidden in ft.overrides.keys().filter(|k| NOT_OVERRIDABLE.contains(&k.as_str())) {
        issue(&["free_text", "override", forbidden], "options cannot override this key".to_owned());
    }
    // User text must never become template source.
    for key in TEMPLATE_KEYS.iter().filter(|k| ft.overrides.get(**k).is_some_and(|v| v.to_string().contains("{value}"))) {
        issue(
            &["free_text", "override", key],
            format!(
                "{{value}} cannot go into a template (user text is never template code): \
                 use {{{{ options.{name} }}}} in the template instead"
            ),
        );
    }
    // An error quotes the regex as written, when the regex alone fails to compile.
    match Regex::new(&format!("^(?:{})$", ft.regex)).map_err(|anchored| Regex::new(&ft.regex).err().unwrap_or(anchored)) {
        Ok(matcher) => Some(FreeText {
            display_name: ft.display_name.clone().unwrap_or_else(|| name.to_owned()),
            regex: ft.regex.clone(),
            matcher,
            overrides: Value::Object(ft.overrides.clone()),
        }),
        Err(err) => {
            let message = err.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
            issue(&["free_text", "regex"], format!("invalid regex: {message}"));
            None
        }
    }
}

impl Profile {
    /// Applies the user's option values: for each option, in key order, the
    /// chosen choice's overrides (or, for a value that is no choice key, the
    /// free-text overrides once the whole value matches the regex) are merged
    /// onto the profile. Options the user leaves out take their default.
    /// An image changed by an option must be in `allowed_images`.
    pub fn resolve_options(&self, values: &BTreeMap<String, String>) -> Result<ResolvedOptions, OptionError> {
        if let Some(unknown) = values.keys().find(|k| !self.options.contains_key(*k)) {
            return Err(OptionError::Unknown { option: unknown.clone(), known: keys_list(&self.options) });
        }
        // The profile so far, once an option applied (not a copy of this one before).
        let mut resolved: Option<Profile> = None;
        let mut chosen = BTreeMap::new();
        for (name, option) in &self.options {
            let Some(value) = values.get(name).or(option.default.as_ref()) else {
                continue;
            };
            let overrides = option_overrides(name, option, value)?;
            let profile = resolved.as_ref().unwrap_or(self);
            let mut settings = profile.settings.clone();
            merge_settings(&mut settings, &overrides);
            // Overrides cannot change `options` (NOT_OVERRIDABLE): the options stay this profile's.
            let next = Profile::build_with_options(settings, self.options.clone()).map_err(|issues| OptionError::Invalid {
                option: name.clone(),
                message: issues.iter().map(|i| format!("{}: {}", i.path, i.message)).collect::<Vec<_>>().join("; "),
            })?;
            if next.image != profile.image && !self.image_allowed(&next.image) {
                return Err(OptionError::ImageNotAllowed { option: name.clone(), image: next.image });
            }
            resolved = Some(next);
            chosen.insert(name.clone(), value.clone());
        }
        Ok(ResolvedOptions { profile: resolved.unwrap_or_else(|| self.clone()), chosen })
    }
}

/// The overrides `value` selects in option `name`: a choice's, else the free
/// text's once the whole value matches its regex.
fn option_overrides(name: &str, option: &ProfileOption, value: &str) -> Result<Value, OptionError> {
    if let Some(choice) = option.choices.get(value) {
        Ok(choice.overrides.clone())
    } else if let Some(free) = &option.free_text {
        if !free.matcher.is_match(value) {
            return Err(OptionError::NoMatch { option: name.to_owned(), value: value.to_owned(), regex: free.regex.clone() });
        }
        Ok(substitute_value(&free.overrides, value))
    } else {
        Err(OptionError::NotAChoice { option: name.to_owned(), value: value.to_owned(), choices: keys_list(&option.choices) })
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
