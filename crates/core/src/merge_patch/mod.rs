//! Client-side strategic merge patch (SMP), with the semantics of
//! `kubectl patch --type strategic`.
//!
//! There is no Rust implementation of Kubernetes' strategic merge patch, so
//! this module re-implements what `k8s.io/apimachinery/pkg/util/strategicpatch`
//! does when a patch is *applied* (`StrategicMergePatch`, which is what
//! `kubectl patch --local --type strategic` runs), on [`serde_json::Value`]s.
//!
//! # Semantics
//!
//! * Objects are merged key by key; a `null` value deletes the key.
//! * A list is replaced whole unless its field is tagged
//!   `patchStrategy:"merge"`. Then a list of objects is merged item by item,
//!   items matched by the field's merge key (`containers` by `name`, container
//!   `ports` by `containerPort`, ...), and a list of primitives (`finalizers`)
//!   is merged as a set. Items the patch mentions are ordered as in the patch;
//!   items only in the original keep their relative order and are interleaved
//!   with them; a new item therefore goes *before* the original items that
//!   follow it (to the front, if the patch names no original item).
//! * Directives:
//!   * `$patch: replace` in an object replaces the object (the rest of that
//!     patch object is used verbatim); as a list item it replaces the list with
//!     the other items.
//!   * `$patch: delete` in an object empties it (the key stays, holding `{}`);
//!     as a list item it deletes the items with the same merge key value.
//!   * `$patch: merge` (the default) is rejected wherever it is written, as
//!     kubectl does.
//!   * `$retainKeys: [..]` drops every key of the original object that is not
//!     listed (and every key the patch sets must be listed).
//!   * `$deleteFromPrimitiveList/<field>: [..]` removes those values from the
//!     list `<field>`.
//!   * `$setElementOrder/<field>: [..]` gives the final order of the items
//!     named, interleaving the original-only items as kubectl does.
//! * A patch value that lands where the original has no value (or one of
//!   another JSON type) is taken as is, minus `null` object fields and minus
//!   any object carrying `$patch`: for example, `$patch: replace` on an object
//!   the original lacks yields no object at all.
//! * Some patch content is kept verbatim, as by kubectl: new items appended to
//!   a merged list (nulls included), lists that replace a list, and objects
//!   under `$patch: replace`.
//!
//! The patch metadata (`patchStrategy` / `patchMergeKey`) comes from a table
//! of the built-in kinds fleetspawn bundles use (see `schema.rs` for the
//! kinds and the source of the table). For any other kind (custom resources,
//! unknown kinds or API versions) kubectl refuses a local strategic merge
//! patch; [`strategic_merge`] falls back to a JSON merge patch (RFC 7386) with
//! the behaviour of `kubectl patch --type merge` (`evanphx/json-patch` v4):
//! like RFC 7386, but `null` object fields are also dropped inside a list
//! that replaces a missing or non-object value.
//!
//! # Known differences from kubectl
//!
//! * kubectl looks fields up in its compiled Go types and rejects a patch
//!   that merges into a field the type does not have (and matches field names
//!   case-insensitively); here such fields are simply untagged. Built-in kinds
//!   outside the table get a JSON merge patch, where kubectl would apply a
//!   strategic merge patch with their Go types.
//! * When a patch sets both `<field>` and `$deleteFromPrimitiveList/<field>`,
//!   kubectl processes them in Go's random map order; here the deletions
//!   always come last.
//! * If the original primitive list (`finalizers`) already holds duplicates,
//!   kubectl's in-place de-duplication can disturb the order it computes,
//!   depending on Go's slice capacities; here the order follows the original
//!   list as written.
//! * Go panics (and kubectl crashes) on a few malformed patches, such as list
//!   items that are `null` or objects as a merge key value; those are errors
//!   here.

mod schema;

use serde_json::{map::Entry, Map, Value};
use std::fmt;

use schema::{FieldMeta, Strategy, TypeSchema};

/// Key of the `$patch` directive.
const DIRECTIVE: &str = "$patch";
const DELETE: &str = "delete";
const REPLACE: &str = "replace";
/// Key of the `$retainKeys` directive.
const RETAIN_KEYS: &str = "$retainKeys";
/// Prefix of `$deleteFromPrimitiveList/<field>`.
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
/// Prefix of `$setElementOrder/<field>`.
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

