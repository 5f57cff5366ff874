//! Profile hot reload: watches profiles.toml and swaps the service's profiles when its content
//! changes; an invalid edit keeps the previous profiles and its error is shown.

use std::ffi::{OsStr, OsString};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};

use crate::metrics::Metrics;
use crate::service::Spawner;
use crate::sources;

/// Quiet time after the last file event before profiles.toml is reloaded.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(300);

/// The profiles' directory cannot be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path} for edits")]
pub struct WatchError {
    pub path: PathBuf,
    #[source]
    pub source: notify::Error,
}

/// The error of the last profiles reload, shared between the watcher and the pages that show it.
#[derive(Clone, Default, Debug)]
pub struct ReloadStatus(Arc<RwLock<Option<String>>>);

impl ReloadStatus {
    /// The last reload's error, or `None` when it succeeded (or none happened).
    pub fn last_error(&self) -> Option<String> {
        self.0.read().map(|e| e.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn set(&self, error: Option<String>) {
        match self.0.write() {
            Ok(mut e) => *e = error,
            Err(poisoned) => *poisoned.into_inner() = error,
        }
    }
}

/// Keeps profiles.toml watched while alive; dropping it stops the watching.
pub struct ProfilesWatcher {
    status: ReloadStatus,
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl ProfilesWatcher {
    /// The outcome of the last reload.
    pub fn status(&self) -> ReloadStatus {
        self.status.clone()
    }
}

impl Drop for ProfilesWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn content_hash(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

/// Watches `path` and swaps the spawner's profiles when its content changes.
///
/// The file's directory is watched rather than the file, so editors that replace the file and
/// Kubernetes ConfigMap updates (a symlink swap) are seen. Events are debounced
/// ([`RELOAD_DEBOUNCE`]) and a reload happens only when the content changed. An invalid edit
/// keeps the previous profiles: the error (with the file and line, as the profiles loader
/// reports it) is logged and kept in [`ProfilesWatcher::status`] for `/readyz` and the admin page.
pub fn watch_profiles(path: &Path, spawner: Spawner, metrics: Metrics) -> Result<ProfilesWatcher, WatchError> {
    let path = path.to_path_buf();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(OsString::from).unwrap_or_default();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        // Other files of the directory (a log written there, say) are not edits of the
        // profiles: counting them would keep the debounce from ever settling.
        Ok(e) if !matches!(e.kind, EventKind::Access(_)) && concerns_profiles(&e.paths, &name) => {
            // A full channel already holds a pending reload.
            let _ = tx.try_send(());
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "profiles watcher error"),
    })
    .map_err(|source| WatchError { path: dir.clone(), source })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(|source| WatchError { path: dir.clone(), source })?;

    tracing::info!(path = %path.display(), "watching profiles for edits");
    let status = ReloadStatus::default();
    let task_status = status.clone();
    let task = tokio::spawn(async move {
        let mut last = content_hash(&path);
        while rx.recv().await.is_some() {
            // Debounce: wait until the directory has been quiet for a moment.
            loop {
                match tokio::time::timeout(RELOAD_DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let now = content_hash(&path);
            if now == last {
                continue;
            }
            last = now;
            reload_profiles(&path, &spawner, &metrics, &task_status).await;
        }
    });
    Ok(ProfilesWatcher { status, _watcher: watcher, task })
}

/// Whether a file event in the profiles' directory may have changed the profiles: it names the
/// file itself, or a Kubernetes ConfigMap volume's `..data` link or `..<timestamp>` directory
/// (swapped on every ConfigMap update), or no path at all.
fn concerns_profiles(paths: &[PathBuf], name: &OsStr) -> bool {
    paths.is_empty() || paths.iter().filter_map(|p| p.file_name()).any(|n| n == name || n.to_str().is_some_and(|n| n.starts_with("..")))
}

async fn reload_profiles(path: &Path, spawner: &Spawner, metrics: &Metrics, status: &ReloadStatus) {
    let owned = path.to_path_buf();
    let checker = spawner.clone();
    let loaded = tokio::task::spawn_blocking(move || sources::profiles(&owned, checker.renderer()).map_err(|e| e.to_string())).await;
    match loaded {
        Ok(Ok(set)) => {
            let contexts: Vec<String> = spawner.cluster_health().into_iter().map(|h| h.context).collect();
            let known: Vec<&str> = contexts.iter().map(String::as_str).collect();
            for warning in set.check_contexts(&known) {
                tracing::warn!(%warning, "profiles");
            }
            let n = set.iter().count();
            spawner.set_profiles(Arc::new(set));
            status.set(None);
            metrics.profile_reload(true);
            tracing::info!(path = %path.display(), profiles = n, "profiles reloaded");
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "invalid profiles edit; keeping the previous profiles");
            status.set(Some(error));
            metrics.profile_reload(false);
        }
        Err(join) => tracing::error!(error = %join, "profiles reload task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_status_round_trips() {
        let s = ReloadStatus::default();
        assert_eq!(s.last_error(), None);
        s.clone().set(Some("profiles.toml:3: bad".into()));
        assert_eq!(s.last_error().as_deref(), Some("profiles.toml:3: bad"));
        s.set(None);
        assert_eq!(s.last_error(), None);
    }

    #[test]
    fn only_events_about_the_profiles_file_count() {
        let name = OsStr::new("profiles.toml");
        let p = |s: &str| vec![PathBuf::from(s)];
        assert!(concerns_profiles(&p("/etc/fleetspawn/profiles.toml"), name));
        assert!(concerns_profiles(&p("/etc/fleetspawn/..data"), name));
        assert!(concerns_profiles(&p("/etc/fleetspawn/..2026_01_01_00_00_00.123"), name));
        assert!(concerns_profiles(&[], name));
        assert!(!concerns_profiles(&p("/etc/fleetspawn/daemon.log"), name));
        assert!(!concerns_profiles(&p("/etc/fleetspawn/profiles.toml.swp"), name));
    }

    #[test]
    fn content_hash_tells_edits_apart() {
        let dir = std::env::temp_dir().join(format!("fleetspawn-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("profiles.toml");
        std::fs::write(&file, "a").unwrap();
        let first = content_hash(&file);
        std::fs::write(&file, "b").unwrap();
        assert_ne!(first, content_hash(&file));
        assert_eq!(content_hash(&dir.join("missing")), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
