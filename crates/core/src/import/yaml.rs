//! A YAML document (a values file) as a [`Node`] tree with the line of every value and key.

use std::collections::BTreeMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

use super::node::{Entry, Kind, Node};
use super::ImportError;

/// Parses the first document of `text`; an empty file is an empty mapping.
pub fn parse(text: &str) -> Result<Node, ImportError> {
    let mut builder = Builder::default();
    Parser::new_from_str(text).load(&mut builder, false).map_err(|e| ImportError::Yaml { line: e.marker().line(), message: e.info().to_owned() })?;
    if let Some(message) = builder.error {
        return Err(ImportError::Yaml { line: builder.error_line, message });
    }
    Ok(builder.root.unwrap_or_else(|| Node::new(1, Kind::Map(Vec::new()))))
}

enum Frame {
    List { line: usize, anchor: usize, items: Vec<Node> },
    Map { line: usize, anchor: usize, entries: Vec<Entry>, key: Option<(String, usize)> },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: BTreeMap<usize, Node>,
    root: Option<Node>,
    error: Option<String>,
    error_line: usize,
}

impl Builder {
    fn insert(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::List { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some((scalar_text(&node), node.line)),
                Some((k, line)) => {
                    if entries.iter().any(|e| e.key == k) && self.error.is_none() {
                        self.error = Some(format!("duplicate key {k:?}"));
                        self.error_line = line;
                    }
                    entries.push(Entry { key: k, line, value: node });
                }
            },
        }
    }
}

/// A mapping key as text (keys of values files are strings; others keep their YAML text).
fn scalar_text(node: &Node) -> String {
    match &node.kind {
        Kind::Str(s) | Kind::Code(s) => s.clone(),
        Kind::Null => String::new(),
        Kind::Bool(b) => b.to_string(),
        Kind::Int(i) => i.to_string(),
        Kind::Float(f) => f.to_string(),
        Kind::List(_) | Kind::Map(_) => format!("{:?}", node.to_json().unwrap_or_default()),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::List { line, anchor, items: Vec::new() }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map { line, anchor, entries: Vec::new(), key: None }),
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::List { line, anchor, items }) => self.insert(Node::new(line, Kind::List(items)), anchor),
                Some(Frame::Map { line, anchor, entries, .. }) => self.insert(Node::new(line, Kind::Map(entries)), anchor),
                None => {}
            },
            Event::Scalar(text, style, anchor, tag) => {
                let kind = if style != TScalarStyle::Plain || tag.is_some() {
                    Kind::Str(text)
                } else {
                    match Yaml::from_str(&text) {
                        Yaml::Null => Kind::Null,
                        Yaml::Boolean(b) => Kind::Bool(b),
                        Yaml::Integer(i) => Kind::Int(i),
                        Yaml::Real(r) => r.parse().map_or(Kind::Str(r), Kind::Float),
                        _ => Kind::Str(text),
                    }
                };
                self.insert(Node::new(line, kind), anchor);
            }
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().map(|mut n| {
                    n.line = line;
                    n
                });
                self.insert(node.unwrap_or(Node::new(line, Kind::Null)), 0);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_lines_types_and_anchors() {
        let text =
            "# comment\nsingleuser:\n  image:\n    name: x\n    tag: \"1.0\"\n  cpu: {limit: 2, guarantee: 0.5}\n  cmd: null\n  list: &l [a, b]\n  again: *l\n";
        let root = parse(text).expect("parses");
        assert_eq!(root.entry("singleuser").map(|e| e.line), Some(2));
        assert_eq!(root.path("singleuser.image.tag").map(|n| (n.line, n.as_str())), Some((5, Some("1.0"))));
        assert_eq!(root.path("singleuser.cpu.guarantee").map(|n| &n.kind), Some(&Kind::Float(0.5)));
        assert_eq!(root.path("singleuser.cpu.limit").map(|n| &n.kind), Some(&Kind::Int(2)));
        assert!(root.path("singleuser.cmd").is_none(), "null is unset");
        assert_eq!(root.path("singleuser.again").map(|n| (n.line, n.to_json())), Some((9, Ok(serde_json::json!(["a", "b"])))));
    }

    #[test]
    fn errors_name_the_line() {
        match parse("a: 1\nb: [1, 2\n") {
            Err(ImportError::Yaml { line, .. }) => assert!(line >= 2, "{line}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse("a: 1\na: 2\n"), Err(ImportError::Yaml { line: 2, .. })));
        assert_eq!(parse("").expect("empty").entries().len(), 0);
    }
}
