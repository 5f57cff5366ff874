//! Safe, stable names for a user's server.
//!
//! Kubernetes object names (DNS-1123 labels: `[a-z0-9-]`, at most 63
//! characters, starting with a letter here) and label values (`[A-Za-z0-9._-]`,
//! at most 63 characters, alphanumeric at both ends, or empty) are far stricter
//! than JupyterHub usernames and server names, which may hold unicode, `@`,
//! `.`, `_`, upper case, be empty or 200 characters long.
//!
//! This module follows kubespawner's "safe slug" scheme so names stay readable:
//!
//! * A name that is already safe is used **as is**. For object names "safe"
//!   means: a lowercase letter first, then lowercase letters, digits and single
//!   hyphens, ending with a letter or digit, short enough, and **no `--`**.
//! * Any other name is **escaped**: it is lower-cased, every run of characters
//!   outside `[a-z0-9]` becomes one `-`, leading digits and hyphens are
//!   dropped, it is truncated to leave room for the hash, and it gets the
//!   suffix `---` + the first 12 hex digits of the SHA-256 of the raw name
//!   (`x` stands in for a readable part that ends up empty).
//!
//! The [`InstanceKey`] of a (user, server) pair is at most [`MAX_KEY_LEN`]
//! (60) characters, so that the object name `fs-<key>` fits in 63:
//!
//! | user, server | key | example |
//! |---|---|---|
//! | safe, default (`""`) | `<user>` | `alice` |
//! | unsafe, default | `<escaped user>---<hash(user)>` | `alice-example-com---3b1c…` |
//! | both safe, named, fits | `<user>--<server>` | `alice--gpu` |
//! | otherwise, named | `<escaped user>--<escaped server>---<hash(user 0xFF server)>` | `alice--my-server---9f0e…` |
//!
//! Why two different pairs never get the same key: the four forms differ in
//! their hyphen runs (none; one `---`; one `--`; `--` then `---`), escaped
//! names never contain `--`, and a raw name containing `--` is never used as
//! is. Within the as-is forms the key spells the raw names; within the escaped
//! forms two keys are equal only if 48 bits of SHA-256 collide on inputs with
//! the same readable part. The `0xFF` byte between user and server in the hash
//! input cannot occur in UTF-8, so (`ab`, `c`) and (`a`, `bc`) hash differently.
//!
//! Label values ([`InstanceKey::safe_user`], [`InstanceKey::safe_server`]) use
//! the same scheme with the label-value rules (upper case, `.` and `_` allowed,
//! up to 63 characters, empty allowed). The raw names are kept in annotations.

use sha2::{Digest, Sha256};

/// Longest instance key: leaves room for the `fs-` prefix of object names.
pub const MAX_KEY_LEN: usize = 60;
/// Prefix of every object name derived from a key.
pub const OBJECT_NAME_PREFIX: &str = "fs-";
/// Longest label value Kubernetes accepts.
const MAX_LABEL_LEN: usize = 63;
/// Hex digits of SHA-256 kept in escaped names.
const HASH_LEN: usize = 12;
/// Length of `---` + hash.
const HASH_SUFFIX_LEN: usize = HASH_LEN + 3;

/// The stable identity of one (user, server) pair and its derived names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceKey {
    key: String,
    safe_user: String,
    safe_server: String,
}

impl InstanceKey {
    /// Computes the key and label values for `user`'s server `server`
    /// (`""` is the default server). Pure and deterministic.
    pub fn new(user: &str, server: &str) -> Self {
        let key = if server.is_empty() {
            safe_slug(user, MAX_KEY_LEN, is_safe_object_name)
        } else if is_safe_object_name(user) && is_safe_object_name(server) && user.len() + 2 + server.len() <= MAX_KEY_LEN {
            format!("{user}--{server}")
        } else {
            // Two names and one hash: `<user>--<server>---<hash>`.
            let per_name = (MAX_KEY_LEN - HASH_SUFFIX_LEN - 2) / 2;
            format!("{}--{}---{}", readable(user, per_name), readable(server, per_name), short_hash(&[user, server]))
        };
        Self { key, safe_user: safe_slug(user, MAX_LABEL_LEN, is_safe_label_value), safe_server: safe_slug(server, MAX_LABEL_LEN, is_safe_label_value) }
    }

