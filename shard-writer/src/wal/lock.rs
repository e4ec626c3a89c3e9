//! Who may hold a shard file, and where: one writer process at a time (an exclusive lock on a
//! file beside it), on a local filesystem only.
//!
//! Design constraints:
//! - The lock is taken before SQLite opens the file and held until the commit thread has closed
//!   its connection, so two processes never write one shard file. The lock file itself stays:
//!   removing it would race a writer taking it.
//! - A path on a network filesystem (NFS, SMB, …) is refused: SQLite's write-ahead log relies on
//!   shared memory between the processes of one host.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::OpenError;

/// Refuses paths on network filesystems, where SQLite's WAL (shared memory) is unsafe.
pub(crate) fn check_filesystem(path: &Path) -> Result<(), OpenError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stat = rustix::fs::statfs(dir).map_err(|errno| OpenError::Io {
        path: dir.to_path_buf(),
        source: errno.into(),
    })?;
    // `f_type` is signed on some targets; compare the bit pattern as u32.
    #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
    let magic = stat.f_type as u32;
    match network_filesystem(magic) {
        Some(filesystem) => Err(OpenError::NetworkFilesystem {
            path: path.to_path_buf(),
            filesystem,
        }),
        None => Ok(()),
    }
}

/// The name of the network filesystem with superblock magic `magic`, if it is one.
pub(crate) fn network_filesystem(magic: u32) -> Option<&'static str> {
    match magic {
        0x6969 => Some("nfs"),
        0x517b => Some("smb"),
        0xfe53_4d42 => Some("smb2"),
        0xff53_4d42 => Some("cifs"),
        0x5346_414f => Some("afs"),
        0x0102_1997 => Some("9p"),
        0x00c3_6400 => Some("ceph"),
        0x7375_7245 => Some("coda"),
        0x0bd0_0bd0 => Some("lustre"),
        0x4741_5346 => Some("gpfs"),
        _ => None,
    }
}

/// Takes the exclusive lock that keeps a second writer off the file. The lock is held until
/// the returned file is dropped; the lock file itself stays (removing it would race).
pub(crate) fn lock(path: &Path) -> Result<(File, PathBuf), OpenError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| OpenError::Io {
            path: lock_path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok((file, lock_path)),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::AlreadyOpen {
            path: path.to_path_buf(),
            lock: lock_path,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(OpenError::Io {
            path: lock_path,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_filesystems_are_recognised() {
        assert_eq!(network_filesystem(0x6969), Some("nfs"));
        assert_eq!(network_filesystem(0xff53_4d42), Some("cifs"));
        assert_eq!(network_filesystem(0xfe53_4d42), Some("smb2"));
        // ext4, xfs, btrfs, tmpfs, overlayfs: local.
        for local in [0xef53, 0x5846_5342, 0x9123_683e, 0x0102_1994, 0x794c_7630] {
            assert_eq!(network_filesystem(local), None);
        }
    }

    #[test]
    fn a_local_directory_passes_the_filesystem_check() {
        let dir = std::env::temp_dir().join("shard.sqlite");
        assert!(check_filesystem(&dir).is_ok());
    }
}
