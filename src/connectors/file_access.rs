//! Which files a client may make the server read or write: the file connector's
//! sources and sinks, and RUN SCRIPT. Without this, any client could read any
//! file the server process can (`/etc/shadow`, `/proc/self/environ`) and append
//! to any file it can write (a shell script).
//!
//! A path is allowed when, with every symbolic link resolved, it lies inside
//! one of the allowed roots (`--allowed-path`; by default the data directory).
//! The kernel's pseudo-file systems (`/proc`, `/sys`, `/dev`) are refused even
//! under an allowed root such as `/`: reading them never ends or leaks the
//! process's environment. Each file a directory or glob lists is checked too,
//! so a link inside an allowed directory cannot point out of it.

use std::path::{Component, Path, PathBuf};

use super::{ConnectorError, Result};

/// Refused wherever they are mounted under an allowed root.
const PSEUDO_FILE_SYSTEMS: [&str; 3] = ["/proc", "/sys", "/dev"];

#[derive(Debug, Clone)]
pub struct FileAccess {
    /// Canonical (absolute, links resolved) allowed directories.
    roots: Vec<PathBuf>,
}

impl FileAccess {
    /// Confines file access to `roots`, which must exist.
    pub fn new(roots: &[PathBuf]) -> std::io::Result<FileAccess> {
        let roots = roots
            .iter()
            .map(|r| {
                std::fs::canonicalize(r).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("allowed path {}: {e}", r.display()))
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(FileAccess { roots })
    }

    /// The allowed roots, for messages and `SHOW` output.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// The canonical path of an existing file or directory that may be read.
    pub fn readable(&self, path: &str) -> Result<PathBuf> {
        let canonical = std::fs::canonicalize(path).map_err(|e| ConnectorError::Io {
            path: path.to_string(),
            source: e,
        })?;
        self.check(path, &canonical)?;
        Ok(canonical)
    }

    /// The path a sink may append to: its directory must exist and be allowed,
    /// and the file, when it exists, must be a regular file and not a link (which
    /// could lead anywhere once opened).
    pub fn writable(&self, path: &str) -> Result<PathBuf> {
        let p = Path::new(path);
        let name = match p.components().next_back() {
            Some(Component::Normal(name)) => name,
            _ => {
                return Err(ConnectorError::NotAllowed {
                    path: path.to_string(),
                    reason: "a sink needs the path of a file".into(),
                })
            }
        };
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = std::fs::canonicalize(dir).map_err(|e| ConnectorError::Io {
            path: path.to_string(),
            source: e,
        })?;
        let target = dir.join(name);
        self.check(path, &target)?;
        match std::fs::symlink_metadata(&target) {
            Ok(meta) if meta.file_type().is_symlink() => Err(ConnectorError::NotAllowed {
                path: path.to_string(),
                reason: "it is a symbolic link".into(),
            }),
            Ok(meta) if !meta.is_file() => Err(ConnectorError::NotAllowed {
                path: path.to_string(),
                reason: "it exists and is not a regular file".into(),
            }),
            _ => Ok(target),
        }
    }

    fn check(&self, given: &str, canonical: &Path) -> Result<()> {
        if let Some(fs) = PSEUDO_FILE_SYSTEMS
            .iter()
            .find(|fs| canonical.starts_with(fs))
        {
            return Err(ConnectorError::NotAllowed {
                path: given.to_string(),
                reason: format!("files under {fs} are never readable or writable by clients"),
            });
        }
        if self.roots.iter().any(|root| canonical.starts_with(root)) {
            return Ok(());
        }
        let resolved = if Path::new(given) == canonical {
            String::new()
        } else {
            format!(" (resolved to {})", canonical.display())
        };
        Err(ConnectorError::NotAllowed {
            path: given.to_string(),
            reason: format!(
                "it is outside the allowed paths{resolved}: {}",
                self.roots_text()
            ),
        })
    }

    fn roots_text(&self) -> String {
        self.roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, tempfile::TempDir, FileAccess) {
        let allowed = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let access = FileAccess::new(&[allowed.path().to_path_buf()]).unwrap();
        (allowed, outside, access)
    }

    fn refused(r: Result<PathBuf>) -> String {
        match r {
            Err(ConnectorError::NotAllowed { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn paths_inside_the_roots_are_allowed_and_everything_else_refused() {
        let (allowed, outside, access) = setup();
        let inside = allowed.path().join("in.jsonl");
        std::fs::write(&inside, "{}\n").unwrap();
        let out = outside.path().join("out.jsonl");
        std::fs::write(&out, "{}\n").unwrap();

        assert!(access.readable(inside.to_str().unwrap()).is_ok());
        assert!(access.readable(allowed.path().to_str().unwrap()).is_ok());
        assert!(refused(access.readable(out.to_str().unwrap())).contains("outside"));
        // `..` does not climb out: the check is on the resolved path.
        // Both temporary directories share a parent.
        let climbing = format!(
            "{}/../{}/out.jsonl",
            allowed.path().display(),
            outside.path().file_name().unwrap().to_string_lossy()
        );
        assert!(refused(access.readable(&climbing)).contains("outside"));

        assert!(access
            .writable(allowed.path().join("new.jsonl").to_str().unwrap())
            .is_ok());
        assert!(refused(access.writable(out.to_str().unwrap())).contains("outside"));
    }

    #[test]
    fn links_out_of_a_root_are_refused() {
        let (allowed, outside, access) = setup();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, "x").unwrap();
        let link = allowed.path().join("link");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let reason = refused(access.readable(link.to_str().unwrap()));
        assert!(reason.contains("resolved to"), "{reason}");
        // A link is never a sink, even to a file inside the root.
        let inner = allowed.path().join("inner");
        std::fs::write(&inner, "").unwrap();
        let inner_link = allowed.path().join("inner_link");
        std::os::unix::fs::symlink(&inner, &inner_link).unwrap();
        assert!(refused(access.writable(inner_link.to_str().unwrap())).contains("link"));
    }

    #[test]
    fn pseudo_file_systems_are_refused_even_under_an_allowed_root() {
        let access = FileAccess::new(&[PathBuf::from("/")]).unwrap();
        assert!(refused(access.readable("/proc/self/environ")).contains("/proc"));
        assert!(refused(access.writable("/dev/null")).contains("/dev"));
        assert!(access.readable("/etc").is_ok());
        assert!(refused(access.writable("/tmp")).contains("not a regular file"));
    }
}