    /// The DNS-1123 label (at most [`MAX_KEY_LEN`] characters) identifying
    /// the instance; the `fleetspawn.io/instance` label value.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The name of the instance's objects: `fs-<key>`, at most 63 characters.
    pub fn object_name(&self) -> String {
        format!("{OBJECT_NAME_PREFIX}{}", self.key)
    }

    /// The username as a label value (readable, unique, at most 63 characters).
    pub fn safe_user(&self) -> &str {
        &self.safe_user
    }

    /// The server name as a label value (`""` for the default server).
    pub fn safe_server(&self) -> &str {
        &self.safe_server
    }
}

/// The URL path prefix JupyterHub gives a server: `/user/<user>/` for the
/// default server and `/user/<user>/<server>/` for a named one, each name
/// percent-encoded as JupyterHub's `url_escape_path` does (only ASCII letters,
/// digits and `-._~@` are kept).
pub fn url_prefix(user: &str, server: &str) -> String {
    if server.is_empty() {
        format!("/user/{}/", url_escape(user))
    } else {
        format!("/user/{}/{}/", url_escape(user), url_escape(server))
    }
}

/// Whether `prefix` is `user`'s own path for `server` under a hub's `base_url` (`/` or
/// `/jupyter/`): exactly `<base_url>user/<user>/[<server>/]`, escaped as [`url_prefix`]
/// does. Anything else, another user's path, a deeper or shorter path or `/`, is not:
/// an ingress picks the longest matching prefix, so a wrong prefix takes another user's
/// traffic, cookies and tokens.
pub fn is_own_url_prefix(prefix: &str, base_url: &str, user: &str, server: &str) -> bool {
    let own = url_prefix(user, server);
    prefix.strip_prefix(base_url.trim_end_matches('/')).is_some_and(|rest| rest == own)
}

fn url_escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `name` itself when `is_safe(name)` and it fits in `max_len`; otherwise its escaped form `<readable>---<hash>`.
fn safe_slug(name: &str, max_len: usize, is_safe: fn(&str) -> bool) -> String {
    if name.len() <= max_len && is_safe(name) {
        name.to_owned()
    } else {
        format!("{}---{}", readable(name, max_len - HASH_SUFFIX_LEN), short_hash(&[name]))
    }
}

/// A readable, object-name-safe rendering of `name` in at most `max_len`
/// characters: lowercase letters, digits and single hyphens, a letter first,
/// no hyphen last; `x` when nothing readable is left.
fn readable(name: &str, max_len: usize) -> String {
    let mut out = String::new();
    for c in name.to_lowercase().chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_start_matches(|c: char| c == '-' || c.is_ascii_digit());
    // Only ASCII is left, so byte slicing is safe.
    let truncated = trimmed[..trimmed.len().min(max_len)].trim_end_matches('-');
    if truncated.is_empty() {
        "x".to_owned()
    } else {
        truncated.to_owned()
    }
}

/// First [`HASH_LEN`] hex digits of SHA-256 over the parts separated by `0xFF`.
fn short_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0xFF]);
        }
        hasher.update(part.as_bytes());
    }
    hasher.finalize().iter().take(HASH_LEN / 2).map(|b| format!("{b:02x}")).collect()
}

/// A DNS-1123 label starting with a lowercase letter and holding no `--`
/// (length is checked by the caller).
fn is_safe_object_name(s: &str) -> bool {
    !s.contains("--")
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A Kubernetes label value holding no `--` (length is checked by the caller).
fn is_safe_label_value(s: &str) -> bool {
    s.is_empty()
        || (!s.contains("--")
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)))
}