type JsonMap = Map<String, Value>;

/// Why a patch could not be applied. `path` names the JSON path where it
/// failed, list items written as `[<merge key>=<value>]` (or `[<index>]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergePatchError {
    /// The original object or the patch is not a JSON object.
    #[error("the {0} must be a JSON object")]
    NotAnObject(&'static str),
    /// A `$patch` directive with a value other than `replace` or `delete`.
    #[error("{path}: $patch directive {directive} is not supported")]
    UnsupportedDirective { path: String, directive: String },
    /// A list item (or `$setElementOrder` entry) without the field's merge key.
    #[error("{path}: list item {item} has no merge key {key:?}")]
    MissingMergeKey { path: String, key: String, item: String },
    /// A list of objects that would have to be merged but whose field has no
    /// merge key.
    #[error("{path}: cannot merge a list of objects without a merge key")]
    NoMergeKey { path: String },
    /// A list whose items cannot be merged: of different JSON types, `null`,
    /// lists, or (for `$setElementOrder`) no items at all.
    #[error("{path}: {reason}")]
    InvalidList { path: String, reason: &'static str },
    /// A value of the wrong JSON type where a list is needed.
    #[error("{path}: expected a list, found {found}")]
    NotAList { path: String, found: String },
    /// A `$deleteFromPrimitiveList` or `$setElementOrder` key without
    /// `/<field>`.
    #[error("{path}: directive key {key:?} must have the form {prefix}/<field>")]
    MalformedDirectiveKey { path: String, key: String, prefix: &'static str },
    /// A `$retainKeys` directive that is not a list, or that omits a key the
    /// patch sets.
    #[error("{path}: invalid $retainKeys: {reason}")]
    InvalidRetainKeys { path: String, reason: String },
    /// A `$setElementOrder` list that is not a list or contradicts the order
    /// of the patch list.
    #[error("{path}: invalid $setElementOrder: {reason}")]
    InvalidElementOrder { path: String, reason: String },
}

type Result<T, E = MergePatchError> = std::result::Result<T, E>;

/// Applies a strategic merge patch to a full object (apiVersion/kind select the schema).
///
/// Kinds without merge-key information get a JSON merge patch instead, as
/// described in the [module documentation](self).
///
/// # Errors
///
/// Returns a [`MergePatchError`] naming the failing JSON path when the patch
/// is malformed: an unknown `$patch` directive, a list item without its merge
/// key, a malformed `$retainKeys` / `$setElementOrder` /
/// `$deleteFromPrimitiveList` directive, lists mixing JSON types, or when the
/// original or the patch is not a JSON object.
pub fn strategic_merge(original: &Value, patch: &Value) -> Result<Value, MergePatchError> {
    let original = original.as_object().ok_or(MergePatchError::NotAnObject("original"))?;
    let patch = patch.as_object().ok_or(MergePatchError::NotAnObject("patch"))?;
    let api_version = original.get("apiVersion").and_then(Value::as_str);
    let kind = original.get("kind").and_then(Value::as_str);
    let schema = api_version.zip(kind).and_then(|(api_version, kind)| TypeSchema::for_kind(api_version, kind));
    let merged = match schema {
        Some(schema) => merge_map(original.clone(), patch.clone(), Some(schema), &JsonPath::default())?,
        None => json_merge_patch(original.clone(), patch.clone()),
    };
    Ok(Value::Object(merged))
}

/// A JSON path for error messages, e.g. `spec.containers[name=app].env`.
#[derive(Debug, Default)]
struct JsonPath(String);

impl JsonPath {
    fn field(&self, key: &str) -> Self {
        if self.0.is_empty() {
            Self(key.to_owned())
        } else {
            Self(format!("{}.{key}", self.0))
        }
    }

    /// The path of the list item whose merge key `key` is `value`.
    fn item(&self, key: &str, value: &Value) -> Self {
        let value = match value {
            Value::String(value) => value.clone(),
            value => value.to_string(),
        };
        Self(format!("{}[{key}={value}]", self.0))
    }

    fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("<root>")
        } else {
            f.write_str(&self.0)
        }
    }
}

