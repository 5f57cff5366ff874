//! A `jupyterhub_config.py`, read without running it: the top-level assignments
//! `c.<Class>.<trait> = <value>` whose values are Python literals (dicts, lists, tuples,
//! strings, numbers, `True`, `False`, `None`). A part of a value that is no literal (a lambda,
//! a name, a call) becomes [`Kind::Code`], so the conversion can report it and go on.

use super::node::{Entry, Kind, Node};

/// A top-level statement of the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// `c.<class>.<name> = <value>`.
    Assign {
        /// The configurable class (`KubeSpawner`, `Spawner`, `JupyterHub`...).
        class: String,
        /// The trait.
        name: String,
        /// The line of the statement.
        line: usize,
        /// The value.
        value: Node,
    },
    /// Any other statement that sets configuration (`c.X.y.append(...)`, `c.X.y += ...`, one
    /// inside a block): its line and first line of text.
    Other {
        /// The line of the statement.
        line: usize,
        /// Its first line, trimmed.
        text: String,
    },
}

/// The statements of `source` that set configuration (`c.` at their start, or inside blocks).
pub fn statements(source: &str) -> Vec<Statement> {
    let p = Parser::new(source);
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < source.len() {
        let end = p.logical_line_end(pos);
        let text = &source[pos..end];
        let trimmed = text.trim_start();
        let indent = text.len() - trimmed.len();
        let start = pos + indent;
        if trimmed.starts_with("c.") {
            let line = p.line_of(start);
            match (indent, assignment_target(trimmed)) {
                (0, Some((class, name, value_offset))) => {
                    let at = p.skip_space(start + value_offset);
                    let code = || Node::new(p.line_of(at), Kind::Code(source[at..end].trim().to_owned()));
                    let value = match p.literal(at) {
                        Some((value, after)) if p.skip_space(after) >= end => value,
                        _ => code(),
                    };
                    out.push(Statement::Assign { class, name, line, value });
                }
                _ => out.push(Statement::Other { line, text: trimmed.lines().next().unwrap_or_default().trim().to_owned() }),
            }
        }
        pos = end.max(pos + 1);
    }
    out
}

/// `c.Class.name = ` → (class, name, offset of the value); `None` for anything else (`+=`,
/// method calls, `==`).
fn assignment_target(statement: &str) -> Option<(String, String, usize)> {
    let rest = statement.strip_prefix("c.")?;
    let ident = |s: &str| s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    let class_len = ident(rest);
    let after_class = rest[class_len..].strip_prefix('.')?;
    let name_len = ident(after_class);
    let after_name = &after_class[name_len..];
    let eq = after_name.trim_start();
    let value = eq.strip_prefix('=').filter(|v| !v.starts_with('='))?;
    if class_len == 0 || name_len == 0 {
        return None;
    }
    let offset = statement.len() - value.len();
    Some((rest[..class_len].to_owned(), after_class[..name_len].to_owned(), offset))
}

struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    line_starts: Vec<usize>,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        let line_starts = std::iter::once(0).chain(src.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Parser { src, bytes: src.as_bytes(), line_starts }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset)
    }

    fn peek(&self, pos: usize) -> Option<u8> {
        self.bytes.get(pos).copied()
    }

    /// The end of the logical line starting at `pos`: past brackets, strings, backslash
    /// continuations; before its newline.
    fn logical_line_end(&self, mut pos: usize) -> usize {
        let mut depth = 0usize;
        while let Some(b) = self.peek(pos) {
            match b {
                b'#' => pos = self.comment_end(pos),
                b'\'' | b'"' => pos = self.string_end(pos),
                b'(' | b'[' | b'{' => {
                    depth += 1;
                    pos += 1;
                }
                b')' | b']' | b'}' => {
                    depth = depth.saturating_sub(1);
                    pos += 1;
                }
                b'\\' => pos += 2,
                b'\n' if depth == 0 => return pos,
                _ => pos += 1,
            }
        }
        self.src.len()
    }

    fn comment_end(&self, pos: usize) -> usize {
        self.src[pos..].find('\n').map_or(self.src.len(), |i| pos + i)
    }

    /// The end of the string literal whose quote is at `pos`.
    fn string_end(&self, pos: usize) -> usize {
        let quote = self.bytes[pos];
        let triple = self.peek(pos + 1) == Some(quote) && self.peek(pos + 2) == Some(quote);
        let mut i = pos + if triple { 3 } else { 1 };
        while let Some(b) = self.peek(i) {
            if b == b'\\' {
                i += 2;
            } else if b == quote && (!triple || (self.peek(i + 1) == Some(quote) && self.peek(i + 2) == Some(quote))) {
                return i + if triple { 3 } else { 1 };
            } else if b == b'\n' && !triple {
                return i;
            } else {
                i += 1;
            }
        }
        self.src.len()
    }

    /// Past spaces, newlines, comments and backslash continuations.
    fn skip_space(&self, mut pos: usize) -> usize {
        loop {
            match self.peek(pos) {
                Some(b' ' | b'\t' | b'\r' | b'\n') => pos += 1,
                Some(b'\\') if self.peek(pos + 1) == Some(b'\n') => pos += 2,
                Some(b'#') => pos = self.comment_end(pos),
                _ => return pos,
            }
        }
    }

    /// The value at `pos` and the offset after it: a literal, else code up to the next `,`,
    /// `:` (outside a lambda) or closing bracket.
    fn value(&self, pos: usize) -> (Node, usize) {
        let start = self.skip_space(pos);
        if let Some((node, after)) = self.literal(start) {
            let next = self.skip_space(after);
            if matches!(self.peek(next), None | Some(b',' | b':' | b')' | b']' | b'}')) {
                return (node, after);
            }
        }
        let end = self.code_end(start);
        (Node::new(self.line_of(start), Kind::Code(self.src[start..end].trim().to_owned())), end)
    }

    /// The end of an expression that is no literal.
    fn code_end(&self, start: usize) -> usize {
        let mut depth = 0usize;
        let mut pos = start;
        let mut lambdas = 0usize;
        while let Some(b) = self.peek(pos) {
            match b {
                b'#' => pos = self.comment_end(pos),
                b'\'' | b'"' => pos = self.string_end(pos),
                b'(' | b'[' | b'{' => {
                    depth += 1;
                    pos += 1;
                }
                b')' | b']' | b'}' if depth == 0 => return pos,
                b')' | b']' | b'}' => {
                    depth -= 1;
                    pos += 1;
                }
                b',' if depth == 0 => return pos,
                b':' if depth == 0 && lambdas > 0 => {
                    lambdas -= 1;
                    pos += 1;
                }
                b':' if depth == 0 => return pos,
                _ if self.src[pos..].starts_with("lambda") && !self.src[..pos].ends_with(|c: char| c.is_alphanumeric() || c == '_') => {
                    lambdas += 1;
                    pos += "lambda".len();
                }
                _ => pos += 1,
            }
        }
        pos
    }

    /// A literal at `pos` (already past spaces), if there is one.
    fn literal(&self, pos: usize) -> Option<(Node, usize)> {
        let line = self.line_of(pos);
        let rest = &self.src[pos..];
        let b = self.peek(pos)?;
        match b {
            b'{' => self.dict(pos),
            b'[' => self.sequence(pos, b']'),
            b'(' => self.sequence(pos, b')'),
            b'-' | b'+' => {
                let (node, after) = self.literal(self.skip_space(pos + 1))?;
                let kind = match (b, node.kind) {
                    (b'-', Kind::Int(i)) => Kind::Int(-i),
                    (b'-', Kind::Float(f)) => Kind::Float(-f),
                    (b'+', k @ (Kind::Int(_) | Kind::Float(_))) => k,
                    _ => return None,
                };
                Some((Node::new(line, kind), after))
            }
            b'0'..=b'9' | b'.' => self.number(pos),
            _ => {
                for (word, kind) in [("True", Kind::Bool(true)), ("False", Kind::Bool(false)), ("None", Kind::Null)] {
                    if rest.starts_with(word) && !rest[word.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_') {
                        return Some((Node::new(line, kind), pos + word.len()));
                    }
                }
                self.strings(pos)
            }
        }
    }

    /// One or more adjacent string literals (concatenated, as Python does).
    fn strings(&self, pos: usize) -> Option<(Node, usize)> {
        let line = self.line_of(pos);
        let (mut text, mut after) = self.string(pos)?;
        loop {
            let next = self.skip_space(after);
            match self.string(next) {
                Some((more, end)) => {
                    text.push_str(&more);
                    after = end;
                }
                None => return Some((Node::new(line, Kind::Str(text)), after)),
            }
        }
    }

    /// One string literal: an optional `r`/`u`/`b` prefix (an f-string is no literal).
    fn string(&self, pos: usize) -> Option<(String, usize)> {
        let prefix_len = self.src[pos..].find(['\'', '"']).filter(|&n| n <= 2)?;
        let prefix = self.src[pos..pos + prefix_len].to_ascii_lowercase();
        if !matches!(prefix.as_str(), "" | "r" | "u" | "b" | "br" | "rb") {
            return None;
        }
        let raw = prefix.contains('r');
        let quote_at = pos + prefix_len;
        let end = self.string_end(quote_at);
        let quote = self.bytes[quote_at];
        let triple = self.peek(quote_at + 1) == Some(quote) && self.peek(quote_at + 2) == Some(quote);
        let q = if triple { 3 } else { 1 };
        if end < quote_at + 2 * q || self.bytes[end - 1] != quote {
            return None;
        }
        let body = &self.src[quote_at + q..end - q];
        Some((if raw { body.to_owned() } else { unescape(body) }, end))
    }

    fn number(&self, pos: usize) -> Option<(Node, usize)> {
        let rest = &self.src[pos..];
        let line = self.line_of(pos);
        if let Some(hex) = rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X")) {
            let len = hex.find(|c: char| !(c.is_ascii_hexdigit() || c == '_')).unwrap_or(hex.len());
            let value = i64::from_str_radix(&hex[..len].replace('_', ""), 16).ok()?;
            return Some((Node::new(line, Kind::Int(value)), pos + 2 + len));
        }
        let mut len = 0;
        let mut float = false;
        let chars: Vec<char> = rest.chars().take(64).collect();
        while len < chars.len() {
            let c = chars[len];
            if c.is_ascii_digit() || c == '_' {
                len += 1;
            } else if c == '.' && !float {
                float = true;
                len += 1;
            } else if (c == 'e' || c == 'E') && len > 0 {
                float = true;
                len += 1;
                if len < chars.len() && (chars[len] == '+' || chars[len] == '-') {
                    len += 1;
                }
            } else {
                break;
            }
        }
        let text: String = chars[..len].iter().filter(|c| **c != '_').collect();
        let kind = if float { Kind::Float(text.parse().ok()?) } else { Kind::Int(text.parse().ok()?) };
        if rest[len..].starts_with(|c: char| c.is_alphanumeric()) {
            return None; // 10j, 1L: not ours
        }
        Some((Node::new(line, kind), pos + len))
    }

    /// `[...]` or `(...)`: items separated by commas (a trailing one allowed). `(x)` is `x`.
    fn sequence(&self, pos: usize, close: u8) -> Option<(Node, usize)> {
        let line = self.line_of(pos);
        let mut items = Vec::new();
        let mut at = self.skip_space(pos + 1);
        let mut trailing_comma = false;
        while self.peek(at) != Some(close) {
            let (item, after) = self.value(at);
            items.push(item);
            at = self.skip_space(after);
            match self.peek(at) {
                Some(b',') => {
                    trailing_comma = true;
                    at = self.skip_space(at + 1);
                }
                Some(c) if c == close => trailing_comma = false,
                _ => return None,
            }
        }
        if close == b')' && items.len() == 1 && !trailing_comma {
            return items.pop().map(|n| (n, at + 1));
        }
        Some((Node::new(line, Kind::List(items)), at + 1))
    }

    /// `{key: value, ...}`; keys are strings or numbers.
    fn dict(&self, pos: usize) -> Option<(Node, usize)> {
        let line = self.line_of(pos);
        let mut entries = Vec::new();
        let mut at = self.skip_space(pos + 1);
        while self.peek(at) != Some(b'}') {
            let key_line = self.line_of(at);
            let (key, after) = self.literal(at)?;
            let key = match key.kind {
                Kind::Str(s) => s,
                Kind::Int(i) => i.to_string(),
                Kind::Float(f) => f.to_string(),
                Kind::Bool(b) => if b { "True" } else { "False" }.to_owned(),
                _ => return None,
            };
            at = self.skip_space(after);
            if self.peek(at) != Some(b':') {
                return None; // a set, or a comprehension
            }
            let (value, after) = self.value(at + 1);
            entries.push(Entry { key, line: key_line, value });
            at = self.skip_space(after);
            match self.peek(at) {
                Some(b',') => at = self.skip_space(at + 1),
                Some(b'}') => {}
                _ => return None,
            }
        }
        Some((Node::new(line, Kind::Map(entries)), at + 1))
    }
}

