//! Reading the operator's files: the templates directory and the profiles file. The core
//! takes their contents as strings; this is the only place that reads them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fleetspawn_core::bundle::{self, BundleError, Renderer};
use fleetspawn_core::diagnostic::{Diagnostic, Diagnostics};
use fleetspawn_core::profiles::ProfileSet;

/// The templates cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TemplatesError {
    /// A file or the directory cannot be read.
    #[error("cannot read template {path}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A `*.j2` file there overrides no built-in template (a misspelt name).
    #[error("{}: not a template fleetspawn knows (expected one of: {known})", .path.display())]
    Unknown { path: PathBuf, known: String },
    /// A template does not compile.
    #[error(transparent)]
    Template(#[from] BundleError),
}

/// The renderer with the built-in templates, each replaced by the file of the same name in
/// `templates_dir` when there is one. Any other `*.j2` file there is an error.
pub fn renderer(templates_dir: Option<&Path>) -> Result<Renderer, TemplatesError> {
    let Some(dir) = templates_dir else { return Ok(Renderer::builtin()?) };
    let mut overrides = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable(dir))?.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".j2") {
            continue;
        }
        if !bundle::is_template_name(&name) {
            return Err(TemplatesError::Unknown { path, known: bundle::template_names().join(", ") });
        }
        if path.is_file() {
            let source = std::fs::read_to_string(&path).map_err(unreadable(&path))?;
            overrides.insert(name, source);
        }
    }
    Ok(Renderer::with_overrides(&overrides)?)
}

fn unreadable(path: &Path) -> impl FnOnce(std::io::Error) -> TemplatesError + '_ {
    move |source| TemplatesError::Unreadable { path: path.to_owned(), source }
}

/// Reads and checks the profiles file at `path`, rendering every profile once with
/// `renderer` (so a profile the operator's templates cannot render is reported at its line).
pub fn profiles(path: &Path, renderer: &Renderer) -> Result<ProfileSet, Diagnostics> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|err| Diagnostics(vec![Diagnostic { file: file.clone(), line: None, path: String::new(), message: format!("cannot read: {err}") }]))?;
    renderer.parse_profiles(&file, &text)
}

/// [`profiles`] checked against the built-in templates only.
pub fn profiles_builtin(path: &Path) -> Result<ProfileSet, Diagnostics> {
    let renderer = Renderer::builtin()
        .map_err(|e| Diagnostics(vec![Diagnostic { file: path.display().to_string(), line: None, path: String::new(), message: e.to_string() }]))?;
    profiles(path, &renderer)
}