fn unsupported_directive(path: &JsonPath, directive: &Value) -> MergePatchError {
    MergePatchError::UnsupportedDirective { path: path.to_string(), directive: directive.to_string() }
}

fn missing_merge_key(path: &JsonPath, key: &str, item: &Value) -> MergePatchError {
    MergePatchError::MissingMergeKey { path: path.to_string(), key: key.to_owned(), item: item.to_string() }
}

fn invalid_list(path: &JsonPath, reason: &'static str) -> MergePatchError {
    MergePatchError::InvalidList { path: path.to_string(), reason }
}

/// The JSON types Go tells apart when it decodes a document (integers and
/// floats are different types to kubectl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Integer,
    Float,
    String,
    List,
    Object,
}

impl Kind {
    fn of(value: &Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(_) => Self::Bool,
            Value::Number(number) if number.is_f64() => Self::Float,
            Value::Number(_) => Self::Integer,
            Value::String(_) => Self::String,
            Value::Array(_) => Self::List,
            Value::Object(_) => Self::Object,
        }
    }
}

/// Equality of merge key values and set members, as Go's `==` on decoded
/// JSON: primitives of the same type and value. Objects and lists never match.
fn primitive_eq(left: &Value, right: &Value) -> bool {
    !matches!(left, Value::Object(_) | Value::Array(_)) && left == right
}

/// The patch for one object, split by kind of key.
struct ObjectPatch {
    retain_keys: Option<Value>,
    /// `$setElementOrder/<field>` as `(field, order)`.
    element_orders: Vec<(String, Value)>,
    /// `$deleteFromPrimitiveList/<field>` as `(field, values)`.
    deletions: Vec<(String, Value)>,
    /// Everything else: the fields to merge.
    fields: JsonMap,
}

impl ObjectPatch {
    fn split(patch: JsonMap, path: &JsonPath) -> Result<Self> {
        let mut split = Self { retain_keys: None, element_orders: Vec::new(), deletions: Vec::new(), fields: JsonMap::new() };
        for (key, value) in patch {
            if key == RETAIN_KEYS {
                split.retain_keys = Some(value);
            } else if let Some(field) = directive_field(&key, SET_ELEMENT_ORDER, path)? {
                split.element_orders.push((field, value));
            } else if let Some(field) = directive_field(&key, DELETE_FROM_PRIMITIVE_LIST, path)? {
                split.deletions.push((field, value));
            } else {
                split.fields.insert(key, value);
            }
        }
        Ok(split)
    }
}

/// The field named by a `<prefix>/<field>` directive key; `None` if `key`
/// does not start with `prefix`.
fn directive_field(key: &str, prefix: &'static str, path: &JsonPath) -> Result<Option<String>> {
    if !key.starts_with(prefix) {
        return Ok(None);
    }
    match key.split_once('/') {
        Some((head, field)) if head == prefix => Ok(Some(field.to_owned())),
        _ => Err(MergePatchError::MalformedDirectiveKey { path: path.to_string(), key: key.to_owned(), prefix }),
    }
}

/// Merges `patch` into the object `original` (`mergeMap` in apimachinery).
fn merge_map(mut original: JsonMap, mut patch: JsonMap, schema: Option<TypeSchema>, path: &JsonPath) -> Result<JsonMap> {
    if let Some(directive) = patch.remove(DIRECTIVE) {
        return match directive.as_str() {
            Some(REPLACE) => Ok(patch),
            Some(DELETE) => Ok(JsonMap::new()),
            _ => Err(unsupported_directive(path, &directive)),
        };
    }
    let ObjectPatch { retain_keys, element_orders, deletions, mut fields } = ObjectPatch::split(patch, path)?;
    if let Some(retain_keys) = retain_keys {
        apply_retain_keys(&mut original, &fields, &retain_keys, path)?;
    }
    for (field, order) in element_orders {
        apply_element_order(&mut original, &mut fields, &field, order, schema, path)?;
    }
    for (key, value) in fields {
        merge_field(&mut original, key, value, schema, ListMode::Patch, path)?;
    }
    for (key, value) in deletions {
        merge_field(&mut original, key, value, schema, ListMode::DeleteFromPrimitiveList, path)?;
    }
    Ok(original)
}

