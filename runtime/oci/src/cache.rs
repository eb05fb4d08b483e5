//! A content-addressed store on disk: every manifest and module blob under
//! `<dir>/blobs/sha256/<hex>`, shared by all plugins with the same digest. Writes go to a temporary
//! file in the same folder, are fsynced and renamed into place (so concurrent writers of the same
//! digest leave one complete file); reads verify the sha256 and drop a file that fails.

use crate::error::OciError;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut text = String::with_capacity(71);
    text.push_str("sha256:");
    for byte in hash {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// The on-disk cache of manifests and module blobs.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob with `digest` lives (whether or not it is there).
    pub fn path_of(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join("blobs/sha256").join(hex.to_ascii_lowercase())
    }

    /// The bytes with `digest`, verified; `None` when absent. A file whose bytes do not have the
    /// digest is removed (and logged) and reported as absent, so it is fetched again.
    pub fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, OciError> {
        let path = self.path_of(digest);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(OciError::Cache {
                    path,
                    message: format!("cannot read it: {e}"),
                });
            }
        };
        let actual = sha256_digest(&bytes);
        if !actual.eq_ignore_ascii_case(digest) {
            tracing::warn!(file = %path.display(), expected = digest, %actual, "cached blob does not match its digest; removing it");
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// Stores `bytes` under `digest` (which they must have) and returns the file. Safe with other
    /// processes writing the same digest at the same time.
    pub fn put(&self, digest: &str, bytes: &[u8]) -> Result<PathBuf, OciError> {
        let path = self.path_of(digest);
        let actual = sha256_digest(bytes);
        if !actual.eq_ignore_ascii_case(digest) {
            return Err(OciError::Cache {
                path,
                message: format!("refusing to store bytes with digest {actual} as {digest}"),
            });
        }
        let fail = |path: &Path, what: &str, e: std::io::Error| OciError::Cache {
            path: path.to_path_buf(),
            message: format!("cannot {what}: {e}"),
        };
        let folder = path.parent().unwrap_or(&self.dir).to_path_buf();
        std::fs::create_dir_all(&folder).map_err(|e| fail(&folder, "create the folder", e))?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = folder.join(format!(
            ".tmp-{}-{}-{}",
            actual.trim_start_matches("sha256:"),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail(&tmp, "write", e));
        }
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail(&path, "rename the new file into place", e));
        }
        // Make the rename itself durable.
        if let Ok(dir) = std::fs::File::open(&folder) {
            let _ = dir.sync_all();
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_verifies_and_drops_corrupt_files() {
        let dir = std::env::temp_dir().join(format!("eventplug-oci-cache-{}", std::process::id()));
        let cache = Cache::new(&dir);
        let digest = sha256_digest(b"module");
        assert!(cache.get(&digest).expect("read").is_none());
        let path = cache.put(&digest, b"module").expect("put");
        assert_eq!(
            cache.get(&digest).expect("read").as_deref(),
            Some(&b"module"[..])
        );
        assert!(cache.put(&sha256_digest(b"other"), b"module").is_err());
        std::fs::write(&path, b"tampered").expect("write");
        assert!(cache.get(&digest).expect("read").is_none());
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
