//! Durations written as whole seconds (`90`) or with units (`"90s"`, `"5m"`,
//! `"1h30m"`, `"500ms"`); serialized as whole seconds. Used with
//! `#[serde(with = "fleetspawn_core::duration")]` by profiles and the daemon's settings.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Parses `"1h30m"`, `"90s"`, `"500ms"` or `"90"` (seconds).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let unit_len = rest[digits..].find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len() - digits);
        let (number, unit) = (&rest[..digits], &rest[digits..digits + unit_len]);
        let n: u64 = number.parse().map_err(|_| format!("invalid duration {text:?}: expected e.g. 90, \"90s\", \"5m\", \"1h30m\""))?;
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(format!("invalid duration unit {unit:?} in {text:?}: use ms, s, m or h")),
        };
        total += part;
        rest = &rest[digits + unit_len..];
    }
    if text.is_empty() {
        return Err("empty duration".to_owned());
    }
    Ok(total)
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "a duration: whole seconds or a string such as \"90s\", \"5m\", \"1h30m\"")]
enum Raw {
    Secs(u64),
    Text(String),
}

/// Deserializes a duration (see [`parse`]).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match Raw::deserialize(d)? {
        Raw::Secs(secs) => Ok(Duration::from_secs(secs)),
        Raw::Text(text) => parse(&text).map_err(serde::de::Error::custom),
    }
}

/// Serializes a duration as whole seconds.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// The same for optional durations.
pub mod option {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    /// Deserializes an optional duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::deserialize(d).map(Some)
    }

    /// Serializes an optional duration as whole seconds.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse;

    #[test]
    fn durations() {
        assert_eq!(parse("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse("5 parsecs").is_err());
        assert!(parse("").is_err());
        assert!(parse("m").is_err());
    }
}