/// Applies `$retainKeys`: checks that every field the patch sets is listed,
/// then drops the unlisted keys of `original`.
fn apply_retain_keys(original: &mut JsonMap, fields: &JsonMap, retain_keys: &Value, path: &JsonPath) -> Result<()> {
    let invalid = |reason: String| MergePatchError::InvalidRetainKeys { path: path.to_string(), reason };
    let Value::Array(retained) = retain_keys else {
        return Err(invalid(format!("expected a list, found {retain_keys}")));
    };
    let is_retained = |key: &str| retained.iter().any(|k| k.as_str() == Some(key));
    if let Some((key, _)) = fields.iter().find(|(key, value)| !value.is_null() && !is_retained(key)) {
        return Err(invalid(format!("the patch sets {key:?}, which is not listed")));
    }
    original.retain(|key, _| is_retained(key));
    Ok(())
}

/// How a patch field applies to a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListMode {
    /// A plain patch field: lists are merged or replaced as the schema says.
    Patch,
    /// A `$deleteFromPrimitiveList/<field>` value: it lists values to remove.
    DeleteFromPrimitiveList,
}

/// Merges one field of the patch into `original` (the body of `mergeMap`'s
/// loop).
fn merge_field(original: &mut JsonMap, key: String, value: Value, schema: Option<TypeSchema>, mode: ListMode, path: &JsonPath) -> Result<()> {
    if value.is_null() {
        original.remove(&key);
        return Ok(());
    }
    let meta = schema::field(schema, &key);
    let field_path = path.field(&key);
    match original.entry(key) {
        Entry::Occupied(mut slot) if Kind::of(slot.get()) == Kind::of(&value) => {
            let current = slot.get_mut();
            *current = match (std::mem::take(current), value) {
                (Value::Object(current), Value::Object(patch)) if meta.strategy != Strategy::Replace => {
                    Value::Object(merge_map(current, patch, meta.schema, &field_path)?)
                }
                (Value::Array(current), Value::Array(patch)) if meta.strategy == Strategy::Merge || mode == ListMode::DeleteFromPrimitiveList => {
                    Value::Array(merge_list(current, patch, &meta, mode, &field_path)?.items)
                }
                (_, value) => value,
            };
        }
        // A deletion list only acts on a list that is there.
        _ if mode == ListMode::DeleteFromPrimitiveList => {}
        Entry::Occupied(slot) => match remove_directives(drop_null_fields(value)) {
            Some(value) => *slot.into_mut() = value,
            None => {
                slot.remove();
            }
        },
        Entry::Vacant(slot) => {
            if let Some(value) = remove_directives(drop_null_fields(value)) {
                slot.insert(value);
            }
        }
    }
    Ok(())
}

/// The result of merging two lists.
struct MergedList {
    items: Vec<Value>,
    /// The original list as kubectl still sees it afterwards, which orders
    /// the items of a `$setElementOrder` directive (see [`merge_object_list`]).
    server_order: Vec<Value>,
}

/// The JSON type shared by all `items`, `None` if there are none.
fn element_kind<'a>(items: impl IntoIterator<Item = &'a Value>, path: &JsonPath) -> Result<Option<Kind>> {
    let mut kinds = items.into_iter().map(Kind::of);
    let Some(first) = kinds.next() else {
        return Ok(None);
    };
    if kinds.any(|kind| kind != first) {
        return Err(invalid_list(path, "list items are not all of the same JSON type"));
    }
    match first {
        Kind::List => Err(invalid_list(path, "lists of lists cannot be merged")),
        Kind::Null => Err(invalid_list(path, "null list items cannot be merged")),
        kind => Ok(Some(kind)),
    }
}