/// Python's escapes in a non-raw string; unknown escapes keep their backslash, as Python does.
fn unescape(body: &str) -> String {
    let mut out = String::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            out.push('\\');
            break;
        };
        let mut hex = |n: usize| {
            let digits: String = (0..n).filter_map(|_| chars.next()).collect();
            u32::from_str_radix(&digits, 16).ok().and_then(char::from_u32)
        };
        match e {
            '\n' => {}
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '0'..='7' => {
                let mut value = e.to_digit(8).unwrap_or_default();
                for _ in 0..2 {
                    match chars.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            value = value * 8 + d;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.extend(char::from_u32(value));
            }
            'x' => out.extend(hex(2)),
            'u' => out.extend(hex(4)),
            'U' => out.extend(hex(8)),
            '\\' | '\'' | '"' => out.push(e),
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'v' => out.push('\u{b}'),
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn assigns(src: &str) -> Vec<(String, String, usize, Result<serde_json::Value, usize>)> {
        statements(src)
            .into_iter()
            .filter_map(|s| match s {
                Statement::Assign { class, name, line, value } => Some((class, name, line, value.to_json())),
                Statement::Other { .. } => None,
            })
            .collect()
    }

    #[test]
    fn literals_of_every_kind() {
        let src = r#"c = get_config()  # noqa
import os

c.KubeSpawner.image = "quay.io/x:1"  # comment
c.KubeSpawner.cpu_limit = 2.5
c.KubeSpawner.mem_limit = '2G'
c.KubeSpawner.profile_list = [
    {
        'display_name': "GPU " 'server',  # concatenated
        "default": True,
        'n': -3, 'big': 1_000, 'none': None, 'tuple': ('a', "b",), 'one': (1),
        'raw': r'^\d+$', 'esc': 'a\tb\\c\'d\x41\u00e9',
        """triple""": '''x
y''',
    },
]
"#;
        let got = assigns(src);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!((got[0].1.as_str(), got[0].2, &got[0].3), ("image", 4, &Ok(json!("quay.io/x:1"))));
        assert_eq!(got[1].3, Ok(json!(2.5)));
        assert_eq!(got[2].3, Ok(json!("2G")));
        assert_eq!(got[3].2, 7);
        assert_eq!(
            got[3].3,
            Ok(json!([{
                "display_name": "GPU server", "default": true, "n": -3, "big": 1000, "none": null,
                "tuple": ["a", "b"], "one": 1, "raw": "^\\d+$", "esc": "a\tb\\c'dAé", "triple": "x\ny",
            }]))
        );
    }

    #[test]
    fn code_is_kept_with_its_line_and_the_rest_still_parses() {
        let src = "c.KubeSpawner.profile_list = [\n  {\n    'slug': 'a',\n    'kubespawner_override': {'cpu_limit': 1, 'image': lambda s: 'x:' + s.user.name, 'env': os.environ['X']},\n    'extra': f'{x}',\n  },\n]\nc.KubeSpawner.image = get_image()\n";
        let statements = statements(src);
        let Statement::Assign { value, .. } = &statements[0] else { panic!("{statements:?}") };
        let Kind::List(items) = &value.kind else { panic!("{value:?}") };
        let overrides = items[0].get("kubespawner_override").expect("override");
        assert_eq!(overrides.get("cpu_limit").map(|n| &n.kind), Some(&Kind::Int(1)));
        assert_eq!(overrides.get("image").map(|n| (&n.kind, n.line)), Some((&Kind::Code("lambda s: 'x:' + s.user.name".into()), 4)));
        assert_eq!(overrides.get("env").map(|n| &n.kind), Some(&Kind::Code("os.environ['X']".into())));
        assert_eq!(items[0].get("extra").map(|n| (&n.kind, n.line)), Some((&Kind::Code("f'{x}'".into()), 5)));
        assert!(
            matches!(&statements[1], Statement::Assign { name, line: 8, value: Node { kind: Kind::Code(code), .. }, .. } if name == "image" && code == "get_image()")
        );
    }

    #[test]
    fn other_configuration_statements_are_listed() {
        let src = "c.KubeSpawner.volumes.append({'name': 'x'})\nif True:\n    c.KubeSpawner.image = 'y'\nc.KubeSpawner.cpu_limit += 1\nc.Spawner.default_url = '/lab'\n";
        let s = statements(src);
        assert_eq!(s.len(), 4, "{s:?}");
        assert!(matches!(&s[0], Statement::Other { line: 1, text } if text.starts_with("c.KubeSpawner.volumes.append")));
        assert!(matches!(&s[1], Statement::Other { line: 3, .. }));
        assert!(matches!(&s[2], Statement::Other { line: 4, .. }));
        assert!(matches!(&s[3], Statement::Assign { class, line: 5, .. } if class == "Spawner"));
    }
}