/// Whether `s` is a DNS-1123 label (what Kubernetes requires of namespace and
/// Service names): `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `s` is a DNS-1123 subdomain (most object names): dot-separated labels, at most
/// 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// The path an Ingress rule must carry for a URL prefix: its non-ASCII characters decoded
/// (ingress controllers compare the request's decoded path: Traefik and ingress-nginx do),
/// every ASCII escape kept (decoding `` ` `` or `"` could reach into a controller's own rule
/// syntax; such names are not routed rather than routed wrongly).
pub fn route_path(prefix: &str) -> String {
    let bytes = prefix.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|b| !b.is_ascii());
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| prefix.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Kubernetes' own rule for label values.
    fn label_ok(s: &str) -> bool {
        s.len() <= MAX_LABEL_LEN
            && (s.is_empty()
                || (s.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && s.ends_with(|c: char| c.is_ascii_alphanumeric())
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))))
    }

    #[test]
    fn safe_names_stay_readable() {
        let k = InstanceKey::new("alice", "");
        assert_eq!(k.key(), "alice");
        assert_eq!(k.object_name(), "fs-alice");
        assert_eq!(k.safe_user(), "alice");
        assert_eq!(k.safe_server(), "");
        assert_eq!(InstanceKey::new("alice", "gpu").key(), "alice--gpu");
        assert_eq!(InstanceKey::new("Alice", "").safe_user(), "Alice");
        assert_eq!(InstanceKey::new("a.b_c", "").safe_user(), "a.b_c");
    }

    #[test]
    fn fixed_vectors() {
        // Hashes are the first 12 hex digits of `sha256sum` of the raw name
        // (for pairs: user, byte 0xFF, server).
        let cases = [
            ("Alice", "", "alice---3bc51062973c"),
            ("alice@example.com", "", "alice-example-com---ff8d9819fc0e"),
            ("", "", "x---e3b0c44298fc"),
            ("1234", "", "x---03ac674216f3"),
            ("a--b", "", "a-b---90827a2e5636"),
            ("alice", "My Server", "alice--my-server---5a65aff7d3a7"),
            ("élodie", "", "lodie---36bac2631d17"),
        ];
        for (user, server, want) in cases {
            assert_eq!(InstanceKey::new(user, server).key(), want, "{user:?} {server:?}");
        }
        assert_eq!(InstanceKey::new("alice@example.com", "").safe_user(), "alice-example-com---ff8d9819fc0e");
    }

    #[test]
    fn long_names_are_truncated_with_a_hash() {
        let user = "a".repeat(200);
        let k = InstanceKey::new(&user, "");
        assert_eq!(k.key().len(), MAX_KEY_LEN);
        assert!(k.key().starts_with(&"a".repeat(45)));
        assert_eq!(k.object_name().len(), 63);
        assert_eq!(InstanceKey::new(&user, &user).key().len(), 59);
        assert!(k.safe_user().len() <= 63);
    }

    #[test]
    fn pairs_that_concatenate_alike_stay_distinct() {
        let a = InstanceKey::new("ab", "c--d");
        let b = InstanceKey::new("ab--c", "d");
        let c = InstanceKey::new("ab--c--d", "");
        assert_ne!(a.key(), b.key());
        assert_ne!(a.key(), c.key());
        assert_ne!(b.key(), c.key());
        assert_ne!(InstanceKey::new("a-b", "c").key(), InstanceKey::new("a", "b-c").key());
    }

    #[test]
    fn url_prefixes_follow_jupyterhub() {
        assert_eq!(url_prefix("alice", ""), "/user/alice/");
        assert_eq!(url_prefix("alice", "gpu"), "/user/alice/gpu/");
        assert_eq!(url_prefix("a@b.c d/é", "x y"), "/user/a@b.c%20d%2F%C3%A9/x%20y/");
    }

    #[test]
    fn route_paths_decode_only_non_ascii() {
        assert_eq!(route_path("/user/j%C3%BCrgen/"), "/user/jürgen/");
        assert_eq!(route_path("/user/first.last/"), "/user/first.last/");
        // ASCII escapes stay: a decoded quote or slash would change what a rule says.
        assert_eq!(route_path("/user/a%60)%20%7C%7C%20PathPrefix(%60/"), "/user/a%60)%20%7C%7C%20PathPrefix(%60/");
        assert_eq!(route_path("/user/a%2Fb/"), "/user/a%2Fb/");
        assert_eq!(route_path("/user/a@b.c%20d%2F%C3%A9/x%20y/"), "/user/a@b.c%20d%2Fé/x%20y/");
        // Not UTF-8 once decoded, or a broken escape: as given.
        assert_eq!(route_path("/user/%C3/"), "/user/%C3/");
        assert_eq!(route_path("/user/%E2%82/%"), "/user/%E2%82/%");
        assert_eq!(route_path("/user/%zz/"), "/user/%zz/");
    }

    #[test]
    fn subdomains_are_dotted_labels() {
        assert!(is_dns1123_subdomain("traefik"));
        assert!(is_dns1123_subdomain("gw.example-1"));
        for bad in ["", "Gw", "a..b", ".a", "a.", "a_b", &"a".repeat(254)] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn only_the_users_own_url_prefix_is_theirs() {
        assert!(is_own_url_prefix("/user/alice/", "/", "alice", ""));
        assert!(is_own_url_prefix("/user/alice/lab/", "/", "alice", "lab"));
        assert!(is_own_url_prefix("/jupyter/user/first.last/", "/jupyter/", "first.last", ""));
        assert!(is_own_url_prefix("/user/j%C3%BCrgen/", "/", "jürgen", ""));
        for other in
            ["/user/bob/", "/user/bob/api/", "/", "/user/", "/user/alice", "/user/alice/api/", "/user/alice/lab/", "/x/user/alice/", "/user/alice/../bob/"]
        {
            assert!(!is_own_url_prefix(other, "/", "alice", ""), "{other}");
        }
        assert!(!is_own_url_prefix("/user/alice/", "/jupyter/", "alice", ""), "outside the hub's base URL");
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns1123_label("jupyter-1"));
        assert!(!is_dns1123_label("Jupyter"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }

    proptest! {
        #[test]
        fn keys_are_valid_labels(user in any::<String>(), server in any::<String>()) {
            let k = InstanceKey::new(&user, &server);
            prop_assert!(k.key().len() <= MAX_KEY_LEN);
            prop_assert!(is_dns1123_label(k.key()), "{:?}", k.key());
            prop_assert!(k.key().starts_with(|c: char| c.is_ascii_lowercase()));
            prop_assert!(is_dns1123_label(&k.object_name()));
            prop_assert!(label_ok(k.safe_user()), "{:?}", k.safe_user());
            prop_assert!(label_ok(k.safe_server()), "{:?}", k.safe_server());
            prop_assert_eq!(&k, &InstanceKey::new(&user, &server));
        }

        #[test]
        fn distinct_pairs_get_distinct_keys(
            a in "[a-zA-Z0-9@._ -]{0,70}", b in "[a-z0-9-]{0,12}",
            c in "[a-zA-Z0-9@._ -]{0,70}", d in "[a-z0-9-]{0,12}",
        ) {
            prop_assume!((&a, &b) != (&c, &d));
            let (k1, k2) = (InstanceKey::new(&a, &b), InstanceKey::new(&c, &d));
            prop_assert_ne!(k1.key(), k2.key());
        }

        #[test]
        fn distinct_arbitrary_pairs_get_distinct_keys(
            a in any::<String>(), b in any::<String>(), c in any::<String>(), d in any::<String>(),
        ) {
            prop_assume!((&a, &b) != (&c, &d));
            let (k1, k2) = (InstanceKey::new(&a, &b), InstanceKey::new(&c, &d));
            prop_assert_ne!(k1.key(), k2.key());
            if a != c {
                let (u1, u2) = (InstanceKey::new(&a, ""), InstanceKey::new(&c, ""));
                prop_assert_ne!(u1.safe_user(), u2.safe_user());
            }
        }

        #[test]
        fn url_prefixes_are_plain_paths(user in any::<String>(), server in any::<String>()) {
            let p = url_prefix(&user, &server);
            prop_assert!(p.starts_with("/user/") && p.ends_with('/'));
            let segments = if server.is_empty() { 1 } else { 2 };
            prop_assert_eq!(p.matches('/').count(), 2 + segments);
            prop_assert!(p.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~@%/".contains(&b)));
        }
    }
}
