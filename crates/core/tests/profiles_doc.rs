//! docs/profiles.md is the reference of every profile key: each key the schema accepts (the
//! profile's own keys and those of its tables: `storage`, `security_context`, `ingress`,
//! `network_policy`, patches, options, choices, free text, hub parameters) is named there, so the two cannot
//! drift apart.

use fleetspawn_core::profiles::hub_parameters::HubParameterSpec;
use fleetspawn_core::profiles::spec::{
    ChoiceSpec, FreeTextSpec, IngressSpec, NetworkPolicySpec, OptionSpec, PatchSpec, ReadinessSpec, SecuritySpec, StorageSpec,
};
use fleetspawn_core::profiles::ProfileSpec;
use serde::Serialize;
use serde_json::{json, Value};

/// The keys a value of a schema type serializes with (every field: none is skipped when set).
fn keys(value: impl Serialize) -> Vec<String> {
    match serde_json::to_value(value).expect("serializes") {
        Value::Object(map) => map.keys().cloned().collect(),
        other => panic!("not a table: {other}"),
    }
}

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/profiles.md")).expect("docs/profiles.md")
}

/// Whether the doc names `key` in code (`` `key` ``, `` `key.…` ``), or `` `parent.key` ``.
fn named(doc: &str, parent: Option<&str>, key: &str) -> bool {
    let shown = match parent {
        Some(p) => format!("{p}.{key}"),
        None => key.to_string(),
    };
    doc.contains(&format!("`{shown}`")) || doc.contains(&format!("`{shown}.")) || doc.contains(&format!("`{shown},")) || doc.contains(&format!(", `{shown}`"))
}

#[test]
fn every_key_of_the_schema_is_in_the_reference() {
    let doc = doc();
    let storage: StorageSpec = serde_json::from_value(json!({ "capacity": "1Gi" })).expect("storage");
    let patch: PatchSpec = serde_json::from_value(json!({ "target": { "kind": "Pod" }, "patch": "" })).expect("patch");
    let tables: Vec<(Option<&str>, Vec<String>)> = vec![
        (None, keys(ProfileSpec::default())),
        (Some("storage"), keys(storage)),
        (Some("security_context"), keys(SecuritySpec::default())),
        (Some("ingress"), keys(IngressSpec::default())),
        (Some("network_policy"), keys(NetworkPolicySpec::default())),
        (Some("target"), keys(&patch.target)),
        (None, keys(&patch)),
        (None, keys(OptionSpec::default())),
        (Some("free_text"), keys(FreeTextSpec::default())),
        (None, keys(HubParameterSpec::default())),
        (Some("readiness"), keys(ReadinessSpec::default())),
    ];
    let mut missing = Vec::new();
    for (parent, keys) in &tables {
        for key in keys {
            if !named(&doc, *parent, key) {
                missing.push(parent.map_or_else(|| key.clone(), |p| format!("{p}.{key}")));
            }
        }
    }
    // A choice's keys appear as `choices.<key>.display_name`, `.description`, `choices.<key>.override`.
    for key in keys(ChoiceSpec::default()) {
        if !doc.contains(&format!("`choices.<key>.{key}`")) && !doc.contains(&format!("`.{key}`")) {
            missing.push(format!("choices.<key>.{key}"));
        }
    }
    assert!(missing.is_empty(), "keys of the profile schema that docs/profiles.md does not name: {missing:?}");
}

#[test]
fn a_key_the_reference_does_not_name_is_found() {
    assert!(!named("| `image` | string |", None, "no_such_key"));
    assert!(named("| `cpu_limit`, `cpu_guarantee` | quantity |", None, "cpu_guarantee"));
    assert!(named("| `storage.capacity` | quantity |", Some("storage"), "capacity"));
    assert!(!named("| `capacity` | quantity |", Some("storage"), "capacity"));
}
