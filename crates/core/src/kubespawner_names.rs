//! KubeSpawner 7's names (its default `safe` slug scheme, `kubespawner/slugs.py`) and its
//! `str.format` name templates (also read by `fleetspawn import kubespawner`), so that a
//! server moved from KubeSpawner finds its user's existing PersistentVolumeClaim
//! (`naming = "kubespawner"`, docs/profiles.md). `tests/kubespawner_names.rs` checks these
//! functions against KubeSpawner's own on a large set of awkward names.
//!
//! In short: a name that is already a valid object name (a lowercase letter first, then
//! lowercase letters, digits and `-`, a letter or digit last, at most 48 characters) and holds
//! no `--` is used as is; any other is lower-cased, each run of other characters becomes `-`,
//! and it gets `---` and the first 8 hex digits of its SHA-256. A user and a server name
//! together (`{user_server}`) are `<user>--<server>`, or one `multi_slug` with a single hash
//! when that would be too long.

use sha2::{Digest, Sha256};

/// Longest slug of one field (KubeSpawner's `_slug_max_length`).
const SLUG_MAX_LENGTH: usize = 48;
/// Hex digits of the hash suffix.
const HASH_LENGTH: usize = 8;
/// `strip_and_hash`'s default length.
const STRIP_AND_HASH_MAX: usize = 32;

fn hash_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect::<String>()[..HASH_LENGTH].to_string()
}

/// KubeSpawner's `is_valid_object_name`: 1 to 63 characters, a lowercase letter first, a
/// lowercase letter or digit last, only lowercase letters, digits and `-`.
fn is_valid_object_name(s: &str) -> bool {
    let ok_chars = s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let first = s.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let last = s.chars().last().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (1..=63).contains(&s.chars().count()) && ok_chars && first && last
}

/// KubeSpawner's `_extract_safe_name`: lower-cased, runs of anything but `[a-z0-9]` as one
/// `-`, trimmed of `-`, at most `max_length`, a letter first (`x-` added), `x` if empty.
fn extract_safe_name(name: &str, max_length: usize) -> String {
    let mut replaced = String::new();
    let mut in_run = false;
    for c in name.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            replaced.push(c);
            in_run = false;
        } else if !in_run {
            replaced.push('-');
            in_run = true;
        }
    }
    // Only ASCII is left: byte offsets are character offsets.
    let trimmed = replaced.trim_start_matches('-');
    let mut safe = trimmed[..trimmed.len().min(max_length)].trim_end_matches('-').to_string();
    if !safe.is_empty() && !safe.starts_with(|c: char| c.is_ascii_lowercase()) {
        let keep = max_length.saturating_sub(2).min(safe.len());
        safe = format!("x-{}", &safe[..keep]);
    }
    if safe.is_empty() {
        safe = "x".to_string();
    }
    safe
}

/// KubeSpawner's `strip_and_hash`: `<safe name>---<hash>` in at most `max_length`.
fn strip_and_hash(name: &str, max_length: usize) -> String {
    let name_length = max_length.saturating_sub(HASH_LENGTH + 3).max(1);
    format!("{}---{}", extract_safe_name(name, name_length), hash_hex(name.as_bytes()))
}

/// KubeSpawner's `safe_slug` with its default validity check.
pub fn safe_slug(name: &str, max_length: Option<usize>) -> String {
    let limit = max_length.unwrap_or(STRIP_AND_HASH_MAX);
    if !name.contains("--") && is_valid_object_name(name) && max_length.is_none_or(|max| name.chars().count() <= max) {
        name.to_string()
    } else {
        strip_and_hash(name, limit)
    }
}

/// KubeSpawner's `multi_slug`: the names' safe parts joined by `--`, then `---` and one hash of
/// them all (separated by the byte `0xFF`, which UTF-8 never holds).
pub fn multi_slug(names: &[&str], max_length: usize) -> String {
    let mut hasher = Sha256::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            hasher.update([0xFF]);
        }
        hasher.update(name.as_bytes());
    }
    let hash: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>()[..HASH_LENGTH].to_string();
    let per_name = (max_length - (HASH_LENGTH + 1)) / names.len().max(1);
    let name_max = per_name.saturating_sub(2).max(2);
    let parts: Vec<String> = names.iter().map(|n| extract_safe_name(n, name_max)).collect();
    format!("{}---{hash}", parts.join("--"))
}

/// The fields KubeSpawner fills in its name templates, under its `safe` scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    pub username: String,
    pub servername: String,
    pub user_server: String,
    pub unescaped_username: String,
    pub unescaped_servername: String,
}

impl Fields {
    /// As `KubeSpawner._expand_user_properties` computes them (`slug_scheme = "safe"`).
    pub fn new(user: &str, server: &str) -> Fields {
        let servername = if server.is_empty() { String::new() } else { safe_slug(server, Some(SLUG_MAX_LENGTH)) };
        let username = safe_slug(user, Some(SLUG_MAX_LENGTH));
        let user_server = if username.len() + servername.len() + 2 > SLUG_MAX_LENGTH {
            multi_slug(&[user, server], SLUG_MAX_LENGTH)
        } else if server.is_empty() {
            username.clone()
        } else {
            format!("{username}--{servername}")
        };
        Fields { username, servername, user_server, unescaped_username: user.to_string(), unescaped_servername: server.to_string() }
    }

