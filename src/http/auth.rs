//! Who is calling, and what they may do.
//!
//! Two kinds of callers reach the daemon:
//!
//! - **API clients** present `Authorization: Bearer <token>` (or JupyterHub's `token <token>`).
//!   Tokens live in the config only as SHA-256 hashes; a presented token is hashed and compared
//!   against every configured hash in constant time. Each token has a [`Role`]: `admin`
//!   (everything), `hub` (acts on behalf of any user, as a JupyterHub does) or one user.
//! - **Browser users** come through an authenticating reverse proxy (oauth2-proxy style) that
//!   sets a user header and a groups header. Those headers are believed only when the TCP peer
//!   is one of the configured `trusted_proxies`; from anyone else they are ignored.
//!
//! Browser form posts carry a CSRF token bound to a signed, HttpOnly, SameSite=Strict session
//! cookie and to the user's name (see [`Auth::csrf_token`] and [`Auth::verify_csrf`]).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use axum::http::{header, HeaderMap};
use axum_extra::extract::cookie::{Cookie, Key, SameSite, SignedCookieJar};
use hmac::{Hmac, Mac};
use ipnet::IpNet;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, Role};

/// Name of the signed session cookie that anchors CSRF tokens.
pub const SESSION_COOKIE: &str = "fleetspawn_session";
/// Name of the hidden form field carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf_token";
/// Longest user name, server name or header value accepted as an identity.
pub const MAX_NAME_LEN: usize = 255;

/// Problems in the `[auth]` configuration, found at startup.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("auth.tokens[{name}]: sha256 must be 64 hex characters")]
    BadHash { name: String },
    #[error("auth.tokens: the name {0:?} is used twice")]
    DuplicateName(String),
    #[error("auth.cookie_secret must be at least 32 bytes long")]
    ShortSecret,
    #[error("auth.cookie_secret_file {path}: {source}")]
    SecretFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("auth.user_header / auth.groups_header: {0:?} is not a valid header name")]
    BadHeader(String),
}

struct TokenEntry {
    name: String,
    hash: [u8; 32],
    role: Role,
}

/// The authentication state built from [`AuthConfig`] at startup.
pub struct Auth {
    tokens: Vec<TokenEntry>,
    trusted: Vec<IpNet>,
    user_header: header::HeaderName,
    groups_header: header::HeaderName,
    admin_users: Vec<String>,
    admin_groups: Vec<String>,
    key: Key,
    secure_cookies: bool,
    local_user: Option<String>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth").field("tokens", &self.tokens.len()).field("trusted", &self.trusted).finish()
    }
}

impl Auth {
    /// Validates the config. Without a cookie secret a random one is generated: sessions (and
    /// so form tokens) then last only until the daemon restarts, which is logged.
    pub fn new(config: &AuthConfig) -> Result<Auth, AuthConfigError> {
        let mut tokens: Vec<TokenEntry> = Vec::with_capacity(config.tokens.len());
        for t in &config.tokens {
            if tokens.iter().any(|e| e.name == t.name) {
                return Err(AuthConfigError::DuplicateName(t.name.clone()));
            }
            let hash = hex::decode(t.sha256.trim())
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(|| AuthConfigError::BadHash { name: t.name.clone() })?;
            tokens.push(TokenEntry { name: t.name.clone(), hash, role: t.role.clone() });
        }
        let secret = match (&config.cookie_secret, &config.cookie_secret_file) {
            (Some(s), _) => Some(s.0.clone()),
            (None, Some(path)) => {
                Some(std::fs::read_to_string(path).map_err(|source| AuthConfigError::SecretFile { path: path.clone(), source })?.trim_end().to_string())
            }
            (None, None) => None,
        };
        let key = match secret {
            Some(s) if s.len() < 32 => return Err(AuthConfigError::ShortSecret),
            Some(s) => Key::derive_from(s.as_bytes()),
            None => {
                tracing::warn!("no auth.cookie_secret configured: browser sessions end when the daemon restarts");
                Key::generate()
            }
        };
        let header = |name: &str| header::HeaderName::try_from(name).map_err(|_| AuthConfigError::BadHeader(name.to_string()));
        Ok(Auth {
            tokens,
            trusted: config.trusted_proxies.clone(),
            user_header: header(&config.user_header)?,
            groups_header: header(&config.groups_header)?,
            admin_users: config.admin_users.clone(),
            admin_groups: config.admin_groups.clone(),
            key,
            secure_cookies: config.secure_cookies,
            local_user: config.local_user.clone().filter(|u| !u.is_empty()),
        })
    }