/// Merges a list field with `patchStrategy: merge`, or removes values from
/// it for `$deleteFromPrimitiveList` (`mergeSlice` in apimachinery).
fn merge_list(original: Vec<Value>, patch: Vec<Value>, meta: &FieldMeta, mode: ListMode, path: &JsonPath) -> Result<MergedList> {
    match element_kind(original.iter().chain(&patch), path)? {
        None => Ok(MergedList { items: original, server_order: Vec::new() }),
        Some(Kind::Object) => {
            let key = meta.merge_key.ok_or_else(|| MergePatchError::NoMergeKey { path: path.to_string() })?;
            merge_object_list(into_objects(original), into_objects(patch), key, meta.schema, path)
        }
        Some(_) if mode == ListMode::DeleteFromPrimitiveList => Ok(MergedList {
            items: original.into_iter().filter(|item| !patch.iter().any(|deleted| primitive_eq(deleted, item))).collect(),
            server_order: Vec::new(),
        }),
        Some(_) => {
            let mut union: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for item in original.iter().chain(&patch) {
                if !union.iter().any(|member| primitive_eq(member, item)) {
                    union.push(item.clone());
                }
            }
            let items = order_items(union, &patch, &original, Identity::Value, path)?;
            Ok(MergedList { items, server_order: original })
        }
    }
}

/// The objects of a list whose items are known to be objects.
fn into_objects(items: Vec<Value>) -> Vec<JsonMap> {
    items
        .into_iter()
        .filter_map(|item| match item {
            Value::Object(object) => Some(object),
            _ => None,
        })
        .collect()
}

/// Merges a list of objects by merge key `key`, applying `$patch` list items.
///
/// Besides the merged list, this reproduces the list kubectl orders
/// `$setElementOrder` against afterwards: Go deletes list items in place, so
/// the original list's backing array ends up holding the surviving items, then
/// the first appended patch items, then stale copies of its former last items.
fn merge_object_list(original: Vec<JsonMap>, patch: Vec<JsonMap>, key: &str, schema: Option<TypeSchema>, path: &JsonPath) -> Result<MergedList> {
    let original_len = original.len();
    let mut survivors = original;
    // Values Go leaves behind in the slots the deletions free, last slot first.
    let mut stale = Vec::new();
    let mut additions = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Some(directive) = item.get(DIRECTIVE) else {
            additions.push(item);
            continue;
        };
        match directive.as_str() {
            Some(DELETE) => {
                let value = item.get(key).ok_or_else(|| missing_merge_key(path, key, &Value::Object(item.clone())))?;
                while let Some(index) = position_by_key(&survivors, key, value) {
                    stale.extend(survivors.last().cloned());
                    survivors.remove(index);
                }
            }
            Some(REPLACE) => replace = true,
            _ => return Err(unsupported_directive(path, directive)),
        }
    }
    let backing_array = |live: &[JsonMap]| -> Vec<Value> {
        (0..original_len).filter_map(|slot| live.get(slot).or_else(|| stale.get(original_len - 1 - slot)).cloned().map(Value::Object)).collect()
    };

    if replace {
        // The other items replace the list as they are; nothing is merged.
        if let Some(item) = additions.iter().find(|item| !item.contains_key(key)) {
            return Err(missing_merge_key(path, key, &Value::Object(item.clone())));
        }
        return Ok(MergedList { server_order: backing_array(&survivors), items: additions.into_iter().map(Value::Object).collect() });
    }

    let base: Vec<Value> = survivors.iter().cloned().map(Value::Object).collect();
    let patch_order: Vec<Value> = additions.iter().cloned().map(Value::Object).collect();
    let mut merged = survivors;
    for addition in additions {
        let value = addition.get(key).ok_or_else(|| missing_merge_key(path, key, &Value::Object(addition.clone())))?;
        match position_by_key(&merged, key, value) {
            Some(index) => {
                let item_path = path.item(key, value);
                let current = std::mem::take(&mut merged[index]);
                merged[index] = merge_map(current, addition, schema, &item_path)?;
            }
            None => merged.push(addition),
        }
    }
    let server_order = backing_array(&merged);
    let merged: Vec<Value> = merged.into_iter().map(Value::Object).collect();
    let items = order_items(merged, &patch_order, &base, Identity::MergeKey(key), path)?;
    Ok(MergedList { items, server_order })
}

/// Index of the first object whose merge key `key` equals `value`.
fn position_by_key(objects: &[JsonMap], key: &str, value: &Value) -> Option<usize> {
    objects.iter().position(|object| object.get(key).is_some_and(|v| primitive_eq(v, value)))
}

