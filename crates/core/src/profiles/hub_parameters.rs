//! Per-spawn values only the hub may set (a uid and gid, a project claim, a group: what an
//! authenticator's `auth_state` knows and a user must not forge). A profile declares each one
//! with its type and allowed values (`hub_parameters.<name>`); a start request's values are
//! checked against the declarations and reach the templates as data
//! (`hub_parameters.<name>`), typed, never as template source.

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::profiles::Issue;

/// A parameter's type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HubParameterType {
    #[default]
    String,
    Integer,
    Boolean,
}

/// A parameter as the profile declares it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubParameterSpec {
    /// `"string"` (the default), `"integer"` or `"boolean"`.
    #[serde(rename = "type")]
    pub kind: HubParameterType,
    /// What it is for (documentation).
    pub description: Option<String>,
    /// A start without it is refused (unless it has a default).
    pub required: bool,
    /// The value when the hub sends none.
    pub default: Option<Value>,
    /// Integers: the smallest value allowed.
    pub min: Option<i64>,
    /// Integers: the largest value allowed.
    pub max: Option<i64>,
    /// Strings: the whole value must match this regex.
    pub regex: Option<String>,
}

/// A declared parameter, checked.
#[derive(Debug, Clone)]
pub struct HubParameter {
    pub kind: HubParameterType,
    pub description: String,
    pub required: bool,
    pub default: Option<Value>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    matcher: Option<Regex>,
}

/// Longest string value accepted (it becomes part of objects; label values are 63).
const MAX_STRING: usize = 253;

/// Why a start request's parameters were refused, naming the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubParameterError {
    #[error("hub_parameters.{name}: this profile declares no such parameter")]
    Unknown { name: String },
    #[error("hub_parameters.{name}: required")]
    Missing { name: String },
    #[error("hub_parameters.{name}: {message}")]
    Invalid { name: String, message: String },
}

impl HubParameterError {
    /// The parameter it is about.
    pub fn name(&self) -> &str {
        match self {
            HubParameterError::Unknown { name } | HubParameterError::Missing { name } | HubParameterError::Invalid { name, .. } => name,
        }
    }
}

/// The declared parameters, by name; problems go to `issues` (at `hub_parameters.<name>...`).
pub(super) fn build(specs: &BTreeMap<String, HubParameterSpec>, issues: &mut Vec<Issue>) -> BTreeMap<String, HubParameter> {
    let mut built = BTreeMap::new();
    for (name, spec) in specs {
        let mut issue = |key: &str, message: String| {
            let mut path = vec!["hub_parameters", name.as_str()];
            if !key.is_empty() {
                path.push(key);
            }
            issues.push(Issue::at(&path, message));
        };
        if !is_identifier(name) {
            issue("", "a parameter's name must be letters, digits and '_' (templates read it as hub_parameters.<name>)".into());
        }
        let integer = spec.kind == HubParameterType::Integer;
        for (key, set) in [("min", spec.min.is_some()), ("max", spec.max.is_some())] {
            if set && !integer {
                issue(key, "only integer parameters have bounds".into());
            }
        }
        if let (Some(min), Some(max)) = (spec.min, spec.max) {
            if min > max {
                issue("min", format!("{min} is greater than max {max}"));
            }
        }
        let matcher = match &spec.regex {
            Some(_) if spec.kind != HubParameterType::String => {
                issue("regex", "only string parameters have a regex".into());
                None
            }
            Some(regex) => match Regex::new(&format!("^(?:{regex})$")) {
                Ok(m) => Some(m),
                Err(e) => {
                    issue("regex", format!("not a valid regex: {e}"));
                    None
                }
            },
            None => None,
        };
        let mut parameter = HubParameter {
            kind: spec.kind,
            description: spec.description.clone().unwrap_or_default(),
            required: spec.required,
            default: None,
            min: spec.min,
            max: spec.max,
            matcher,
        };
        if let Some(default) = &spec.default {
            match parameter.check(default) {
                Ok(value) => parameter.default = Some(value),
                Err(message) => issue("default", message),
            }
        }
        built.insert(name.clone(), parameter);
    }
    built
}

