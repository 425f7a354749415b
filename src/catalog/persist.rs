//! Saving the catalog: one JSON file, replaced atomically (write, fsync, rename).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::Catalog;
use crate::error::{Result, SluiceError};

pub struct CatalogFile {
    path: PathBuf,
}

impl CatalogFile {
    pub fn new(data_dir: &Path) -> Self {
        CatalogFile {
            path: data_dir.join("catalog.json"),
        }
    }

    /// Whether the catalog can be saved: its directory is there and writable
    /// (a health check; the file itself appears with the first DDL).
    pub fn writable(&self) -> bool {
        self.path
            .parent()
            .and_then(|d| std::fs::metadata(d).ok())
            .is_some_and(|m| m.is_dir() && !m.permissions().readonly())
    }

    pub fn load(&self) -> Result<Catalog> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Catalog::default()),
            Err(e) => {
                return Err(SluiceError::io(
                    format!("reading {}", self.path.display()),
                    e,
                ))
            }
        };
        let mut catalog: Catalog = serde_json::from_str(&text).map_err(|e| {
            SluiceError::Catalog(format!(
                "{} is not a valid catalog: {e}",
                self.path.display()
            ))
        })?;
        for r in catalog.relations.values_mut() {
            r.hydrate()?;
        }
        Ok(catalog)
    }

    pub fn save(&self, catalog: &Catalog) -> Result<()> {
        let json = serde_json::to_vec_pretty(catalog)
            .map_err(|e| SluiceError::Internal(format!("serializing the catalog: {e}")))?;
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                // Make the rename itself durable.
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| SluiceError::io(format!("writing {}", self.path.display()), e))
    }
}