    /// The key that signs cookies.
    pub fn cookie_key(&self) -> &Key {
        &self.key
    }

    /// Identifies the caller of a request from its headers and TCP peer.
    ///
    /// A bearer token wins over proxy headers; a token that matches nothing is an error even if
    /// proxy headers are present, so a typo never silently downgrades to another identity.
    pub fn authenticate(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<Caller, AuthError> {
        if let Some(token) = bearer_token(headers) {
            return self.verify_token(token);
        }
        let Some(user) = headers.get(&self.user_header) else {
            // The Host must name this machine too: a page elsewhere that rebinds its DNS name
            // to 127.0.0.1 makes the user's browser a loopback peer, but with its own Host.
            return match (&self.local_user, peer) {
                (Some(local), Some(ip)) if ip.is_loopback() && host_is_loopback(headers) => {
                    let admin = self.admin_users.contains(local);
                    Ok(Caller::User { user: local.clone(), groups: Vec::new(), admin })
                }
                _ => Err(AuthError::Missing),
            };
        };
        if !peer.is_some_and(|ip| self.is_trusted(ip)) {
            tracing::warn!(peer = ?peer, header = %self.user_header, "identity header from an untrusted peer ignored");
            return Err(AuthError::Missing);
        }
        // A proxy sets the identity headers once. More than one means something between the
        // proxy and here added its own (or the proxy passed the client's through): which
        // one the proxy meant cannot be known, so none is believed.
        if headers.get_all(&self.user_header).iter().count() > 1 || headers.get_all(&self.groups_header).iter().count() > 1 {
            tracing::warn!(peer = ?peer, "identity headers sent more than once; refused");
            return Err(AuthError::BadIdentity);
        }
        let user = user.to_str().map_err(|_| AuthError::BadIdentity)?.trim();
        validate_name(user).map_err(|_| AuthError::BadIdentity)?;
        if user.is_empty() {
            return Err(AuthError::BadIdentity);
        }
        let groups: Vec<String> = headers
            .get(&self.groups_header)
            .and_then(|v| v.to_str().ok())
            .into_iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|g| !g.is_empty() && validate_name(g).is_ok())
            .map(String::from)
            .collect();
        let admin = self.admin_users.iter().any(|a| a == user) || groups.iter().any(|g| self.admin_groups.contains(g));
        Ok(Caller::User { user: user.to_string(), groups, admin })
    }

    fn verify_token(&self, token: &str) -> Result<Caller, AuthError> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare against every entry, without stopping at a match, so timing tells nothing.
        let mut found: Option<&TokenEntry> = None;
        for entry in &self.tokens {
            if bool::from(entry.hash.ct_eq(&presented)) {
                found = Some(entry);
            }
        }
        found.map(|e| Caller::Token { name: e.name.clone(), role: e.role.clone() }).ok_or(AuthError::BadToken)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Returns the jar with a session cookie (creating one if absent) and the CSRF token for
    /// forms rendered for `caller` in that session.
    pub fn csrf_token(&self, jar: SignedCookieJar, caller: &Caller) -> (SignedCookieJar, String) {
        let (jar, session) = match jar.get(SESSION_COOKIE) {
            Some(c) => {
                let value = c.value().to_string();
                (jar, value)
            }
            None => {
                let session = uuid::Uuid::new_v4().simple().to_string();
                let cookie =
                    Cookie::build((SESSION_COOKIE, session.clone())).http_only(true).secure(self.secure_cookies).same_site(SameSite::Strict).path("/").build();
                (jar.add(cookie), session)
            }
        };
        let token = self.csrf_mac(&session, caller);
        (jar, token)
    }