fn is_identifier(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl HubParameter {
    /// The value, typed, if it is one this parameter allows. An integer or a boolean may come
    /// as text (`"1000"`, `"true"`): hubs' hooks and the record keep them so.
    fn check(&self, given: &Value) -> Result<Value, String> {
        match self.kind {
            HubParameterType::Integer => {
                let n = match given {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => s.trim().parse::<i64>().ok(),
                    _ => None,
                }
                .ok_or_else(|| format!("{given} is not an integer"))?;
                if let Some(min) = self.min.filter(|min| n < *min) {
                    return Err(format!("{n} is less than the minimum {min}"));
                }
                if let Some(max) = self.max.filter(|max| n > *max) {
                    return Err(format!("{n} is more than the maximum {max}"));
                }
                Ok(Value::from(n))
            }
            HubParameterType::Boolean => match given {
                Value::Bool(b) => Ok(Value::Bool(*b)),
                Value::String(s) if s == "true" || s == "false" => Ok(Value::Bool(s == "true")),
                _ => Err(format!("{given} is not true or false")),
            },
            HubParameterType::String => {
                let Value::String(s) = given else { return Err(format!("{given} is not a string")) };
                if s.len() > MAX_STRING {
                    return Err(format!("is longer than {MAX_STRING} bytes"));
                }
                if s.chars().any(char::is_control) {
                    return Err("contains control characters".into());
                }
                if let Some(m) = self.matcher.as_ref().filter(|m| !m.is_match(s)) {
                    return Err(format!("{s:?} does not match {}", m.as_str()));
                }
                Ok(Value::String(s.clone()))
            }
        }
    }

    /// A value of the right type for checking a profile's templates at load: its default,
    /// else its minimum (or maximum, or 0), `false` or `""`.
    fn sample(&self) -> Value {
        self.default.clone().unwrap_or_else(|| match self.kind {
            HubParameterType::Integer => Value::from(self.min.or(self.max).unwrap_or(0)),
            HubParameterType::Boolean => Value::Bool(false),
            HubParameterType::String => Value::String(String::new()),
        })
    }
}

/// The values a start request (or a record) gives, checked against the declarations: typed,
/// with the defaults of those not given. An undeclared name, a missing required one or a
/// value out of its type or range is refused, naming the parameter.
pub fn resolve(declared: &BTreeMap<String, HubParameter>, given: &BTreeMap<String, Value>) -> Result<Map<String, Value>, HubParameterError> {
    if let Some(name) = given.keys().find(|name| !declared.contains_key(*name)) {
        return Err(HubParameterError::Unknown { name: name.clone() });
    }
    let mut values = Map::new();
    for (name, parameter) in declared {
        match (given.get(name), &parameter.default) {
            (Some(value), _) => {
                let value = parameter.check(value).map_err(|message| HubParameterError::Invalid { name: name.clone(), message })?;
                values.insert(name.clone(), value);
            }
            (None, Some(default)) => {
                values.insert(name.clone(), default.clone());
            }
            (None, None) if parameter.required => return Err(HubParameterError::Missing { name: name.clone() }),
            (None, None) => {}
        }
    }
    Ok(values)
}

/// [`resolve`] of values given as text (the record's, a command line's).
pub fn resolve_text(declared: &BTreeMap<String, HubParameter>, given: &BTreeMap<String, String>) -> Result<Map<String, Value>, HubParameterError> {
    resolve(declared, &given.iter().map(|(name, text)| (name.clone(), Value::String(text.clone()))).collect())
}

/// Values of every declared parameter for checking templates at load (see `sample`).
pub fn samples(declared: &BTreeMap<String, HubParameter>) -> Map<String, Value> {
    declared.iter().map(|(name, p)| (name.clone(), p.sample())).collect()
}

/// The values as the record keeps them: text (`1000`, `true`, `proj-a`); [`resolve`] reads
/// them back.
pub fn as_text(values: &Map<String, Value>) -> BTreeMap<String, String> {
    values
        .iter()
        .map(|(name, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (name.clone(), text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn declared() -> BTreeMap<String, HubParameter> {
        let specs: BTreeMap<String, HubParameterSpec> = serde_json::from_value(json!({
            "uid": { "type": "integer", "min": 1000, "max": 60000, "required": true },
            "project": { "regex": "[a-z0-9-]{1,63}", "default": "shared" },
            "gpu": { "type": "boolean" },
        }))
        .unwrap();
        let mut issues = Vec::new();
        let built = build(&specs, &mut issues);
        assert!(issues.is_empty(), "{issues:?}");
        built
    }

    fn given(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn values_are_typed_and_defaults_filled_in() {
        let values = resolve(&declared(), &given(json!({ "uid": 1234, "gpu": "true" }))).unwrap();
        assert_eq!(Value::Object(values.clone()), json!({ "uid": 1234, "project": "shared", "gpu": true }));
        // The record's text reads back to the same values.
        assert_eq!(resolve_text(&declared(), &as_text(&values)).unwrap(), values);
    }

    #[test]
    fn every_bad_value_names_its_parameter() {
        let d = declared();
        for (body, name, needle) in [
            (json!({ "uid": 999 }), "uid", "less than the minimum 1000"),
            (json!({ "uid": 60001 }), "uid", "more than the maximum 60000"),
            (json!({ "uid": "12a" }), "uid", "not an integer"),
            (json!({ "uid": 1.5 }), "uid", "not an integer"),
            (json!({ "uid": 1000, "project": "Bad_Name" }), "project", "does not match"),
            (json!({ "uid": 1000, "project": 7 }), "project", "not a string"),
            (json!({ "uid": 1000, "project": "a\nb" }), "project", "control characters"),
            (json!({ "uid": 1000, "gpu": "yes" }), "gpu", "not true or false"),
            (json!({ "uid": 1000, "root": true }), "root", "no such parameter"),
            (json!({}), "uid", "required"),
        ] {
            let err = resolve(&d, &given(body.clone())).unwrap_err();
            assert_eq!(err.name(), name, "{body}: {err}");
            assert!(err.to_string().starts_with(&format!("hub_parameters.{name}: ")) && err.to_string().contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn declarations_are_checked() {
        let specs: BTreeMap<String, HubParameterSpec> = serde_json::from_value(json!({
            "uid": { "type": "integer", "min": 10, "max": 1, "regex": "x" },
            "name": { "min": 1, "regex": "(" },
            "bad-name": { "default": 3 },
        }))
        .unwrap();
        let mut issues = Vec::new();
        build(&specs, &mut issues);
        let text = format!("{issues:?}");
        for needle in [
            "greater than max",
            "only string parameters have a regex",
            "only integer parameters have bounds",
            "not a valid regex",
            "letters, digits",
            "not a string",
        ] {
            assert!(text.contains(needle), "{needle} not in {text}");
        }
    }

    #[test]
    fn samples_have_the_declared_types() {
        assert_eq!(Value::Object(samples(&declared())), json!({ "uid": 1000, "project": "shared", "gpu": false }));
    }
}
