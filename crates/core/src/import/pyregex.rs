//! KubeSpawner's `validation_regex` (a Python `re` pattern, applied with `re.match`: it must
//! match a prefix of the text) as a fleetspawn free-text regex (Rust `regex`, which must match
//! the whole text): the same texts pass.

/// The fleetspawn regex accepting exactly the texts `re.match(pattern, text)` accepts, or why
/// there is none (look-arounds and back-references have no Rust equivalent).
pub fn prefix_match(pattern: &str) -> Result<String, String> {
    let converted = convert(pattern)?;
    let regex = format!("(?:{converted})(?s:.*)");
    regex::Regex::new(&regex).map_err(|e| e.to_string().lines().last().unwrap_or_default().trim().to_owned())?;
    Ok(regex)
}

fn convert(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let Some(&e) = chars.get(i + 1) else { return Err("a trailing backslash".to_owned()) };
                match e {
                    'Z' => out.push_str(r"\z"),
                    '1'..='9' => return Err(format!("back-reference \\{e}")),
                    _ => {
                        out.push('\\');
                        out.push(e);
                    }
                }
                i += 2;
            }
            '$' => {
                // Python's $ also matches before a newline that ends the text.
                out.push_str(r"(?:\n?\z)");
                i += 1;
            }
            '(' if chars.get(i + 1) == Some(&'?') => {
                let rest: String = chars[i..chars.len().min(i + 4)].iter().collect();
                for (syntax, what) in [
                    ("(?=", "look-ahead"),
                    ("(?!", "look-ahead"),
                    ("(?<=", "look-behind"),
                    ("(?<!", "look-behind"),
                    ("(?P=", "back-reference"),
                    ("(?>", "atomic group"),
                    ("(?#", "comment group"),
                    ("(?(", "conditional group"),
                ] {
                    if rest.starts_with(syntax) {
                        return Err(format!("{what} {syntax}...)"));
                    }
                }
                out.push_str("(?");
                i += 2;
            }
            '[' => {
                let end = class_end(&chars, i).ok_or("an unclosed [")?;
                out.push('[');
                let mut j = i + 1;
                if chars.get(j) == Some(&'^') {
                    out.push('^');
                    j += 1;
                }
                let first = j;
                while j < end {
                    let d = chars[j];
                    match d {
                        '\\' => {
                            out.push('\\');
                            out.extend(chars.get(j + 1));
                            j += 2;
                            continue;
                        }
                        ']' if j == first => out.push_str(r"\]"),
                        '[' | '&' | '~' => {
                            out.push('\\');
                            out.push(d);
                        }
                        '-' if chars.get(j + 1) == Some(&'-') => out.push_str(r"\-"),
                        _ => out.push(d),
                    }
                    j += 1;
                }
                out.push(']');
                i = end + 1;
            }
            '{' => match quantifier_end(&chars, i) {
                Some(end) => {
                    let body: String = chars[i + 1..end].iter().collect();
                    out.push('{');
                    out.push_str(if let Some(max) = body.strip_prefix(',') { format!("0,{max}") } else { body }.as_str());
                    out.push('}');
                    i = end + 1;
                }
                None => {
                    out.push_str(r"\{");
                    i += 1;
                }
            },
            '}' => {
                out.push_str(r"\}");
                i += 1;
            }
            '*' | '+' | '?' if chars.get(i + 1) == Some(&'+') => return Err(format!("possessive quantifier {c}+")),
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The index of the `]` closing the class opened at `start` (a `]` right after `[` or `[^` is
/// a literal, as in Python).
fn class_end(chars: &[char], start: usize) -> Option<usize> {
    let mut j = start + 1;
    if chars.get(j) == Some(&'^') {
        j += 1;
    }
    if chars.get(j) == Some(&']') {
        j += 1;
    }
    while j < chars.len() {
        match chars[j] {
            '\\' => j += 2,
            ']' => return Some(j),
            _ => j += 1,
        }
    }
    None
}

/// The index of the `}` of a quantifier `{n}`, `{n,}`, `{,m}`, `{n,m}` at `start`; Python
/// reads any other `{` as a literal.
fn quantifier_end(chars: &[char], start: usize) -> Option<usize> {
    let end = start + chars[start..].iter().position(|c| *c == '}')?;
    let body: String = chars[start + 1..end].iter().collect();
    let (min, max) = body.split_once(',').unwrap_or((&body, &body));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    (digits(min) && digits(max) && !(min.is_empty() && max.is_empty())).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(pattern: &str, text: &str) -> bool {
        let regex = regex::Regex::new(&format!("^(?:{})$", prefix_match(pattern).expect("converts"))).expect("compiles");
        regex.is_match(text)
    }

    #[test]
    fn a_prefix_match_passes_what_re_match_passes() {
        // re.match("jupyter/", ...) passes anything that starts so.
        assert!(accepts("jupyter/", "jupyter/scipy-notebook:latest"));
        assert!(!accepts("jupyter/", "xjupyter/"));
        assert!(accepts("^jupyter/.+:.+$", "jupyter/a:b"));
        assert!(accepts("^jupyter/.+:.+$", "jupyter/a:b\n"), "Python's $ matches before a final newline");
        assert!(!accepts("^jupyter/.+:.+$", "jupyter/a:b c\nd"));
        assert!(accepts("a|b", "bcd"));
        assert!(!accepts(r"\d+\Z", "12a"));
        assert!(accepts(r"[]a]+", "]a]"));
        assert!(accepts(r"[[x]", "["));
        assert!(accepts(r"x{2}y{,2}z{", "xxyyz{"));
        assert!(!accepts(r"x{2}", "x"));
        assert!(accepts(r"(?P<tag>v\d)", "v1.2"));
        assert!(accepts(r"(?i)Quay\.io/", "QUAY.IO/x"));
    }

    #[test]
    fn what_rust_cannot_express_is_refused() {
        assert_eq!(prefix_match(r"(?!root)\w+"), Err("look-ahead (?!...)".into()));
        assert_eq!(prefix_match(r"(a)\1"), Err("back-reference \\1".into()));
        assert!(prefix_match(r"(?<=a)b").is_err());
        assert!(prefix_match("(unclosed").is_err());
    }
}
