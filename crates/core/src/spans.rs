//! TOML documents as JSON values plus the line of every key, so that errors
//! found after parsing (semantic checks, serde type errors) can still name the
//! file line they come from.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use serde_json::{Map, Number, Value};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step in a path into a document: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    /// A key of a table.
    Key(String),
    /// An element of an array.
    Index(usize),
}

/// A path into a document, displayed as `a.b[0].c`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// The path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    /// The path extended by another path.
    pub fn join(&self, tail: &KeyPath) -> Self {
        Self(self.0.iter().chain(&tail.0).cloned().collect())
    }

    /// The path a `serde_path_to_error` error points at.
    pub fn from_serde(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment;
        Self(
            path.iter()
                .filter_map(|seg| match seg {
                    Segment::Seq { index } => Some(Seg::Index(*index)),
                    Segment::Map { key } => Some(Seg::Key(key.clone())),
                    Segment::Enum { .. } | Segment::Unknown => None,
                })
                .collect(),
        )
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A parsed TOML document.
#[derive(Debug, Clone)]
pub struct Document {
    /// The document's content (datetimes become strings).
    pub value: Value,
    text: String,
    /// The line of every key and array element, found on first use: only diagnostics need
    /// them, and a large file that loads cleanly never pays for them.
    lines: OnceLock<HashMap<KeyPath, usize>>,
}

/// A TOML syntax error.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    /// 1-based line of the error.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl Document {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, SyntaxError> {
        let table = DeTable::parse(text).map_err(|err| SyntaxError {
            line: err.span().map_or(1, |span| LineIndex::new(text).line(span.start)),
            message: err.message().trim().to_owned(),
        })?;
        Ok(Self { value: convert_table(table.get_ref()), text: text.to_owned(), lines: OnceLock::new() })
    }

    /// The line of `path`, or of its longest prefix present in the document.
    pub fn line(&self, path: &KeyPath) -> Option<usize> {
        let lines = self.lines();
        (0..=path.0.len()).rev().find_map(|n| lines.get(&KeyPath(path.0[..n].to_vec())).copied())
    }

    /// Whether `path` itself is written in the document.
    pub fn has(&self, path: &KeyPath) -> bool {
        self.lines().contains_key(path)
    }

    fn lines(&self) -> &HashMap<KeyPath, usize> {
        self.lines.get_or_init(|| {
            let mut lines = HashMap::new();
            // The text parsed once already, so it parses again.
            if let Ok(table) = DeTable::parse(&self.text) {
                table_lines(&LineIndex::new(&self.text), table.get_ref(), &KeyPath::default(), &mut lines);
            }
            lines
        })
    }
}

/// Where each line of a text starts: the line of an offset is a binary search, so a file
/// of many thousand keys is read in time linear in its size (not quadratic).
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        LineIndex { starts: std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect() }
    }

    /// The 1-based line of byte `offset`.
    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset)
    }
}

fn convert_table(table: &DeTable<'_>) -> Value {
    Value::Object(table.iter().map(|(key, value)| (key.get_ref().to_string(), convert(value.get_ref()))).collect::<Map<_, _>>())
}

fn convert(value: &DeValue<'_>) -> Value {
    match value {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).map_or_else(|_| Value::String(i.to_string()), Value::from),
        DeValue::Float(f) => f.as_str().parse::<f64>().ok().and_then(Number::from_f64).map_or_else(|| Value::String(f.to_string()), Value::Number),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(items) => Value::Array(items.iter().map(|item| convert(item.get_ref())).collect()),
        DeValue::Table(table) => convert_table(table),
    }
}

/// Records the line of every key below `path` in `table`.
fn table_lines(index: &LineIndex, table: &DeTable<'_>, path: &KeyPath, lines: &mut HashMap<KeyPath, usize>) {
    for (key, value) in table.iter() {
        let child = path.key(key.get_ref());
        lines.entry(child.clone()).or_insert_with(|| index.line(key.span().start));
        value_lines(index, value, &child, lines);
    }
}

fn value_lines(index: &LineIndex, value: &Spanned<DeValue<'_>>, path: &KeyPath, lines: &mut HashMap<KeyPath, usize>) {
    match value.get_ref() {
        DeValue::Array(items) => {
            for (n, item) in items.iter().enumerate() {
                let child = KeyPath(path.0.iter().cloned().chain([Seg::Index(n)]).collect());
                let start = item.span().start;
                // Elements of `[[array]]` tables may carry no span of
                // their own: fall back to the array's line.
                let line = if item.span().is_empty() && start == 0 { lines.get(path).copied().unwrap_or(1) } else { index.line(start) };
                lines.entry(child.clone()).or_insert(line);
                value_lines(index, item, &child, lines);
            }
        }
        DeValue::Table(table) => table_lines(index, table, path, lines),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_keys_and_array_tables() {
        let doc = Document::parse("a = 1\n[b]\nc = \"x\"\n\n[[p]]\nname = \"one\"\n\n[[p]]\nname = \"two\"\n[p.o.image]\nregex = \"x\"\n").unwrap();
        let path = |s: &[Seg]| KeyPath(s.to_vec());
        let k = |s: &str| Seg::Key(s.to_owned());
        assert_eq!(doc.line(&path(&[k("a")])), Some(1));
        assert_eq!(doc.line(&path(&[k("b"), k("c")])), Some(3));
        assert_eq!(doc.line(&path(&[k("p"), Seg::Index(1), k("name")])), Some(9));
        assert_eq!(doc.line(&path(&[k("p"), Seg::Index(1), k("o"), k("image"), k("regex")])), Some(11));
        // Missing keys fall back to their closest written ancestor.
        assert_eq!(doc.line(&path(&[k("b"), k("zzz")])), Some(2));
        assert_eq!(doc.value["p"][1]["o"]["image"]["regex"], "x");
    }

    #[test]
    fn offsets_map_to_lines() {
        let index = LineIndex::new("ab\ncd\n\nx");
        let lines: Vec<usize> = (0..9).map(|o| index.line(o)).collect();
        assert_eq!(lines, [1, 1, 1, 2, 2, 2, 3, 4, 4]);
    }

    #[test]
    fn syntax_errors_have_lines() {
        let err = Document::parse("a = 1\nb = \n").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn paths_display_like_code() {
        let p = KeyPath(vec![Seg::Key("a".into()), Seg::Index(2), Seg::Key("b".into())]);
        assert_eq!(p.to_string(), "a[2].b");
    }
}