    /// Checks a form's CSRF token against the session cookie and the caller.
    pub fn verify_csrf(&self, jar: &SignedCookieJar, caller: &Caller, presented: &str) -> Result<(), AuthError> {
        let session = jar.get(SESSION_COOKIE).ok_or(AuthError::Csrf)?;
        let expected = self.csrf_mac(session.value(), caller);
        if bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
            Ok(())
        } else {
            Err(AuthError::Csrf)
        }
    }

    fn csrf_mac(&self, session: &str, caller: &Caller) -> String {
        // The signing key is 32 bytes, any length is accepted by HMAC: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.signing()).unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(b"fleetspawn-csrf\0");
        mac.update(session.as_bytes());
        mac.update(b"\0");
        mac.update(caller.label().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token")).then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Checks a user, server or group name: at most [`MAX_NAME_LEN`] bytes, no control characters,
/// no `/`. The empty string passes (it is the default server's name).
pub fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.len() > MAX_NAME_LEN {
        Err("is longer than 255 bytes")
    } else if name.chars().any(char::is_control) {
        Err("contains control characters")
    } else if name.chars().any(is_invisible_format) {
        Err("contains invisible formatting characters (zero-width, byte order mark or bidirectional controls)")
    } else if name.contains('/') || name.contains('\\') {
        Err("contains '/' or '\\'")
    } else if name == "." || name == ".." {
        Err("is '.' or '..'")
    } else {
        Ok(())
    }
}

/// Unicode format characters (category Cf) that render as nothing or reorder text: a name
/// with one looks like another user's name (`alice` and `alice\u{200b}`) or reads differently
/// than it is (`\u{202e}`), in logs, on pages and in URLs.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Why a request could not be authenticated or authorized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send a bearer token, or come through the authenticating proxy")]
    Missing,
    #[error("the API token is not valid")]
    BadToken,
    #[error("the identity sent by the proxy is not a valid user name")]
    BadIdentity,
    #[error("the form has expired or did not come from this site; reload the page and try again")]
    Csrf,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An API client holding a configured token.
    Token { name: String, role: Role },
    /// A browser user identified by the trusted proxy.
    User { user: String, groups: Vec<String>, admin: bool },
}

impl Caller {
    /// The user this caller is, if it is one user (a proxy user or a single-user token).
    pub fn user(&self) -> Option<&str> {
        match self {
            Caller::Token { role: Role::User(u), .. } => Some(u),
            Caller::User { user, .. } => Some(user),
            Caller::Token { .. } => None,
        }
    }

    /// Whether the caller may see everything (the registry, every user's servers).
    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Token { role: Role::Admin, .. } | Caller::User { admin: true, .. })
    }

    /// Whether the caller may start, stop and see `user`'s servers.
    pub fn can_act_for(&self, user: &str) -> bool {
        match self {
            Caller::Token { role: Role::Admin | Role::Hub, .. } => true,
            _ => self.is_admin() || self.user() == Some(user),
        }
    }

    /// Whether the caller may use a profile limited to `allowed_groups` (empty: everyone).
    /// Admins and the hub (which authorizes its own users) may use every profile.
    pub fn can_use_profile(&self, allowed_groups: &[String]) -> bool {
        if allowed_groups.is_empty() || self.is_admin() {
            return true;
        }
        match self {
            Caller::Token { role, .. } => *role == Role::Hub,
            Caller::User { groups, .. } => groups.iter().any(|g| allowed_groups.contains(g)),
        }
    }

    /// How the caller appears in logs: `token:NAME` or `user:NAME`. Never a secret.
    pub fn label(&self) -> String {
        match self {
            Caller::Token { name, .. } => format!("token:{name}"),
            Caller::User { user, .. } => format!("user:{user}"),
        }
    }
}