    fn get(&self, field: &str) -> Option<&str> {
        Some(match field {
            "username" | "safe_username" => &self.username,
            "servername" | "safe_servername" => &self.servername,
            "user_server" | "safe_user_server" => &self.user_server,
            "unescaped_username" => &self.unescaped_username,
            "unescaped_servername" => &self.unescaped_servername,
            _ => return None,
        })
    }
}

/// A piece of a formatted string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Literal text.
    Text(String),
    /// A template expression (`safe_username`, `options.image`).
    Var(String),
}

/// `text` as `str.format` reads it: `{{`/`}}` are braces, `{name}` a field. `field` maps a
/// field name to its expression; a field it does not know (or a format spec) is an error
/// naming the field.
pub fn parse(text: &str, field: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => name.push(c),
                        None => return Err(format!("unclosed {{{name}")),
                    }
                }
                let expr = field(&name).ok_or_else(|| format!("{{{name}}}"))?;
                if !literal.is_empty() {
                    out.push(Segment::Text(std::mem::take(&mut literal)));
                }
                out.push(Segment::Var(expr));
            }
            '}' => return Err("a single '}'".to_owned()),
            c => literal.push(c),
        }
    }
    if !literal.is_empty() || out.is_empty() {
        out.push(Segment::Text(literal));
    }
    Ok(out)
}

/// A KubeSpawner name template (`claim-{username}{servername}`) that cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a name template fleetspawn can expand: {0} (its fields: username, servername, user_server, their safe_ forms, unescaped_username, unescaped_servername; {{{{ and }}}} for literal braces)")]
pub struct TemplateError(String);

/// Expands a KubeSpawner name template as KubeSpawner does (`str.format`, then trailing `-`
/// stripped unless the template itself ends with one).
pub fn expand(template: &str, user: &str, server: &str) -> Result<String, TemplateError> {
    let fields = Fields::new(user, server);
    let segments = parse(template, &|name| fields.get(name).map(str::to_owned)).map_err(TemplateError)?;
    let mut out: String = segments
        .into_iter()
        .map(|s| match s {
            Segment::Text(t) | Segment::Var(t) => t,
        })
        .collect();
    if !template.ends_with('-') {
        out.truncate(out.trim_end_matches('-').len());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names_stay_and_others_are_hashed_as_kubespawner_does() {
        assert_eq!(safe_slug("alice", Some(48)), "alice");
        // Values computed by kubespawner.slugs (7.1).
        assert_eq!(safe_slug("Alice", Some(48)), format!("alice---{}", hash_hex(b"Alice")));
        assert_eq!(safe_slug("a--b", Some(48)), format!("a-b---{}", hash_hex(b"a--b")));
        assert_eq!(safe_slug("1st", Some(48)), format!("x-1st---{}", hash_hex(b"1st")));
        assert_eq!(safe_slug("", Some(48)), format!("x---{}", hash_hex(b"")));
    }

    #[test]
    fn claim_templates_expand_like_kubespawners() {
        assert_eq!(expand("claim-{username}{servername}", "alice", ""), Ok("claim-alice".into()));
        assert_eq!(expand("claim-{username}--{servername}", "alice", ""), Ok("claim-alice".into()));
        assert_eq!(expand("claim-{user_server}", "alice", "lab"), Ok("claim-alice--lab".into()));
        assert_eq!(expand("x-{{literal}}-", "a", ""), Ok("x-{literal}-".into()));
        for bad in ["claim-{userid}", "claim-}", "claim-{username"] {
            assert!(expand(bad, "a", "").is_err(), "{bad}");
        }
    }

    /// What KubeSpawner 7.1 itself answered for these (tests/kubespawner_names.py).
    #[test]
    fn kubespawners_own_answers() {
        let f = Fields::new("First.Last@Example.com", "My Lab");
        assert_eq!((f.username.as_str(), f.servername.as_str()), ("first-last-example-com---07b2df34", "my-lab---8c23cccc"));
        assert_eq!(f.user_server, "first-last-exampl--my-lab---3a804681");
        assert_eq!(
            expand("claim-{username}{servername}", "First.Last@Example.com", "My Lab").unwrap(),
            "claim-first-last-example-com---07b2df34my-lab---8c23cccc"
        );
        assert_eq!(Fields::new(&"a".repeat(47), "").user_server, "aaaaaaaaaaaaaaaaa--x---b191b19d");
        assert_eq!(Fields::new("İK", "").username, "i-k---6051da22");
    }

    #[test]
    fn long_pairs_get_one_hash() {
        let user = "a".repeat(45);
        let f = Fields::new(&user, "lab");
        assert_eq!(f.user_server, multi_slug(&[&user, "lab"], 48));
        assert_eq!(f.user_server, format!("{}--lab---{}", "a".repeat(17), &f.user_server[f.user_server.len() - 8..]));
        assert_eq!(f.username, user, "a safe name of 45 stays");
    }
}
