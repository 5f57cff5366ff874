//! The slug KubeSpawner gives a profile without one: `slugify(display_name)` of
//! python-slugify (its frozen "legacy" pipeline, the default), so users' saved choices match.

use unicode_normalization::UnicodeNormalization;

use super::entities;

/// python-slugify's `slugify(text)` with its default arguments.
pub fn slugify(text: &str) -> String {
    let text = text.replace('\'', "-");
    let text = transliterate(&text.nfkd().collect::<String>());
    let text = decode_references(&text);
    let text: String = text.nfkd().collect::<String>().to_lowercase().replace('\'', "");
    let text = drop_digit_commas(&text);
    let mut slug = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_matches('-').to_owned()
}

/// text-unidecode's transliteration to ASCII (after NFKD, combining marks carry nothing).
fn transliterate(text: &str) -> String {
    if text.is_ascii() {
        return text.to_owned();
    }
    text.chars()
        .map(|c| match c {
            c if c.is_ascii() => c.to_string(),
            '\u{300}'..='\u{36f}' => String::new(),
            c => deunicode::deunicode_char(c).unwrap_or_default().to_owned(),
        })
        .collect()
}

/// `&name;`, then `&#123;`, then `&#x7b;` replaced by their characters, in three passes as
/// python-slugify does (a pass with an invalid code point changes nothing).
fn decode_references(text: &str) -> String {
    let named = replace_refs(text, "&", |name| {
        let code = entities::NAMED.binary_search_by(|(n, _)| n.cmp(&name)).ok().map(|i| entities::NAMED[i].1)?;
        Some(char::from_u32(code).map_or_else(String::new, String::from))
    });
    let numeric = |prefix: &str, radix: u32, text: &str| {
        let mut invalid = false;
        let out = replace_refs(text, prefix, |digits| {
            let valid = !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
            valid.then(|| match u32::from_str_radix(digits, radix).ok().filter(|v| *v <= 0x10ffff) {
                // A lone surrogate: not a Rust char, and the slug drops it like any non-ASCII.
                Some(v) => char::from_u32(v).unwrap_or('\u{fffd}').to_string(),
                None => {
                    invalid = true;
                    String::new()
                }
            })
        });
        if invalid {
            text.to_owned()
        } else {
            out
        }
    };
    let decimal = numeric("&#", 10, &named);
    numeric("&#x", 16, &decimal)
}

/// Every `{prefix}{body};` whose body `decode` accepts, replaced by what it returns.
fn replace_refs(text: &str, prefix: &str, mut decode: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        out.push_str(&rest[..at]);
        let after = &rest[at + prefix.len()..];
        let body_len = after.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(after.len());
        let replaced = after[body_len..].starts_with(';').then(|| decode(&after[..body_len])).flatten();
        match replaced {
            Some(r) => {
                out.push_str(&r);
                rest = &after[body_len + 1..];
            }
            None => {
                out.push_str(&rest[at..at + 1]);
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `,` between two digits removed (`1,000` → `1000`).
fn drop_digit_commas(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    chars
        .iter()
        .enumerate()
        .filter(|(i, c)| !(**c == ',' && *i > 0 && chars[i - 1].is_ascii_digit() && chars.get(i + 1).is_some_and(char::is_ascii_digit)))
        .map(|(_, c)| *c)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values from python-slugify 9.2 (`from slugify import slugify`).
    #[test]
    fn as_python_slugify_does() {
        for (name, slug) in [
            ("Minimal environment", "minimal-environment"),
            ("Datascience (4 CPU, 16 GB)", "datascience-4-cpu-16-gb"),
            ("GPU server — 1× A100", "gpu-server-1x-a100"),
            ("  R & Python  ", "r-python"),
            ("Users' choice", "users-choice"),
            ("1,000 cores", "1000-cores"),
            ("Données énormes", "donnees-enormes"),
            ("Python &amp; R", "python-r"),
            ("caf&eacute;", "cafe"),
            ("&#65;&#x42;C", "abc"),
            ("___", ""),
            ("Straße", "strasse"),
            ("GPU_Large.v2", "gpu-large-v2"),
        ] {
            assert_eq!(slugify(name), slug, "{name:?}");
        }
    }
}