/// Whether the request's `Host` names this machine by a loopback name or address
/// (`localhost`, `127.0.0.1`, `[::1]`, any port).
fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else { return false };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, port)| if port.bytes().all(|b| b.is_ascii_digit()) { name } else { host }),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use axum::http::HeaderValue;

    const ALICE_TOKEN: &str = "alice-secret-token";

    fn sha(s: &str) -> String {
        hex::encode(Sha256::digest(s.as_bytes()))
    }

    fn config() -> AuthConfig {
        toml::from_str(&format!(
            r#"
            trusted_proxies = ["127.0.0.1", "10.1.0.0/16"]
            admin_groups = ["platform"]
            admin_users = ["root-user"]
            cookie_secret = "0123456789abcdef0123456789abcdef-long-enough"
            [[tokens]]
            name = "jhub"
            sha256 = "{}"
            role = "hub"
            [[tokens]]
            name = "ops"
            sha256 = "{}"
            role = "admin"
            [[tokens]]
            name = "alice-cli"
            sha256 = "{}"
            role = {{ user = "alice" }}
            "#,
            sha("hub-token"),
            sha("admin-token").to_uppercase(),
            sha(ALICE_TOKEN)
        ))
        .unwrap()
    }

    fn auth() -> Auth {
        Auth::new(&config()).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn config_defaults_and_roles_parse() {
        let c = config();
        assert_eq!(c.user_header, "X-Forwarded-User");
        assert_eq!(c.groups_header, "X-Forwarded-Groups");
        assert!(c.secure_cookies);
        assert_eq!(c.tokens[0].role, Role::Hub);
        assert_eq!(c.tokens[1].role, Role::Admin);
        assert_eq!(c.tokens[2].role, Role::User("alice".into()));
        assert_eq!(c.trusted_proxies.len(), 2);
        let empty: AuthConfig = toml::from_str("").unwrap();
        assert!(empty.tokens.is_empty());
        assert!(toml::from_str::<AuthConfig>("trusted_proxies = [\"nope\"]").is_err());
        assert!(toml::from_str::<AuthConfig>("unknown_field = 1").is_err());
    }

    #[test]
    fn debug_and_serialized_output_hide_the_cookie_secret() {
        let shown = format!("{:?}", config());
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("<redacted>"));
        let serialized = toml::to_string(&config()).unwrap();
        assert!(!serialized.contains("0123456789abcdef"), "{serialized}");
        // What is serialized reads back (the secret aside).
        let back: AuthConfig = toml::from_str(&serialized).unwrap();
        assert_eq!(back.tokens, config().tokens);
        assert_eq!(back.trusted_proxies, config().trusted_proxies);
    }

    #[test]
    fn bad_config_is_rejected() {
        let mut c = config();
        c.tokens[0].sha256 = "abc".into();
        assert!(matches!(Auth::new(&c), Err(AuthConfigError::BadHash { .. })));
        let mut c = config();
        c.tokens[1].name = "jhub".into();
        assert!(matches!(Auth::new(&c), Err(AuthConfigError::DuplicateName(_))));
        let mut c = config();
        c.cookie_secret = Some(Secret("short".into()));
        assert!(matches!(Auth::new(&c), Err(AuthConfigError::ShortSecret)));
        let mut c = config();
        c.user_header = "bad header".into();
        assert!(matches!(Auth::new(&c), Err(AuthConfigError::BadHeader(_))));
    }

    #[test]
    fn tokens_authenticate_with_their_role() {
        let a = auth();
        let hub = a.authenticate(&headers(&[("authorization", "Bearer hub-token")]), None).unwrap();
        assert_eq!(hub, Caller::Token { name: "jhub".into(), role: Role::Hub });
        // JupyterHub's "token" scheme and an uppercase configured hash both work.
        let admin = a.authenticate(&headers(&[("authorization", "token admin-token")]), None).unwrap();
        assert!(admin.is_admin());
        let alice = a.authenticate(&headers(&[("authorization", &format!("bearer {ALICE_TOKEN}"))]), None).unwrap();
        assert_eq!(alice.user(), Some("alice"));
        assert_eq!(a.authenticate(&headers(&[("authorization", "Bearer wrong")]), None), Err(AuthError::BadToken));
    }

    #[test]
    fn a_bad_token_never_falls_back_to_proxy_headers() {
        let h = headers(&[("authorization", "Bearer wrong"), ("x-forwarded-user", "alice")]);
        assert_eq!(auth().authenticate(&h, ip("127.0.0.1")), Err(AuthError::BadToken));
    }

    #[test]
    fn proxy_headers_only_from_trusted_peers() {
        let a = auth();
        let h = headers(&[("x-forwarded-user", "alice"), ("x-forwarded-groups", "data, ml, gpu")]);
        let alice = a.authenticate(&h, ip("10.1.2.3")).unwrap();
        assert_eq!(alice, Caller::User { user: "alice".into(), groups: vec!["data".into(), "ml".into(), "gpu".into()], admin: false });
        assert_eq!(a.authenticate(&h, ip("10.2.0.1")), Err(AuthError::Missing));
        assert_eq!(a.authenticate(&h, None), Err(AuthError::Missing));
        // An IPv4 peer seen on a dual-stack socket is still recognised.
        assert!(a.authenticate(&h, ip("::ffff:127.0.0.1")).is_ok());
        assert_eq!(a.authenticate(&HeaderMap::new(), ip("127.0.0.1")), Err(AuthError::Missing));
    }

    #[test]
    fn names_that_look_like_other_names_or_paths_are_refused() {
        for bad in ["\u{feff}alice", "ali\u{200b}ce", "\u{202e}ecila", "a\u{2066}b", "soft\u{ad}hyphen", ".", "..", "a/b", "a\\b", "a\u{0}b", "a\nb"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        for good in ["alice", "first.last", "a@b.org", "jürgen", "Alice", "1alice", "日本", "a..b", "user name"] {
            assert_eq!(validate_name(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn the_local_user_needs_a_loopback_host_too() {
        let mut c = config();
        c.local_user = Some("dev".into());
        let a = Auth::new(&c).unwrap();
        for host in ["localhost:8080", "127.0.0.1:8080", "[::1]:8080", "LOCALHOST", "127.0.0.2"] {
            assert!(matches!(a.authenticate(&headers(&[("host", host)]), ip("127.0.0.1")), Ok(Caller::User { .. })), "{host}");
        }
        for host in ["rebind.evil:8080", "localhost.evil.example", "127.0.0.1.nip.io:8080", "10.0.0.1"] {
            assert_eq!(a.authenticate(&headers(&[("host", host)]), ip("127.0.0.1")), Err(AuthError::Missing), "{host}");
        }
        assert_eq!(a.authenticate(&HeaderMap::new(), ip("127.0.0.1")), Err(AuthError::Missing), "no Host at all");
    }

    /// A client that adds its own identity header next to the proxy's (or a proxy that passes
    /// the client's through) gets neither believed: not the first, not merged groups.
    #[test]
    fn identity_headers_sent_twice_are_refused() {
        let a = auth();
        let twice_user = headers(&[("x-forwarded-user", "root"), ("x-forwarded-user", "alice")]);
        assert_eq!(a.authenticate(&twice_user, ip("127.0.0.1")), Err(AuthError::BadIdentity));
        let twice_groups = headers(&[("x-forwarded-user", "alice"), ("x-forwarded-groups", "data"), ("x-forwarded-groups", "platform")]);
        assert_eq!(a.authenticate(&twice_groups, ip("127.0.0.1")), Err(AuthError::BadIdentity), "no admin by a second groups header");
    }

    #[test]
    fn proxy_identity_is_validated() {
        let a = auth();
        for bad in ["", "a/b", &"x".repeat(256)] {
            let h = headers(&[("x-forwarded-user", bad)]);
            assert_eq!(a.authenticate(&h, ip("127.0.0.1")), Err(AuthError::BadIdentity), "{bad:?}");
        }
    }

    #[test]
    fn admins_by_group_or_name() {
        let a = auth();
        let by_group = a.authenticate(&headers(&[("x-forwarded-user", "bob"), ("x-forwarded-groups", "platform")]), ip("127.0.0.1")).unwrap();
        assert!(by_group.is_admin());
        let by_name = a.authenticate(&headers(&[("x-forwarded-user", "root-user")]), ip("127.0.0.1")).unwrap();
        assert!(by_name.is_admin());
    }

    #[test]
    fn who_may_act_for_whom() {
        let hub = Caller::Token { name: "h".into(), role: Role::Hub };
        let admin = Caller::Token { name: "a".into(), role: Role::Admin };
        let alice_token = Caller::Token { name: "t".into(), role: Role::User("alice".into()) };
        let alice = Caller::User { user: "alice".into(), groups: vec!["gpu".into()], admin: false };
        let boss = Caller::User { user: "boss".into(), groups: vec![], admin: true };
        for c in [&hub, &admin, &alice_token, &alice, &boss] {
            assert!(c.can_act_for("alice"), "{c:?}");
        }
        assert!(!alice.can_act_for("bob"));
        assert!(!alice_token.can_act_for("bob"));
        assert!(hub.can_act_for("bob") && !hub.is_admin());
        let gpu_only = vec!["gpu".to_string()];
        assert!(alice.can_use_profile(&gpu_only));
        assert!(!alice_token.can_use_profile(&gpu_only));
        assert!(hub.can_use_profile(&gpu_only) && boss.can_use_profile(&gpu_only));
        assert!(Caller::User { user: "bob".into(), groups: vec!["cpu".into()], admin: false }.can_use_profile(&[]));
        assert!(!Caller::User { user: "bob".into(), groups: vec!["cpu".into()], admin: false }.can_use_profile(&gpu_only));
        assert_eq!(alice.label(), "user:alice");
        assert_eq!(hub.label(), "token:h");
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("").is_ok());
        assert!(validate_name("alice@example.org").is_ok());
        assert!(validate_name("ünïcode name").is_ok());
        assert!(validate_name("a\nb").is_err());
        assert!(validate_name("a\u{7f}").is_err());
        assert!(validate_name("../x").is_err());
        assert!(validate_name(&"é".repeat(128)).is_err());
    }

    #[test]
    fn csrf_tokens_bind_session_and_user() {
        let a = auth();
        let alice = Caller::User { user: "alice".into(), groups: vec![], admin: false };
        let bob = Caller::User { user: "bob".into(), groups: vec![], admin: false };
        let jar = SignedCookieJar::new(a.cookie_key().clone());
        let (jar, token) = a.csrf_token(jar, &alice);
        let cookie = jar.get(SESSION_COOKIE).unwrap();
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(cookie.same_site(), Some(SameSite::Strict));
        assert!(a.verify_csrf(&jar, &alice, &token).is_ok());
        // The same session keeps the same token.
        let (jar, again) = a.csrf_token(jar, &alice);
        assert_eq!(token, again);
        assert_eq!(a.verify_csrf(&jar, &bob, &token), Err(AuthError::Csrf));
        assert_eq!(a.verify_csrf(&jar, &alice, "forged"), Err(AuthError::Csrf));
        let fresh = SignedCookieJar::new(a.cookie_key().clone());
        assert_eq!(a.verify_csrf(&fresh, &alice, &token), Err(AuthError::Csrf));
    }

    #[test]
    fn session_cookies_are_signed() {
        use axum::response::IntoResponse;
        let a = auth();
        let alice = Caller::User { user: "alice".into(), groups: vec![], admin: false };
        let (jar, _) = a.csrf_token(SignedCookieJar::new(a.cookie_key().clone()), &alice);
        let response = jar.into_response();
        let set_cookie = response.headers().get(header::SET_COOKIE).unwrap().to_str().unwrap().to_string();
        assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict") && set_cookie.contains("Secure"));
        // The browser sends back the signed value: it verifies; a tampered one is dropped.
        let pair = set_cookie.split(';').next().unwrap().to_string();
        let back = SignedCookieJar::from_headers(&headers(&[("cookie", &pair)]), a.cookie_key().clone());
        assert!(back.get(SESSION_COOKIE).is_some());
        let tampered = format!("{pair}x");
        let back = SignedCookieJar::from_headers(&headers(&[("cookie", &tampered)]), a.cookie_key().clone());
        assert!(back.get(SESSION_COOKIE).is_none());
        let other_key = SignedCookieJar::from_headers(&headers(&[("cookie", &pair)]), Key::generate());
        assert!(other_key.get(SESSION_COOKIE).is_none());
    }
}
