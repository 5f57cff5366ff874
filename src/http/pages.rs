//! The page templates of the web form, compiled once, with the helpers they call.

use minijinja::Environment;
use serde::Serialize;

/// The compiled page templates.
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Compiles the embedded templates.
    pub fn new() -> Result<Templates, minijinja::Error> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.add_function("progress_href", |server: &str| progress_href(server));
        env.add_filter("when", |t: Option<String>| t.as_deref().map(short_time).unwrap_or_default());
        for (name, source) in [
            ("base.html", include_str!("web/base.html")),
            ("home.html", include_str!("web/home.html")),
            ("progress.html", include_str!("web/progress.html")),
            ("admin.html", include_str!("web/admin.html")),
            ("error.html", include_str!("web/error.html")),
        ] {
            env.add_template(name, source)?;
        }
        Ok(Templates { env })
    }

    /// Renders template `name` with `page` as its context.
    pub fn render<T: Serialize>(&self, name: &str, page: &T) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(minijinja::value::Serde(page))
    }
}

/// Percent-encodes `s` for a URL path segment or query value (everything but unreserved bytes).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The progress page of `server` (empty: the default server).
pub fn progress_href(server: &str) -> String {
    if server.is_empty() {
        "/progress".into()
    } else {
        format!("/progress?server={}", percent_encode(server))
    }
}

/// An RFC 3339 time as `2026-05-02 09:14 UTC` (other text is shown as it is).
pub fn short_time(t: &str) -> String {
    match (t.get(..10), t.get(10..11), t.get(11..16)) {
        (Some(date), Some("T"), Some(hm)) if t.ends_with('Z') => format!("{date} {hm} UTC"),
        _ => t.to_string(),
    }
}
