//! Online backups of a shard file, and restoring one.
//!
//! Design constraints:
//! - [`backup`] runs beside a running writer: it reads one consistent snapshot through a
//!   read-only connection (`VACUUM INTO`, which copies the committed state as of one
//!   transaction and never takes the writer's lock), into a temporary file beside the target,
//!   fsyncs it, then links it into place. An existing target is never overwritten, and a
//!   half-written backup never carries the target's name.
//! - [`restore`] never overwrites a shard file (nor a leftover `-wal` or `-shm` beside one,
//!   whose pages would be replayed into the restored file). It copies the backup beside the
//!   target, marks it restored (`meta.restored`, see `wal`), fsyncs it and links it into place.
//! - A restored file's first open needs Redis: the writer takes a fresh epoch from
//!   `hunt:shard:{<id>}:epoch` (above every epoch of the shard, so no event id or award id
//!   repeats) and raises every tier counter to Redis's published mark (so no `tier_seq` is
//!   reused), then clears the mark. Without Redis the open is refused, never guessed.
//! - What a restore cannot bring back: events committed after the backup was taken are not in
//!   it. Those the relay had published live on in Redis (their stream entries and the applied
//!   scores); those it had not are lost.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::inspect::{InspectError, ShardState};
use crate::wal::reader::ShardFile;
use crate::wal::schema;

/// Why a backup or a restore did not happen. Nothing was left at the target.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The source is not a readable shard file.
    #[error(transparent)]
    Source(#[from] InspectError),
    /// The target exists: it is never overwritten.
    #[error("{path} exists; it is never overwritten")]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// SQLite failed.
    #[error("{path}: {source}")]
    Sqlite {
        /// The file involved.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The filesystem failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Writes a consistent snapshot of the shard file `db` to `to`, beside a running writer or
/// not. Returns the snapshot's state.
///
/// A tier reported unconfirmed (`confirmed: false` with committed events) holds provisional
/// `tier_seq`s: the writer had not reached Redis since it opened. Take the backup again once it
/// has: a restore of such a snapshot renumbers those events above Redis's marks, and may
/// publish again events the running writer already published under other numbers.
///
/// # Errors
/// [`BackupError`]: `db` not a shard file, `to` existing, SQLite or the filesystem failing.
pub fn backup(db: &Path, to: &Path) -> Result<ShardState, BackupError> {
    refuse_existing(to)?;
    // Checks that `db` is a shard file before anything is written.
    ShardState::read(db)?;
    let partial = partial_path(to);
    let result = (|| {
        ShardFile::open(db)
            .map_err(InspectError::from)?
            .copy_to(&partial)
            .map_err(|source| BackupError::Sqlite {
                path: db.to_path_buf(),
                source,
            })?;
        let state = ShardState::read(&partial)?;
        remove_log(&partial);
        publish(&partial, to)?;
        Ok(ShardState {
            path: to.to_path_buf(),
            ..state
        })
    })();
    let _ = std::fs::remove_file(&partial);
    result
}

/// Restores the backup `from` as the shard file `db`, which must not exist. The restored file
/// opens only with Redis (see the module's design constraints). Returns the restored state.
///
/// # Errors
/// [`BackupError`]: `from` not a shard file, `db` (or its `-wal`, `-shm`) existing, SQLite or
/// the filesystem failing.
pub fn restore(from: &Path, db: &Path) -> Result<ShardState, BackupError> {
    refuse_existing(db)?;
    for suffix in ["-wal", "-shm"] {
        refuse_existing(&with_suffix(db, suffix))?;
    }
    ShardState::read(from)?;
    let partial = partial_path(db);
    let result = (|| {
        std::fs::copy(from, &partial).map_err(|source| BackupError::Io {
            path: partial.clone(),
            source,
        })?;
        schema::mark_restored(&partial).map_err(|source| BackupError::Sqlite {
            path: partial.clone(),
            source,
        })?;
        let state = ShardState::read(&partial)?;
        remove_log(&partial);
        publish(&partial, db)?;
        Ok(ShardState {
            path: db.to_path_buf(),
            ..state
        })
    })();
    let _ = std::fs::remove_file(&partial);
    result
}

fn refuse_existing(path: &Path) -> Result<(), BackupError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Err(BackupError::Exists {
            path: path.to_path_buf(),
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(BackupError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Removes the (empty) log files a read-only look at `path` may have left beside it.
fn remove_log(path: &Path) {
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(with_suffix(path, suffix));
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A temporary name beside `target`, unique to this process.
fn partial_path(target: &Path) -> PathBuf {
    with_suffix(target, &format!(".partial-{}", std::process::id()))
}

/// fsyncs `partial`, links it to `target` (failing if `target` exists: never an overwrite) and
/// fsyncs the folder so the new name survives a power loss.
fn publish(partial: &Path, target: &Path) -> Result<(), BackupError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Io { path, source }
    };
    File::open(partial)
        .and_then(|file| file.sync_all())
        .map_err(io(partial))?;
    std::fs::hard_link(partial, target).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            BackupError::Exists {
                path: target.to_path_buf(),
            }
        } else {
            BackupError::Io {
                path: target.to_path_buf(),
                source,
            }
        }
    })?;
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io(dir))?;
    Ok(())
}