/// Applies `$setElementOrder/<field>` (`mergePatchIntoOriginal` in
/// apimachinery): merges the patch list `field` if there is one, then orders
/// the result.
fn apply_element_order(original: &mut JsonMap, fields: &mut JsonMap, field: &str, order: Value, schema: Option<TypeSchema>, path: &JsonPath) -> Result<()> {
    let list_path = path.field(field);
    let invalid = |reason: String| MergePatchError::InvalidElementOrder { path: list_path.to_string(), reason };
    let Value::Array(order) = order else {
        return Err(invalid(format!("expected a list, found {order}")));
    };
    let meta = schema::field(schema, field);
    let identity = meta.merge_key.map_or(Identity::Value, Identity::MergeKey);
    for (index, entry) in order.iter().enumerate() {
        identity.require(entry, &list_path.index(index))?;
    }
    let original_list = take_list(original.get_mut(field), &list_path)?;
    let patch_list = take_list(fields.get_mut(field), &list_path)?;
    fields.remove(field);
    if original_list.is_none() && patch_list.is_none() {
        return Ok(());
    }
    let kind =
        element_kind(original_list.iter().chain(&patch_list).flatten(), &list_path)?.ok_or_else(|| invalid_list(&list_path, "no list items to order"))?;
    if kind == Kind::Object && identity == Identity::Value {
        return Err(MergePatchError::NoMergeKey { path: list_path.to_string() });
    }
    if let Some(patch_list) = &patch_list {
        check_element_order(patch_list, &order, identity, &list_path)?;
    }

    let (merged, server_order) = match (original_list, patch_list) {
        (Some(original_list), Some(patch_list)) if meta.strategy == Strategy::Merge => {
            let merged = merge_list(original_list, patch_list, &meta, ListMode::Patch, &list_path)?;
            (merged.items, merged.server_order)
        }
        (Some(original_list), Some(patch_list)) => (patch_list, original_list),
        (Some(original_list), None) => (original_list.clone(), original_list),
        (None, patch_list) => (patch_list.into_iter().flatten().filter_map(remove_directives).collect(), Vec::new()),
    };
    let ordered = order_items(merged, &order, &server_order, identity, &list_path)?;
    original.insert(field.to_owned(), Value::Array(ordered));
    Ok(())
}

/// Takes the list out of `slot`, if there is a value.
fn take_list(slot: Option<&mut Value>, path: &JsonPath) -> Result<Option<Vec<Value>>> {
    match slot {
        None => Ok(None),
        Some(Value::Array(items)) => Ok(Some(std::mem::take(items))),
        Some(other) => Err(MergePatchError::NotAList { path: path.to_string(), found: other.to_string() }),
    }
}

/// Checks that the patch list names its items in the order of the
/// `$setElementOrder` list (`validatePatchWithSetOrderList` in apimachinery).
/// Items deleted by `$patch: delete` are not ordered; other directive items
/// are skipped while there are entries of `order` left.
fn check_element_order(patch: &[Value], order: &[Value], identity: Identity<'_>, path: &JsonPath) -> Result<()> {
    if order.is_empty() {
        return Ok(());
    }
    let out_of_order =
        |item: &Value| MergePatchError::InvalidElementOrder { path: path.to_string(), reason: format!("patch list item {item} is missing or out of order") };
    let mut next = 0;
    for (index, item) in patch.iter().enumerate() {
        let directive = item.get(DIRECTIVE);
        if matches!(identity, Identity::MergeKey(_)) && directive.and_then(Value::as_str) == Some(DELETE) {
            continue;
        }
        if next == order.len() {
            return Err(out_of_order(item));
        }
        if directive.is_some() {
            continue;
        }
        let id = identity.require(item, &path.index(index))?;
        let offset = order[next..].iter().position(|entry| identity.of(entry).is_some_and(|e| primitive_eq(e, id))).ok_or_else(|| out_of_order(item))?;
        next += offset + 1;
    }
    Ok(())
}

/// What identifies a list item when lists are merged or ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Identity<'k> {
    /// A primitive is its own identity.
    Value,
    /// An object is identified by its merge key.
    MergeKey(&'k str),
}

