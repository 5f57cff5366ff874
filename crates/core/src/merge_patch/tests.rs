//! Unit tests: error cases and semantics that kubectl cannot show (it fails or
//! crashes on these inputs). Behaviour that kubectl can show is covered by the
//! corpus in `tests/smp_corpus`, checked against kubectl by `tests/smp_kubectl.rs`.

use super::{strategic_merge, MergePatchError};
use serde_json::{json, Value};

fn pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "finalizers": ["a"]},
        "spec": {
            "containers": [{
                "name": "notebook",
                "image": "jupyter",
                "env": [{"name": "A", "value": "1"}],
                "args": ["x"],
            }],
        },
    })
}

fn error(patch: Value) -> MergePatchError {
    match strategic_merge(&pod(), &patch) {
        Ok(merged) => panic!("expected an error, got {merged}"),
        Err(err) => err,
    }
}

#[test]
fn unknown_directive_names_its_path() {
    let err = error(json!({"spec": {"containers": [{"name": "notebook", "env": [{"$patch": "foo", "name": "A"}]}]}}));
    assert_eq!(err.to_string(), r#"spec.containers[name=notebook].env: $patch directive "foo" is not supported"#);
}

#[test]
fn merge_directive_is_rejected_in_objects_and_lists() {
    let err = error(json!({"metadata": {"$patch": "merge", "name": "q"}}));
    assert!(matches!(err, MergePatchError::UnsupportedDirective { ref path, ref directive }
        if path == "metadata" && directive == "\"merge\""));
    let err = error(json!({"spec": {"containers": [{"$patch": "merge", "name": "notebook"}]}}));
    assert!(matches!(err, MergePatchError::UnsupportedDirective { ref path, .. } if path == "spec.containers"));
}

#[test]
fn non_string_directive_is_rejected() {
    let err = error(json!({"spec": {"$patch": true}}));
    assert_eq!(err.to_string(), "spec: $patch directive true is not supported");
}

#[test]
fn delete_without_merge_key_is_rejected() {
    let err = error(json!({"spec": {"containers": [{"$patch": "delete", "image": "jupyter"}]}}));
    assert!(matches!(err, MergePatchError::MissingMergeKey { ref path, ref key, .. }
        if path == "spec.containers" && key == "name"));
}

#[test]
fn new_item_without_merge_key_is_rejected() {
    let err = error(json!({"spec": {"containers": [{"name": "notebook", "env": [{"value": "2"}]}]}}));
    assert_eq!(err.to_string(), r#"spec.containers[name=notebook].env: list item {"value":"2"} has no merge key "name""#);
}

#[test]
fn replace_list_items_need_the_merge_key() {
    let err = error(json!({"spec": {"containers": [{"$patch": "replace"}, {"image": "x"}]}}));
    assert!(matches!(err, MergePatchError::MissingMergeKey { .. }));
}

#[test]
fn non_object_inputs_are_rejected() {
    assert_eq!(strategic_merge(&pod(), &json!([1])), Err(MergePatchError::NotAnObject("patch")));
    assert_eq!(strategic_merge(&json!("pod"), &json!({})), Err(MergePatchError::NotAnObject("original")));
    assert_eq!(MergePatchError::NotAnObject("patch").to_string(), "the patch must be a JSON object");
}

#[test]
fn deleting_objects_from_a_list_without_merge_key_is_rejected() {
    let original = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ipFamilies": [{"a": 1}]}});
    let patch = json!({"spec": {"$deleteFromPrimitiveList/ipFamilies": [{"a": 1}]}});
    assert_eq!(strategic_merge(&original, &patch), Err(MergePatchError::NoMergeKey { path: "spec.ipFamilies".into() }));
}

#[test]
fn malformed_directive_keys_are_rejected() {
    for key in ["$deleteFromPrimitiveList", "$setElementOrderX/finalizers"] {
        let err = error(json!({"metadata": {key: ["a"]}}));
        assert!(matches!(err, MergePatchError::MalformedDirectiveKey { ref path, .. } if path == "metadata"), "{key}: {err}");
    }
}

#[test]
fn retain_keys_must_list_every_patched_field() {
    let err = error(json!({"spec": {"$retainKeys": ["containers"], "nodeName": "n"}}));
    assert_eq!(err.to_string(), r#"spec: invalid $retainKeys: the patch sets "nodeName", which is not listed"#);
    let err = error(json!({"spec": {"$retainKeys": "containers"}}));
    assert!(matches!(err, MergePatchError::InvalidRetainKeys { .. }));
}

#[test]
fn retain_keys_ignores_nulls_and_directive_keys() {
    let patch = json!({"spec": {"$retainKeys": ["containers"], "nodeName": null,
        "$setElementOrder/containers": [{"name": "notebook"}]}});
    let merged = strategic_merge(&pod(), &patch).expect("valid patch");
    assert_eq!(merged["spec"], pod()["spec"]);
}

#[test]
fn element_order_must_agree_with_the_patch_list() {
    let err = error(json!({"spec": {"containers": [{"name": "notebook",
        "$setElementOrder/env": [{"name": "A"}, {"name": "B"}],
        "env": [{"name": "B"}, {"name": "A"}]}]}}));
    assert!(matches!(err, MergePatchError::InvalidElementOrder { ref path, .. }
        if path == "spec.containers[name=notebook].env"));
    let err = error(json!({"metadata": {"$setElementOrder/finalizers": "a"}}));
    assert!(matches!(err, MergePatchError::InvalidElementOrder { .. }));
    let err = error(json!({"spec": {"containers": [{"name": "notebook",
        "$setElementOrder/env": [{"value": "1"}]}]}}));
    assert!(matches!(err, MergePatchError::MissingMergeKey { ref path, .. }
        if path == "spec.containers[name=notebook].env[0]"));
}

#[test]
fn element_order_needs_items() {
    let original = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "finalizers": []}});
    let patch = json!({"metadata": {"$setElementOrder/finalizers": ["a"]}});
    assert!(matches!(strategic_merge(&original, &patch), Err(MergePatchError::InvalidList { .. })));
}

