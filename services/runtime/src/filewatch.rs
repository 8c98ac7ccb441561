//! Noticing that a file changed without reading it: its stamp (mtime, size, inode).
//!
//! Exists because two things are reloaded from files mounted from Kubernetes objects while the
//! process runs, the gateway's TLS certificate (a Secret) and the fault flags (a ConfigMap), and
//! the kubelet replaces such files through a symlink swap: the inode changes even when the size
//! and the mtime do not, so all three are compared. One copy of the rule for both.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::SystemTime;

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    /// The stamp of the file at `path` (following symlinks); None when it cannot be read (or is
    /// not there).
    pub fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            modified: m.modified().ok(),
            len: m.len(),
            inode: m.ino(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_file_swapped_by_rename_has_a_new_stamp_even_with_the_same_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert_eq!(FileStamp::of(&path), None);
        std::fs::write(&path, "aaaa").unwrap();
        let first = FileStamp::of(&path).unwrap();
        assert_eq!(FileStamp::of(&path), Some(first));
        let tmp = dir.path().join("f.tmp");
        std::fs::write(&tmp, "bbbb").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_ne!(FileStamp::of(&path), Some(first));
    }
}
