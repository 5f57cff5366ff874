//! The input as a tree whose every value and key knows its line: what both front ends (YAML,
//! Python literals) produce and what the conversion reads.

use serde_json::{Map, Number, Value};

/// A value of the input with the line (1-based; 0 for the chart's defaults) it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the value starts.
    pub line: usize,
    /// The value.
    pub kind: Kind,
}

/// What a [`Node`] holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// YAML `null`, Python `None`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A list (or Python tuple).
    List(Vec<Node>),
    /// A mapping, in the order written.
    Map(Vec<Entry>),
    /// A Python expression that is no literal (a callable, a name, a call): its source text.
    Code(String),
}

/// One key of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key (non-string keys as their text).
    pub key: String,
    /// The key's line.
    pub line: usize,
    /// The value.
    pub value: Node,
}

impl Node {
    /// A node on `line`.
    pub fn new(line: usize, kind: Kind) -> Self {
        Node { line, kind }
    }

    /// The entry `key` of a mapping.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.kind {
            Kind::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    /// The value at `key` of a mapping, if it is set and not null.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value).filter(|v| v.kind != Kind::Null)
    }

    /// The value at a dotted path of mapping keys (`storage.dynamic.storageClass`).
    pub fn path(&self, dotted: &str) -> Option<&Node> {
        dotted.split('.').try_fold(self, |node, key| node.get(key))
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The entries, if this is a mapping.
    pub fn entries(&self) -> &[Entry] {
        match &self.kind {
            Kind::Map(entries) => entries,
            _ => &[],
        }
    }

    /// The value as JSON, or the line of the first piece of code in it (code has no value).
    pub fn to_json(&self) -> Result<Value, usize> {
        Ok(match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::from(*i),
            Kind::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::List(items) => Value::Array(items.iter().map(Node::to_json).collect::<Result<_, _>>()?),
            Kind::Map(entries) => {
                let mut map = Map::new();
                for e in entries {
                    map.insert(e.key.clone(), e.value.to_json()?);
                }
                Value::Object(map)
            }
            Kind::Code(_) => return Err(self.line),
        })
    }

    /// Helm's merge of values files: `over` onto `self`, mappings key by key, a null removes
    /// the key, anything else replaces.
    pub fn merge(&mut self, over: &Node) {
        match (&mut self.kind, &over.kind) {
            (Kind::Map(base), Kind::Map(entries)) => {
                for e in entries {
                    let existing = base.iter().position(|b| b.key == e.key);
                    match (existing, &e.value.kind) {
                        (Some(i), Kind::Null) => {
                            base.remove(i);
                        }
                        (Some(i), _) => {
                            base[i].line = e.line;
                            base[i].value.merge(&e.value);
                        }
                        (None, _) => base.push(e.clone()),
                    }
                }
                self.line = over.line;
            }
            _ => *self = over.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(line: usize, entries: Vec<(&str, Node)>) -> Node {
        Node::new(line, Kind::Map(entries.into_iter().map(|(k, v)| Entry { key: k.to_owned(), line: v.line, value: v }).collect()))
    }

    #[test]
    fn merge_is_helms_maps_merge_null_removes_lists_replace() {
        let s = |l, t: &str| Node::new(l, Kind::Str(t.to_owned()));
        let mut base = map(0, vec![("a", map(0, vec![("x", s(0, "1")), ("y", s(0, "2"))])), ("l", Node::new(0, Kind::List(vec![s(0, "p")])))]);
        let over = map(1, vec![("a", map(2, vec![("y", Node::new(3, Kind::Null)), ("z", s(4, "3"))])), ("l", Node::new(5, Kind::List(vec![])))]);
        base.merge(&over);
        assert_eq!(base.to_json(), Ok(serde_json::json!({"a": {"x": "1", "z": "3"}, "l": []})));
        assert_eq!(base.entry("a").map(|e| e.line), Some(2), "merged keys take the line of the file");
        assert_eq!(base.path("a.z").map(|n| n.line), Some(4));
    }

    #[test]
    fn code_has_no_json_value() {
        let n = map(1, vec![("f", Node::new(7, Kind::Code("lambda s: 1".into())))]);
        assert_eq!(n.to_json(), Err(7));
    }
}