#[test]
fn element_order_target_must_be_a_list() {
    let err = error(json!({"metadata": {"$setElementOrder/name": ["p"]}}));
    assert!(matches!(err, MergePatchError::NotAList { ref path, .. } if path == "metadata.name"));
}

#[test]
fn merged_lists_must_be_homogeneous() {
    let err = error(json!({"metadata": {"finalizers": [1]}}));
    assert!(matches!(err, MergePatchError::InvalidList { ref path, .. } if path == "metadata.finalizers"));
    let err = error(json!({"metadata": {"finalizers": [null]}}));
    assert!(matches!(err, MergePatchError::InvalidList { .. }));
    let original = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "finalizers": [["a"]]}});
    let patch = json!({"metadata": {"finalizers": [["b"]]}});
    assert!(matches!(strategic_merge(&original, &patch), Err(MergePatchError::InvalidList { .. })));
}

#[test]
fn root_path_is_named() {
    let err = error(json!({"$patch": "bogus"}));
    assert_eq!(err.to_string(), r#"<root>: $patch directive "bogus" is not supported"#);
}

#[test]
fn root_delete_directive_empties_the_object() {
    assert_eq!(strategic_merge(&pod(), &json!({"$patch": "delete"})), Ok(json!({})));
}

#[test]
fn unknown_kinds_get_a_json_merge_patch() {
    let original = json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "spec": {"items": [{"name": "a"}], "keep": 1}});
    let patch = json!({"spec": {"items": [{"$patch": "delete", "name": "a", "x": null}]}});
    assert_eq!(
        strategic_merge(&original, &patch),
        Ok(json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "spec": {"items": [{"$patch": "delete", "name": "a"}], "keep": 1}}))
    );
}

#[test]
fn objects_without_kind_get_a_json_merge_patch() {
    let merged = strategic_merge(&json!({"a": [1], "b": {"c": 1}}), &json!({"a": [2], "b": {"c": null}}));
    assert_eq!(merged, Ok(json!({"a": [2], "b": {}})));
}

#[test]
fn integers_and_floats_are_different_merge_keys() {
    // As in kubectl, where Go decodes 80 as int64 and 80.0 as float64.
    let original = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80}]}]}});
    let patch = json!({"spec": {"containers": [{"name": "a",
        "ports": [{"containerPort": 80.0, "name": "x"}]}]}});
    let merged = strategic_merge(&original, &patch).expect("valid patch");
    assert_eq!(merged["spec"]["containers"][0]["ports"], json!([{"containerPort": 80.0, "name": "x"}, {"containerPort": 80}]));
    let err = error(json!({"metadata": {"finalizers": [1, 1.5]}}));
    assert!(matches!(err, MergePatchError::InvalidList { .. }));
}
