//! KubeSpawner's `{username}`-style placeholders (Python `str.format` fields) rewritten as
//! fleetspawn template variables, and literal text kept literal in templates.

use serde_json::Value;

pub use crate::kubespawner_names::{parse, Segment};

/// The fleetspawn variable of a KubeSpawner placeholder, as `_expand_user_properties` defines
/// them with the `safe` slug scheme (KubeSpawner 7's default); `None` when there is none.
pub fn variable(placeholder: &str) -> Option<&'static str> {
    Some(match placeholder {
        "username" | "safe_username" => "safe_username",
        "servername" | "safe_servername" => "safe_servername",
        "user_server" | "safe_user_server" => "key",
        "unescaped_username" => "username",
        "unescaped_servername" => "servername",
        "pod_name" => "name",
        "pvc_name" => "name",
        "namespace" => "namespace",
        _ => return None,
    })
}

/// Whether the text would be read as template syntax by minijinja.
fn has_template_syntax(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// The segments as a plain-string template (environment values): variables as `{{ var }}`,
/// literal text as is unless minijinja would read it as syntax.
pub fn plain(segments: &[Segment]) -> String {
    segments
        .iter()
        .map(|s| match s {
            Segment::Text(t) if has_template_syntax(t) || t.ends_with('{') => format!("{{{{ {} }}}}", Value::String(t.clone())),
            Segment::Text(t) => t.clone(),
            Segment::Var(v) => format!("{{{{ {v} }}}}"),
        })
        .collect()
}

/// The segments as one expression of a YAML template: `{{ "prefix-" ~ safe_username }}`.
pub fn expression(segments: &[Segment]) -> String {
    let parts: Vec<String> = segments
        .iter()
        .map(|s| match s {
            Segment::Text(t) => Value::String(t.clone()).to_string(),
            Segment::Var(v) => v.clone(),
        })
        .collect();
    format!("{{{{ {} }}}}", parts.join(" ~ "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubespawner(name: &str) -> Option<String> {
        variable(name).map(str::to_owned)
    }

    #[test]
    fn placeholders_become_variables() {
        let s = parse("/home/{username}/{servername}-{{x}}", &kubespawner).expect("parses");
        assert_eq!(
            s,
            vec![
                Segment::Text("/home/".into()),
                Segment::Var("safe_username".into()),
                Segment::Text("/".into()),
                Segment::Var("safe_servername".into()),
                Segment::Text("-{x}".into()),
            ]
        );
        assert_eq!(plain(&s), "/home/{{ safe_username }}/{{ safe_servername }}-{x}");
        assert_eq!(expression(&s), r#"{{ "/home/" ~ safe_username ~ "/" ~ safe_servername ~ "-{x}" }}"#);
        assert_eq!(plain(&parse("{unescaped_username}", &kubespawner).expect("parses")), "{{ username }}");
    }

    #[test]
    fn literal_template_syntax_stays_text() {
        let s = parse("a {{{{ b }}}} {{% c %}}", &kubespawner).expect("parses");
        assert_eq!(s, vec![Segment::Text("a {{ b }} {% c %}".into())]);
        assert_eq!(plain(&s), r#"{{ "a {{ b }} {% c %}" }}"#);
        assert_eq!(plain(&parse("plain", &kubespawner).expect("parses")), "plain");
    }

    #[test]
    fn unknown_fields_and_bad_braces_are_errors() {
        assert_eq!(parse("{userid}", &kubespawner), Err("{userid}".into()));
        assert_eq!(parse("{username:>10}", &kubespawner), Err("{username:>10}".into()));
        assert!(parse("{username", &kubespawner).is_err());
        assert!(parse("a}b", &kubespawner).is_err());
    }
}
