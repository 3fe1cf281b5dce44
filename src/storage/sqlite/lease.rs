//! The writer lease on SQLite: an exclusive OS lock on a file beside the
//! database (see the module docs of [`super`]).

use std::fs::{File, OpenOptions};

use async_trait::async_trait;

use super::SqliteStorage;
use crate::storage::{Result, StorageError, WriterLease, WriterLock};

/// An exclusive lock on the log's lock file, released when dropped.
struct FileLease {
    _file: File,
}

impl WriterLease for FileLease {
    fn is_held(&self) -> bool {
        true
    }
}

#[async_trait]
impl WriterLock for SqliteStorage {
    async fn try_acquire_writer(&self, log: &str) -> Result<Option<Box<dyn WriterLease>>> {
        let path = self.lock_path(log);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::Unavailable(format!("{}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(FileLease { _file: file }))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(StorageError::Unavailable(format!(
                "{}: {e}",
                path.display()
            ))),
        }
    }
}