impl Identity<'_> {
    fn of(self, item: &Value) -> Option<&Value> {
        match self {
            Self::Value => Some(item),
            Self::MergeKey(key) => item.get(key),
        }
    }

    /// Like [`Identity::of`], with an error for an item lacking its merge key.
    fn require<'v>(self, item: &'v Value, path: &JsonPath) -> Result<&'v Value> {
        match self {
            Self::Value => Ok(item),
            Self::MergeKey(key) => item.get(key).ok_or_else(|| missing_merge_key(path, key, item)),
        }
    }

    /// Index of the first item of `list` with the same identity as `item`.
    fn position(self, list: &[Value], item: &Value) -> Option<usize> {
        let id = self.of(item)?;
        list.iter().position(|candidate| self.of(candidate).is_some_and(|c| primitive_eq(c, id)))
    }
}

/// Orders merged list items as kubectl does (`normalizeElementOrder`): the
/// items named in `patch_order` in that order, the others in the order of
/// `server_order`, the two interleaved by [`interleave`].
fn order_items(items: Vec<Value>, patch_order: &[Value], server_order: &[Value], identity: Identity<'_>, path: &JsonPath) -> Result<Vec<Value>> {
    let mut from_patch = Vec::new();
    let mut server_only = Vec::new();
    for item in items {
        let id = identity.require(&item, path)?;
        let in_patch = patch_order.iter().any(|entry| identity.of(entry).is_some_and(|e| primitive_eq(e, id)));
        if in_patch {
            from_patch.push(item);
        } else {
            server_only.push(item);
        }
    }
    from_patch.sort_by_key(|item| identity.position(patch_order, item));
    server_only.sort_by_key(|item| identity.position(server_order, item));
    Ok(interleave(server_only, from_patch, server_order, identity))
}

/// Merges two ordered lists (`mergeSortedSlice` in apimachinery): an
/// original-only item goes first only while it precedes the next patch item
/// in `server_order`; a patch item not in `server_order` goes before all
/// remaining original-only items.
fn interleave(server_only: Vec<Value>, from_patch: Vec<Value>, server_order: &[Value], identity: Identity<'_>) -> Vec<Value> {
    let mut merged = Vec::with_capacity(server_only.len() + from_patch.len());
    let mut server_only = server_only.into_iter().peekable();
    let mut from_patch = from_patch.into_iter().peekable();
    loop {
        let take_server_item = match (server_only.peek(), from_patch.peek()) {
            (Some(server_item), Some(patch_item)) => matches!(
                (
                    identity.position(server_order, server_item),
                    identity.position(server_order, patch_item),
                ),
                (Some(server_index), Some(patch_index)) if server_index < patch_index
            ),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return merged,
        };
        let next = if take_server_item { server_only.next() } else { from_patch.next() };
        merged.extend(next);
    }
}

/// Removes every object carrying a `$patch` directive (`removeDirectives`);
/// `None` if `value` itself carries one.
fn remove_directives(value: Value) -> Option<Value> {
    match value {
        Value::Object(object) if object.contains_key(DIRECTIVE) => None,
        Value::Object(object) => {
            Some(Value::Object(object.into_iter().filter_map(|(key, value)| remove_directives(value).map(|value| (key, value))).collect()))
        }
        Value::Array(items) => Some(Value::Array(items.into_iter().filter_map(remove_directives).collect())),
        value => Some(value),
    }
}

/// Drops the `null` fields of every object in `value`, at any depth, keeping
/// `null` list items (`discardNullValuesFromPatch` in apimachinery,
/// `pruneNulls` in json-patch).
fn drop_null_fields(value: Value) -> Value {
    match value {
        Value::Object(object) => {
            Value::Object(object.into_iter().filter(|(_, value)| !value.is_null()).map(|(key, value)| (key, drop_null_fields(value))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(drop_null_fields).collect()),
        value => value,
    }
}

/// JSON merge patch (RFC 7386) as `kubectl patch --type merge` applies it.
fn json_merge_patch(mut target: JsonMap, patch: JsonMap) -> JsonMap {
    for (key, value) in patch {
        if value.is_null() {
            target.remove(&key);
            continue;
        }
        let slot = target.entry(key).or_insert(Value::Null);
        *slot = match (std::mem::take(slot), value) {
            (Value::Object(current), Value::Object(patch)) => Value::Object(json_merge_patch(current, patch)),
            (Value::Object(_), value) => value,
            (_, value) => drop_null_fields(value),
        };
    }
    target
}

#[cfg(test)]
mod tests;
