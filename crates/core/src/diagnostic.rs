//! One shape for every problem found in an operator's file (profiles, settings): where it is
//! (file or environment variable, line, key path) and what is wrong.

use std::fmt;

/// A problem located by file, line and key path; displayed as `file:line: key: message`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// Where the value came from: a file as given, or `environment FLEETSPAWN_X`.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Key path such as `profiles[gpu].options.image.regex` or `listen`; empty for the
    /// whole file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one reading, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_file_line_key_message_one_per_line() {
        let d = |line, path: &str| Diagnostic { file: "p.toml".into(), line, path: path.into(), message: "bad".into() };
        assert_eq!(d(Some(3), "listen").to_string(), "p.toml:3: listen: bad");
        assert_eq!(d(None, "").to_string(), "p.toml: bad");
        assert_eq!(Diagnostics(vec![d(Some(1), "a"), d(Some(2), "b")]).to_string(), "p.toml:1: a: bad\np.toml:2: b: bad");
    }
}
