//! Noticing that a file changed: its modification time, length and inode, compared between
//! checks. Works through symlink swaps (Kubernetes ConfigMaps and Secrets) and atomic renames.

use std::path::Path;
use std::time::SystemTime;

/// What identifies one version of a file on disk (`None` from [`Stamp::of`]: it is missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    pub fn of(path: &Path) -> Option<Stamp> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        })
    }
}
